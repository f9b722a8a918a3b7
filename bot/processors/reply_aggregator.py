"""Pipecat's assistant aggregator, for which a reply the user did not hear is not said.

Interrupted, Pipecat's aggregator puts the words whose audio had started into the context. When
the user's voice began before they could have heard them (`ReplyUnheardFrame`, see
`bot.processors.unheard_reply`), they were going on with their request, and the reply's words
would make its next part look like an answer to them (`bot.conversation` takes any assistant
text as heard). Those words go; the reply's tool calls and results stay, as the parts of an
unheard reply that the request merge removes.
"""

from pipecat.frames.frames import Frame, InterruptionFrame, UserStoppedSpeakingFrame
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameDirection

from bot.frames import ReplyUnheardFrame


class HeardReplyAggregator(LLMAssistantAggregator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reply_unheard = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, ReplyUnheardFrame):
            self._reply_unheard = True
        elif isinstance(frame, UserStoppedSpeakingFrame):
            # Its interruption has passed by now (a reply that had already ended is in the context).
            self._reply_unheard = False
        await super().process_frame(frame, direction)

    async def _handle_interruptions(self, frame: InterruptionFrame):
        if self._reply_unheard:
            self._reply_unheard = False
            await self.reset()  # the words heard so far: none
        await super()._handle_interruptions(frame)
