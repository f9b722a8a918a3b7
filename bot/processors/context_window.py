"""Keeps the conversation the LLM is sent within a number of messages, for every provider.

Each turn adds to the session's `LLMContext`, and typed messages can be long: without a bound a
long session grows every request and the memory it holds. Once the context passes
`max_messages`, the oldest turns are dropped down to three quarters of it, so a provider's
cached prompt prefix (the embedded LLM's KV cache, a cloud provider's prompt cache) stays valid
for the next several turns instead of shifting every turn. The leading system messages stay,
and the cut falls before a user message, so a tool call never loses its result.
"""

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


def _role(message) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def windowed(messages: list, max_messages: int) -> list | None:
    """`messages` with the oldest turns dropped, or None when they are within the bound."""
    if len(messages) <= max_messages:
        return None
    head = 0
    while head < len(messages) and _role(messages[head]) in ("system", "developer"):
        head += 1
    keep = max(1, max_messages * 3 // 4 - head)
    start = next(
        (i for i in range(len(messages) - keep, len(messages)) if _role(messages[i]) == "user"),
        None,
    )
    if start is None or start <= head:
        return None  # no turn boundary to cut at
    return messages[:head] + messages[start:]


class ContextWindow(FrameProcessor):
    def __init__(self, max_messages: int, **kwargs):
        super().__init__(**kwargs)
        self._max_messages = max_messages

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.trim(frame.context)
        await self.push_frame(frame, direction)

    def trim(self, context: LLMContext) -> None:
        if (kept := windowed(context.get_messages(), self._max_messages)) is not None:
            context.set_messages(kept)
