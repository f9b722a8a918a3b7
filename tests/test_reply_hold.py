"""The reply waits while a voice that may be the user going on is being confirmed (run_test)."""

import pytest
from pipecat.frames.frames import InterruptionFrame, TTSAudioRawFrame, TTSTextFrame
from pipecat.tests.utils import SleepFrame, run_test

from bot.frames import UserVoiceFadedFrame, UserVoiceStartingFrame
from bot.processors.reply_hold import ReplyHold

pytestmark = pytest.mark.unit


def _reply() -> list:
    # The sleep lets the data frames reach the processor before the system frames sent after them.
    return [TTSAudioRawFrame(b"\x01\x00" * 160, 24000, 1), TTSTextFrame("Here", text_type="word"), SleepFrame(0.1)]


async def test_a_reply_passes_at_once_when_no_voice_is_starting():
    down, _ = await run_test(
        ReplyHold(), frames_to_send=_reply(), expected_down_frames=[TTSAudioRawFrame, TTSTextFrame]
    )
    assert down[1].text == "Here"


async def test_a_reply_held_for_a_voice_that_fades_goes_on_in_order():
    frames = [UserVoiceStartingFrame(), *_reply(), UserVoiceFadedFrame()]
    await run_test(
        ReplyHold(),
        frames_to_send=frames,
        expected_down_frames=[UserVoiceStartingFrame, TTSAudioRawFrame, TTSTextFrame, UserVoiceFadedFrame],
    )


async def test_a_reply_held_for_a_voice_that_turns_out_to_be_speech_is_dropped():
    frames = [UserVoiceStartingFrame(), *_reply(), InterruptionFrame(), UserVoiceFadedFrame()]
    await run_test(
        ReplyHold(),
        frames_to_send=frames,
        expected_down_frames=[UserVoiceStartingFrame, InterruptionFrame, UserVoiceFadedFrame],
    )
