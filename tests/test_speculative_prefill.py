"""SpeculativePrefill: what it asks the LLM to compute ahead, and when (Pipecat's run_test,
with an LLM that records the requests; the engine's side is in test_local_llm.py)."""

import pytest
from pipecat.frames.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, InterimTranscriptionFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import SleepFrame, run_test

from bot.processors.speculative_prefill import SpeculativePrefill

pytestmark = pytest.mark.unit

SENTENCE = "It is 6:11 AM in Tokyo, on Sunday, December 6."


class RecordingLLM:
    def __init__(self) -> None:
        self.prefills: list[tuple[str, str | None]] = []

    def prefill_user_turn(
        self, context: LLMContext, words: str, *, whole_request: bool = False, answer_spoken: str | None = None
    ) -> None:
        self.prefills.append((words, answer_spoken))


async def test_interim_words_are_prefilled_and_passed_on():
    llm = RecordingLLM()
    interim = InterimTranscriptionFrame("Which ocean is", "user", "now")
    down, _ = await run_test(
        SpeculativePrefill(llm, LLMContext()),
        frames_to_send=[interim],
        expected_down_frames=[InterimTranscriptionFrame],
    )
    assert llm.prefills == [("Which ocean is", None)]


async def test_a_tool_answer_is_prefilled_once_its_audio_has_started():
    llm = RecordingLLM()
    prefill = SpeculativePrefill(llm, LLMContext())
    prefill.answer_being_spoken(SENTENCE)  # its result is in the context; no audio yet
    assert llm.prefills == []  # beside Piper synthesizing it, it would delay the answer
    await run_test(
        prefill,
        frames_to_send=[SleepFrame(0.05), BotStartedSpeakingFrame(), SleepFrame(0.05)],
        frames_to_send_direction=FrameDirection.UPSTREAM,
        expected_up_frames=[BotStartedSpeakingFrame],
    )
    assert llm.prefills == [("", SENTENCE)]


async def test_a_tool_answer_whose_audio_already_plays_is_prefilled_at_once():
    llm = RecordingLLM()
    prefill = SpeculativePrefill(llm, LLMContext())
    await run_test(
        prefill,
        frames_to_send=[BotStartedSpeakingFrame(), SleepFrame(0.05)],
        frames_to_send_direction=FrameDirection.UPSTREAM,
        expected_up_frames=[BotStartedSpeakingFrame],
    )
    prefill.answer_being_spoken(SENTENCE)
    assert llm.prefills == [("", SENTENCE)]


async def test_a_tool_answer_not_yet_prefilled_when_the_bot_stops_is_dropped():
    llm = RecordingLLM()
    prefill = SpeculativePrefill(llm, LLMContext())
    prefill.answer_being_spoken(SENTENCE)
    await run_test(
        prefill,
        frames_to_send=[BotStoppedSpeakingFrame(), SleepFrame(0.05), BotStartedSpeakingFrame(), SleepFrame(0.05)],
        frames_to_send_direction=FrameDirection.UPSTREAM,
        expected_up_frames=[BotStoppedSpeakingFrame, BotStartedSpeakingFrame],
    )
    assert llm.prefills == []  # the context holds what was heard: `answer_added` computes that
