"""RTVI's processor, with every client message checked before RTVI acts on it.

Every transport delivers client messages to the RTVI processor at the top of the pipeline
(WebSocket message frames, the WebRTC data channel, Daily app messages), so the rules of
`bot/transports/client_messages.py` and the client's `ClientAllowance` apply here to all of
them alike. A refused message goes no further and is answered with an RTVI error naming the
problem (the same problem at most once a second); the session keeps working, unless the
refusals go on, when the client is disconnected.
"""

from loguru import logger
from pipecat.frames.frames import CancelWorkerFrame, Frame, InputTransportMessageFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.processors.frameworks.rtvi import RTVIProcessor

from bot.limits import ABUSE, ClientAllowance
from bot.transports.client_messages import excerpt, message_problem, rtvi_error


class CheckedRTVIProcessor(RTVIProcessor):
    def __init__(self, *, allowance: ClientAllowance, on_rejected=None, **kwargs):
        super().__init__(**kwargs)
        self._allowance = allowance
        self._on_rejected = on_rejected

    def _problem(self, message) -> str | None:
        if problem := message_problem(message, self._allowance.max_text_chars):
            return problem
        if message["type"] == "send-text" and not self._allowance.text_allowed():
            return "too many typed messages; wait a moment (AGENT_MAX_TEXT_PER_SEC)"
        return None

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InputTransportMessageFrame) and (problem := self._problem(frame.message)):
            await self._refuse(problem, frame.message)
            return
        await super().process_frame(frame, direction)

    async def _refuse(self, problem: str, message) -> None:
        logger.debug(f"Refused a client message ({problem}): {excerpt(str(message))}")
        if self._on_rejected:
            self._on_rejected("bad_input")
        refusal = self._allowance.refused(problem)
        if refusal.abusive:
            logger.warning(f"Disconnecting a client: {ABUSE}")
            if self._allowance.disconnect is not None:
                await self._allowance.disconnect(ABUSE)  # tells the client itself
            else:
                await self.push_frame(rtvi_error(ABUSE, fatal=True))
                await self.push_frame(CancelWorkerFrame(reason=ABUSE), FrameDirection.UPSTREAM)
        elif refusal.tell:
            await self.push_frame(rtvi_error(problem))
