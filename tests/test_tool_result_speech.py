"""ToolResultSpeech: a tool's own sentence is its answer, spoken at once, and the LLM is asked
again only when the result has something it must word (Pipecat's run_test)."""

import pytest
from pipecat.frames.frames import (
    FunctionCallResultFrame,
    FunctionCallResultProperties,
    LLMConfigureOutputFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.tests.utils import run_test

from bot.processors.tool_result_speech import ToolResultSpeech

pytestmark = pytest.mark.unit

SENTENCE = "In Tokyo it is 6:19 AM on Thursday, December 3."


def result(value, **kwargs) -> FunctionCallResultFrame:
    return FunctionCallResultFrame(
        function_name="get_current_time", tool_call_id="c1", arguments={}, result=value, **kwargs
    )


async def test_the_tools_sentence_is_spoken_and_the_llm_is_not_run_again():
    down, _ = await run_test(
        ToolResultSpeech(),
        frames_to_send=[result({"timezone": "Asia/Tokyo", "summary": SENTENCE})],
        expected_down_frames=[FunctionCallResultFrame, TTSSpeakFrame],
    )
    assert down[0].properties.run_llm is False
    assert down[1].text == SENTENCE and down[1].append_to_context  # memory and routing see it


async def test_an_error_or_a_result_without_a_sentence_is_left_to_the_llm():
    down, _ = await run_test(
        ToolResultSpeech(),
        frames_to_send=[
            result({"error": "unknown timezone 'Mars'"}),
            result({"key_figures": {}}),
            result("plain text"),
            result({"summary": SENTENCE}, error="the handler raised"),
        ],
        expected_down_frames=[FunctionCallResultFrame] * 4,
    )
    assert all(frame.properties is None for frame in down)


async def test_a_result_whose_caller_decided_is_not_changed():
    decided = FunctionCallResultProperties(run_llm=True)
    update = FunctionCallResultProperties(is_final=False)
    down, _ = await run_test(
        ToolResultSpeech(),
        frames_to_send=[
            result({"summary": SENTENCE}, properties=decided),
            result({"summary": SENTENCE}, properties=update),
        ],
        expected_down_frames=[FunctionCallResultFrame] * 2,
    )
    assert down[0].properties is decided and down[1].properties is update


async def test_a_text_only_conversation_gets_the_sentence_as_the_llm_would_write_it():
    down, _ = await run_test(
        ToolResultSpeech(),
        frames_to_send=[LLMConfigureOutputFrame(skip_tts=True), result({"summary": SENTENCE})],
        expected_down_frames=[
            LLMConfigureOutputFrame,
            FunctionCallResultFrame,
            LLMFullResponseStartFrame,
            LLMTextFrame,
            LLMFullResponseEndFrame,
        ],
    )
    assert down[3].text == SENTENCE and down[3].skip_tts


async def test_the_sentence_is_reported_once_its_result_is_in_the_context():
    reported: list[str] = []
    callers: list[str] = []

    async def callers_own() -> None:
        callers.append("updated")

    down, _ = await run_test(
        ToolResultSpeech(on_result_in_context=reported.append),
        frames_to_send=[
            result(
                {"summary": SENTENCE},
                properties=FunctionCallResultProperties(on_context_updated=callers_own),
            )
        ],
        expected_down_frames=[FunctionCallResultFrame, TTSSpeakFrame],
    )
    assert reported == []  # the assistant aggregator calls it once the context holds the result
    on_context_updated = down[0].properties.on_context_updated
    assert on_context_updated is not None
    await on_context_updated()
    assert reported == [SENTENCE] and callers == ["updated"]


async def test_a_request_to_say_a_list_again_is_spoken_as_the_tool_words_it():
    from bot.tools.generate_chart import UNHEARD_LIST
    from bot.tools.results import SayAgain, error_result

    down, _ = await run_test(
        ToolResultSpeech(),
        frames_to_send=[result(error_result(SayAgain(UNHEARD_LIST)))],
        expected_down_frames=[FunctionCallResultFrame, TTSSpeakFrame],
    )
    assert down[0].properties.run_llm is False
    assert down[1].text == f"{UNHEARD_LIST}."
