"""Hands the user's interim words to the embedded LLM while they are still speaking.

The LLM's first token waits for its prompt to be computed; on 2 cores a turn's new tokens
(~35: the user's words, the chat template, the reply's opening) take ~0.33 s. Most of them are
known before the user stops: prefilled from each interim transcript, they are already in the
session's KV slot when the final transcript ends the turn. It sits between the STT and the user
aggregator, which consumes interim transcripts.
"""

from typing import Protocol

from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, Frame, InterimTranscriptionFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import RequestInterimTranscriptionFrame


class PrefillsUserTurns(Protocol):
    def prefill_user_turn(
        self, context: LLMContext, words: str, *, whole_request: bool = False, answer_spoken: str | None = None
    ) -> None: ...


class SpeculativePrefill(FrameProcessor):
    def __init__(self, llm: PrefillsUserTurns, context: LLMContext, **kwargs):
        super().__init__(**kwargs)
        self._llm = llm
        self._context = context
        self._bot_speaking = False
        self._answer_to_prefill: str | None = None

    def answer_added(self) -> None:
        """The assistant's answer went into the context: compute it now, while nobody speaks,
        so the next turn's interim words find it computed."""
        self._llm.prefill_user_turn(self._context, "")

    def answer_being_spoken(self, sentence: str) -> None:
        """A tool's result is in the context and `sentence` presents it: compute both while
        the sentence plays (110-160 tokens, 2-3 s on 2 cores). Left to the end of the
        sentence, they were still being computed when the user's next request ended, and its
        reply waited for them. Not before the sentence's audio starts: beside Piper
        synthesizing it, the prefill delayed the answer's first audio."""
        self._answer_to_prefill = sentence
        if self._bot_speaking:
            self._prefill_answer()

    def _prefill_answer(self) -> None:
        if (sentence := self._answer_to_prefill) is not None:
            self._answer_to_prefill = None
            self._llm.prefill_user_turn(self._context, "", answer_spoken=sentence)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._prefill_answer()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            self._answer_to_prefill = None  # heard, or cut off: `answer_added` follows
        elif isinstance(frame, InterimTranscriptionFrame):
            # An interim holds the words of the current utterance so far (Moonshine decodes
            # the whole utterance each time), which is what the turn's user message will say;
            # or, for a request with pauses, every word of the request.
            self._llm.prefill_user_turn(
                self._context,
                frame.text,
                whole_request=isinstance(frame, RequestInterimTranscriptionFrame),
            )
        await self.push_frame(frame, direction)
