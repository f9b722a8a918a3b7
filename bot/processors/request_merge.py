"""Makes a request cut by a pause one request again, before the LLM reads it.

"Show me a bar chart of monthly sales: ... January 10, February 20": when the turn ended at the
pause and the user went on before any of the reply was heard, Pipecat's interruption dropped
the reply, and the context holds two user messages, perhaps with what the unheard reply did in
between (a tool call and its result, with no spoken answer). The LLM would then answer the last
part alone. Here, on each `LLMContextFrame`, the user messages that no heard answer separates
become one message with every word, and the unheard reply's calls and results between them go.
A reply the user heard (any assistant text) is a boundary: what follows it is a new request.

Placed right after the user aggregator, so every provider reads the merged request.
"""

from typing import cast

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContextMessage
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.conversation import Messages, merged_request


class RequestMerge(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            # conversation.py reads messages as the dicts they are (it skips LLMSpecificMessage).
            messages = cast(Messages, frame.context.get_messages())
            if (joined := merged_request(messages)) is not None:
                # The context's own messages, with one plain user message for the request's parts.
                frame.context.set_messages(cast(list[LLMContextMessage], joined))
        await self.push_frame(frame, direction)
