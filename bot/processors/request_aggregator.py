"""Pipecat's user aggregator, for which a transcript of the whole request replaces its parts.

The STT decodes a request dictated with pauses whole once it has more than one part
(`bot.frames.RequestTranscriptionFrame`). Its text stands for every part transcribed before:
the parts still in this turn's aggregation, and those already in the context from earlier
turns whose replies nobody heard (with those replies' calls and results). They go, and the
request is one user message with every word, as the user said it.
"""

from typing import cast

from pipecat.processors.aggregators.llm_context import LLMContextMessage
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator

from bot.conversation import Messages, before_request
from bot.frames import RequestTranscriptionFrame


class RequestUserAggregator(LLMUserAggregator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._replaces_request = False

    async def _handle_transcription(self, frame):
        if isinstance(frame, RequestTranscriptionFrame) and frame.text.strip():
            self._aggregation = []
            self._replaces_request = True
        await super()._handle_transcription(frame)

    async def _push_aggregation(self, *, run_llm: bool = True) -> str:
        if self._replaces_request and self._aggregation:
            # conversation.py reads messages as the dicts they are (it skips LLMSpecificMessage);
            # what it returns is the context's own messages, fewer.
            earlier = before_request(cast(Messages, self._context.get_messages()))
            self._context.set_messages(cast(list[LLMContextMessage], earlier))
        self._replaces_request = False
        return await super()._push_aggregation(run_llm=run_llm)

    async def reset(self):
        self._replaces_request = False
        await super().reset()
