"""A reply the user went on over before they could hear it is kept out of the context (run_test)."""

import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseStartFrame,
    TTSTextFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test

from bot.frames import ReplyUnheardFrame
from bot.processors.reply_aggregator import HeardReplyAggregator

pytestmark = pytest.mark.unit

REQUEST = {"role": "user", "content": "Show me a bar chart of monthly sales: January 10, February 20."}


def _reply_playing() -> list:
    # The sleep lets the data frames reach the aggregator before the system frames sent after them.
    return [LLMFullResponseStartFrame(), TTSTextFrame("Here is a bar chart", text_type="sentence"), SleepFrame(0.1)]


async def _context_after(frames: list) -> list:
    context = LLMContext(messages=[dict(REQUEST)])
    await run_test(HeardReplyAggregator(context), frames_to_send=frames)
    return context.get_messages()


async def test_a_reply_spoken_over_before_it_could_be_heard_leaves_no_words():
    assert await _context_after([*_reply_playing(), ReplyUnheardFrame(), InterruptionFrame()]) == [REQUEST]


async def test_a_heard_reply_spoken_over_keeps_what_was_said():
    messages = await _context_after([*_reply_playing(), InterruptionFrame()])
    assert messages == [REQUEST, {"role": "assistant", "content": "Here is a bar chart"}]


async def test_only_the_interruption_that_follows_counts():
    """A reply that had ended before the speech was confirmed is in the context already; the
    mark goes with the turn's end, so the next barge-in keeps what it interrupts."""
    frames = [ReplyUnheardFrame(), UserStoppedSpeakingFrame(), *_reply_playing(), InterruptionFrame()]
    assert (await _context_after(frames))[-1] == {"role": "assistant", "content": "Here is a bar chart"}
