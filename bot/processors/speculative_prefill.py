"""Hands the user's interim words to the embedded LLM while they are still speaking.

The LLM's first token waits for its prompt to be computed; on 2 cores a turn's new tokens
(~35: the user's words, the chat template, the reply's opening) take ~0.33 s. Most of them are
known before the user stops: prefilled from each interim transcript, they are already in the
session's KV slot when the final transcript ends the turn. It sits between the STT and the user
aggregator, which consumes interim transcripts.
"""

from typing import Protocol

from pipecat.frames.frames import Frame, InterimTranscriptionFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import RequestInterimTranscriptionFrame


class PrefillsUserTurns(Protocol):
    def prefill_user_turn(self, context: LLMContext, words: str, *, whole_request: bool = False) -> None: ...


class SpeculativePrefill(FrameProcessor):
    def __init__(self, llm: PrefillsUserTurns, context: LLMContext, **kwargs):
        super().__init__(**kwargs)
        self._llm = llm
        self._context = context

    def answer_added(self) -> None:
        """The assistant's answer went into the context: compute it now, while nobody speaks
        (a tool's call, result and spoken sentence are ~100 tokens that no request computed,
        and left to the next turn's interim words they kept its reply waiting)."""
        self._llm.prefill_user_turn(self._context, "")

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InterimTranscriptionFrame):
            # An interim holds the words of the current utterance so far (Moonshine decodes
            # the whole utterance each time), which is what the turn's user message will say;
            # or, for a request with pauses, every word of the request.
            self._llm.prefill_user_turn(
                self._context,
                frame.text,
                whole_request=isinstance(frame, RequestInterimTranscriptionFrame),
            )
        await self.push_frame(frame, direction)
