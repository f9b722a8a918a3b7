"""The page is told when a transcript restates the user's request and when a reply went
unheard (run_test): a message just before the frame it is about, and the frame passed on."""

import pytest
from pipecat.frames.frames import InterimTranscriptionFrame, OutputTransportMessageUrgentFrame, TranscriptionFrame
from pipecat.tests.utils import run_test

from bot.frames import ReplyUnheardFrame, RequestInterimTranscriptionFrame, RequestTranscriptionFrame
from bot.processors.request_transcript import RequestTranscriptMessages

pytestmark = pytest.mark.unit

WHOLE = "Show me a bar chart of sales: January ten, February twenty."


async def _down(frames: list) -> list:
    down, _ = await run_test(RequestTranscriptMessages(), frames_to_send=frames)
    return down


def _server_data(frame) -> dict | None:
    if isinstance(frame, OutputTransportMessageUrgentFrame) and frame.message.get("type") == "server-message":
        return frame.message["data"]
    return None


async def test_a_request_transcribed_again_whole_is_told_as_the_request_with_its_words():
    down = await _down(
        [
            TranscriptionFrame("Show me a bar chart of sales: January ten.", "user", "t0"),
            RequestInterimTranscriptionFrame(WHOLE[:-1], "user", "t1"),
            RequestTranscriptionFrame(WHOLE, "user", "t2"),
        ]
    )
    assert [_server_data(f) for f in down] == [
        None,
        {"type": "user-request", "text": WHOLE[:-1], "final": False},
        None,
        {"type": "user-request", "text": WHOLE, "final": True},
        None,
    ]
    assert [type(f) for f in down if _server_data(f) is None] == [
        TranscriptionFrame,
        RequestInterimTranscriptionFrame,
        RequestTranscriptionFrame,
    ]


async def test_an_unheard_reply_is_told_before_the_frame_goes_on():
    down = await _down([ReplyUnheardFrame(), InterimTranscriptionFrame("and March", "user", "t3")])
    assert [_server_data(f) for f in down] == [{"type": "reply-unheard"}, None, None]
    assert isinstance(down[1], ReplyUnheardFrame)
