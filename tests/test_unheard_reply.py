"""Whether the user heard the reply they started speaking over (run_test, real time)."""

import pytest
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, VADUserStartedSpeakingFrame
from pipecat.tests.utils import SleepFrame, run_test

from bot.frames import ReplyUnheardFrame, UserVoiceFadedFrame, UserVoiceStartingFrame
from bot.processors.unheard_reply import REACTION_SECS, UnheardReplyCheck

pytestmark = pytest.mark.unit


def _speech() -> list:
    return [UserVoiceStartingFrame(), SleepFrame(0.2), VADUserStartedSpeakingFrame()]  # the VAD's start delay


async def _types_down(frames: list) -> list[type]:
    down, _ = await run_test(UnheardReplyCheck(), frames_to_send=frames)
    return [type(f) for f in down]


async def test_a_voice_that_began_as_the_reply_started_playing_did_not_hear_it():
    assert await _types_down([BotStartedSpeakingFrame(), SleepFrame(REACTION_SECS / 3), *_speech()]) == [
        BotStartedSpeakingFrame,
        UserVoiceStartingFrame,
        ReplyUnheardFrame,
        VADUserStartedSpeakingFrame,
    ]


async def test_a_voice_that_began_before_the_reply_did_not_hear_it():
    frames = [UserVoiceStartingFrame(), BotStartedSpeakingFrame(), SleepFrame(0.2), VADUserStartedSpeakingFrame()]
    assert ReplyUnheardFrame in await _types_down(frames)


async def test_a_voice_that_began_a_reaction_time_into_the_reply_heard_it():
    frames = [BotStartedSpeakingFrame(), SleepFrame(REACTION_SECS + 0.2), *_speech()]
    assert ReplyUnheardFrame not in await _types_down(frames)


async def test_the_voice_that_counts_is_the_one_confirmed_as_speech():
    """A noise that faded as the reply began says nothing of the speech that came later."""
    frames = [
        BotStartedSpeakingFrame(),
        UserVoiceStartingFrame(),
        UserVoiceFadedFrame(),
        SleepFrame(REACTION_SECS + 0.2),
        *_speech(),
    ]
    assert ReplyUnheardFrame not in await _types_down(frames)


async def test_speech_with_no_reply_since_the_user_last_spoke_is_not_about_one():
    frames = [BotStartedSpeakingFrame(), SleepFrame(REACTION_SECS + 0.2), *_speech(), BotStoppedSpeakingFrame()]
    # The second speech: the reply before it was judged at the first.
    assert ReplyUnheardFrame not in await _types_down([*frames, *_speech()])
    assert ReplyUnheardFrame not in await _types_down(_speech())
