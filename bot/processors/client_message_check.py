"""RTVI's processor, with every client message checked before RTVI acts on it.

Every transport delivers client messages to the RTVI processor at the top of the pipeline
(WebSocket message frames, the WebRTC data channel, Daily app messages), so the rules of
`bot/transports/client_messages.py` apply here to all of them alike. A refused message is
answered with an RTVI error naming the problem and goes no further; the session keeps working.
"""

from collections.abc import Callable

from loguru import logger
from pipecat.frames.frames import Frame, InputTransportMessageFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.processors.frameworks.rtvi import RTVIProcessor

from bot.transports.client_messages import excerpt, message_problem, rtvi_error


class CheckedRTVIProcessor(RTVIProcessor):
    def __init__(
        self, *, sample_rate: int, on_rejected: Callable[[str], None] | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self._sample_rate = sample_rate
        self._on_rejected = on_rejected

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InputTransportMessageFrame) and (
            problem := message_problem(frame.message, self._sample_rate)
        ):
            logger.debug(f"Refused a client message ({problem}): {excerpt(str(frame.message))}")
            if self._on_rejected:
                self._on_rejected("bad_input")
            await self.push_frame(rtvi_error(problem))
            return
        await super().process_frame(frame, direction)
