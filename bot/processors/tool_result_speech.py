"""Speaks a tool's own sentence as the answer, so the LLM is not asked to word it again.

Every tool returns a `summary`: one spoken sentence that already says what its result is
("That text sounds negative, with a compound score of minus 0.46 ..."). On the embedded LLM a
second request to reword it costs more than a second (the result's ~80 prompt tokens, then the
whole sentence decoded before the TTS can start), so with `AGENT_TOOL_RESULT_SPEECH=tool` the
result goes into the context without running the LLM (`run_llm=False`) and the sentence is
spoken at once, as a `TTSSpeakFrame` appended to the context, so that memory and tool routing
see it as the assistant's answer. A result without a sentence is left to the LLM, which has
something to add there: a refusal carries one only when the user can do nothing but say the
request again (`SayAgain`).

Placed right after the LLM: the `FunctionCallResultFrame` it changes is the copy travelling
downstream to the assistant aggregator, which decides whether the LLM runs again, and the
sentence follows it, so the visualization held on that frame goes out just before its audio.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    Frame,
    FunctionCallResultFrame,
    FunctionCallResultProperties,
    LLMConfigureOutputFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


def spoken_sentence(frame: FunctionCallResultFrame) -> str | None:
    """The sentence a final result says itself; None when the LLM should answer. A refusal
    is the LLM's to word, unless the tool gave the sentence too (a list to say again)."""
    properties = frame.properties
    if frame.run_llm is not None or (
        properties is not None and (not properties.is_final or properties.run_llm is not None)
    ):
        return None  # an intermediate update, or the caller decided itself
    result: Any = frame.result
    if frame.error or not isinstance(result, dict):
        return None
    summary = result.get("summary")
    return summary.strip() if isinstance(summary, str) and summary.strip() else None


class ToolResultSpeech(FrameProcessor):
    def __init__(self, *, on_result_in_context: Callable[[str], None] | None = None, **kwargs):
        """`on_result_in_context` is called with the sentence once the result it presents is
        in the context (as the sentence starts playing)."""
        super().__init__(**kwargs)
        self._on_result_in_context = on_result_in_context
        self._skip_tts = False  # a text-only conversation: the sentence is written, not spoken

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        sentence = None
        if isinstance(frame, LLMConfigureOutputFrame):
            self._skip_tts = frame.skip_tts
        elif direction == FrameDirection.DOWNSTREAM and isinstance(frame, FunctionCallResultFrame):
            sentence = spoken_sentence(frame)
            if sentence is not None:
                updated = frame.properties.on_context_updated if frame.properties else None
                frame.properties = FunctionCallResultProperties(
                    run_llm=False, on_context_updated=self._context_updated(updated, sentence)
                )
        await self.push_frame(frame, direction)
        if sentence is not None:
            await self._answer(sentence)

    def _context_updated(
        self, updated: Callable[[], Awaitable[None]] | None, sentence: str
    ) -> Callable[[], Awaitable[None]] | None:
        if self._on_result_in_context is None:
            return updated
        report = self._on_result_in_context

        async def context_updated() -> None:
            if updated is not None:
                await updated()
            report(sentence)

        return context_updated

    async def _answer(self, sentence: str) -> None:
        if not self._skip_tts:
            await self.push_frame(TTSSpeakFrame(sentence, append_to_context=True))
            return
        # Written as the LLM writes a text-only answer, so the context keeps it the same way.
        text = LLMTextFrame(sentence)
        text.skip_tts = True
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(text)
        await self.push_frame(LLMFullResponseEndFrame())
