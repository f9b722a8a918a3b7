"""Tells the page when a transcript restates the user's request, and when a reply went unheard.

RTVI's `user-input` messages carry each transcript as one more part of the user's turn, and the
page appends them. But a request dictated with pauses is transcribed again whole as it goes on
(`RequestTranscriptionFrame`, each replacing the parts before it), and a reply the user went on
over before they could hear it (`ReplyUnheardFrame`) answered nothing: told neither, the page
showed the request's words two and three times over, with the unheard reply between them.

`user-request` carries the request's words so far (`final` as `user-input`'s): the page shows
them as the request's whole text. `reply-unheard` comes as the user's voice is confirmed: the
page takes the reply's words down and goes on with the request's entry.
"""

from typing import Any

from pipecat.frames.frames import Frame, OutputTransportMessageUrgentFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.frames import ReplyUnheardFrame, RequestInterimTranscriptionFrame, RequestTranscriptionFrame
from bot.transports.client_messages import rtvi_server_message

REQUEST_MESSAGE_TYPE = "user-request"
REPLY_UNHEARD_MESSAGE_TYPE = "reply-unheard"


def request_message(text: str, *, final: bool) -> dict[str, Any]:
    return rtvi_server_message({"type": REQUEST_MESSAGE_TYPE, "text": text, "final": final})


def reply_unheard_message() -> dict[str, Any]:
    return rtvi_server_message({"type": REPLY_UNHEARD_MESSAGE_TYPE})


class RequestTranscriptMessages(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, ReplyUnheardFrame):
            await self.push_frame(OutputTransportMessageUrgentFrame(message=reply_unheard_message()))
        elif isinstance(frame, (RequestTranscriptionFrame, RequestInterimTranscriptionFrame)):
            final = isinstance(frame, RequestTranscriptionFrame)
            await self.push_frame(OutputTransportMessageUrgentFrame(message=request_message(frame.text, final=final)))
        await self.push_frame(frame, direction)
