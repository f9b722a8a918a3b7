"""The conversation kept for the LLM (bot/processors/context_window.py), through Pipecat's
`run_test`: a context past the bound leaves the processor with its oldest turns dropped, cut
at a user message, system messages kept; one within the bound passes untouched."""

import pytest
from pipecat.frames.frames import LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bot.processors.context_window import ContextWindow

pytestmark = pytest.mark.unit

SYSTEM = {"role": "system", "content": "You are a voice agent."}


def _turn(n: int, *, tool: bool = False) -> list[dict]:
    user = {"role": "user", "content": f"question {n}"}
    if not tool:
        return [user, {"role": "assistant", "content": f"answer {n}"}]
    call = {"id": f"c{n}", "type": "function", "function": {"name": "get_current_time", "arguments": "{}"}}
    return [
        user,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"c{n}", "content": "noon"},
        {"role": "assistant", "content": f"answer {n}"},
    ]


async def _through_window(messages: list[dict], max_messages: int) -> list:
    context = LLMContext(messages=list(messages))
    received, _ = await run_test(
        ContextWindow(max_messages),
        frames_to_send=[LLMContextFrame(context)],
        expected_down_frames=[LLMContextFrame],
    )
    return received[0].context.get_messages()


async def test_a_long_conversation_keeps_its_newest_turns_and_its_system_message():
    messages = [SYSTEM, *(m for n in range(40) for m in _turn(n, tool=n % 3 == 0))]
    kept = await _through_window(messages, 40)
    assert kept[0] == SYSTEM
    assert kept[1]["role"] == "user"  # cut at a turn: no tool result without its call
    assert len(kept) <= 30  # three quarters of the bound, so the next turns do not shift it
    assert kept[-1] == messages[-1]
    assert kept[1:] == messages[len(messages) - len(kept) + 1 :]


async def test_a_conversation_within_the_bound_is_untouched():
    messages = [SYSTEM, *(m for n in range(5) for m in _turn(n))]
    assert await _through_window(messages, 40) == messages
