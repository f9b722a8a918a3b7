"""Every turn measured and costed: live `turn-metrics` messages, REST, Prometheus and JSON."""

import json
import math
import urllib.error
import urllib.request

import pytest
from helpers import TURN_TIMEOUT
from prometheus_client.parser import text_string_to_metric_families

from bot.records import MILESTONES, TurnLatency, TurnRecord
from client.speech import speech_pcm
from client.ws import VoiceClient


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
        return response.headers.get_content_type(), body


@pytest.mark.unit
def test_stages_are_consecutive_non_negative_and_add_up():
    latency = TurnLatency.from_milestones(
        {"bot_audio_sent": 1.0, "vad_stop": 0.2, "turn_end": 0.35, "llm_first_token": 0.3, "tts_first_audio": 0.9}
    )
    assert list(latency.milestones) == [m for m in MILESTONES if m not in ("tools_done", "answer_audio_sent")]
    # The LLM milestone seen "before" the turn end (they overlap) is a zero-length stage.
    assert latency.stages == {
        "vad_stop": 0.2,
        "turn_end": 0.35 - 0.2,
        "llm_first_token": 0.0,
        "tts_first_audio": 0.9 - 0.35,
        "bot_audio_sent": 1.0 - 0.9,
    }
    assert math.isclose(sum(latency.stages.values()), latency.total)
    assert TurnLatency.from_milestones({"vad_stop": 0.2}).total is None


@pytest.mark.unit
def test_the_answer_audio_is_its_own_milestone_after_the_first_audio():
    """Words spoken before the tools returned ("Let me check") are first audio; the stages
    add up to the answer's audio, and those up to the first audio to the total."""
    latency = TurnLatency.from_milestones(
        {
            "vad_stop": 0.2,
            "turn_end": 0.4,
            "llm_first_token": 0.5,
            "tts_first_audio": 0.7,
            "bot_audio_sent": 0.8,
            "tools_done": 1.5,
            "answer_audio_sent": 1.9,
        }
    )
    assert latency.total == 0.8 and latency.answer == 1.9
    assert math.isclose(sum(latency.stages.values()), latency.answer)
    plain = TurnLatency.from_milestones({"turn_end": 0.4, "bot_audio_sent": 1.0, "answer_audio_sent": 1.0})
    assert plain.total == plain.answer == 1.0


async def _recorded(frames) -> TurnRecord:
    from turn_recording import recorded_turns

    (turn,) = await recorded_turns(frames)
    return turn


def _tool_frames(*, spoken_first: bool) -> list:
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        FunctionCallInProgressFrame,
        FunctionCallResultFrame,
        TranscriptionFrame,
        TTSAudioRawFrame,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )

    audio = TTSAudioRawFrame(audio=b"\0\0" * 160, sample_rate=24000, num_channels=1)
    call = dict(function_name="get_current_time", tool_call_id="c1", arguments={})
    before = [audio, BotStartedSpeakingFrame()] if spoken_first else []
    return [
        UserStartedSpeakingFrame(),
        TranscriptionFrame("What time is it?", "user", ""),
        VADUserStoppedSpeakingFrame(stop_secs=0.0),
        UserStoppedSpeakingFrame(),
        *before,
        FunctionCallInProgressFrame(**call),
        FunctionCallResultFrame(**call, result={"summary": "It is noon."}),
        audio,
        *([] if spoken_first else [BotStartedSpeakingFrame()]),
        BotStoppedSpeakingFrame(),
    ]


@pytest.mark.unit
async def test_a_tool_turn_marks_the_answer_audio_after_the_result():
    turn = await _recorded(_tool_frames(spoken_first=False))
    milestones = turn.latency.milestones
    assert milestones["tools_done"] <= milestones["answer_audio_sent"]
    assert turn.latency.answer == turn.latency.total  # no words before the answer


@pytest.mark.unit
async def test_words_before_the_tool_result_are_first_audio_not_the_answer():
    turn = await _recorded(_tool_frames(spoken_first=True))
    milestones = turn.latency.milestones
    assert milestones["bot_audio_sent"] <= milestones["tools_done"] <= milestones["answer_audio_sent"]
    assert "answer_audio_sent" in milestones and turn.latency.answer >= turn.latency.total


@pytest.mark.e2e
async def test_a_spoken_turn_is_measured_costed_and_exposed(ws_url, live_server):
    question = speech_pcm("What is the capital of France?")
    async with VoiceClient(ws_url) as client:
        await client.ready()
        await client.wait_for(lambda m: m.type == "bot-stopped-speaking", TURN_TIMEOUT)
        speech_end = await client.say(question)
        message = await client.wait_for(
            lambda m: m.type == "server-message" and m.data.get("type") == "turn-metrics",
            TURN_TIMEOUT,
            after=speech_end,
        )
    turn, session = message.data["turn"], message.data["session"]

    assert turn["status"] == "completed"
    assert "france" in turn["user_text"].lower() and "paris" in turn["bot_text"].lower()
    latency = turn["latency"]
    assert set(latency["milestones"]) == set(MILESTONES) - {"tools_done"}
    assert all(value >= 0 for value in latency["stages"].values())
    assert math.isclose(sum(latency["stages"].values()), latency["total"], abs_tol=1e-6)
    assert 0.2 <= latency["total"] < 5.0
    assert latency["stages"]["vad_stop"] > 0.1  # the VAD's stop_secs at least

    usage = turn["usage"]
    assert usage["stt_audio_seconds"] > 1.0
    assert usage["llm_prompt_tokens"] > 100 and usage["llm_completion_tokens"] > 3
    assert usage["tts_characters"] >= len("Paris")
    assert set(usage["cpu_seconds"]) == {"stt", "llm", "tts"}
    assert all(v > 0 for v in usage["cpu_seconds"].values())
    assert turn["cost"]["total"] == 0.0  # the embedded stack charges no fees
    assert turn["providers"]["llm"].startswith("embedded:")
    assert session["turns"] == 1

    # The same turn, read back through REST.
    _, body = _get(f"{live_server}/api/sessions/{turn['session_id']}")
    stored = json.loads(body)
    assert stored["turns"][0]["turn_id"] == turn["turn_id"]
    assert stored["turns"][0]["latency"]["total"] == latency["total"]
    assert stored["history_length"] == 1

    # Prometheus exposition parses and counts the turn; the JSON twin has percentiles.
    content_type, body = _get(f"{live_server}/metrics")
    assert content_type == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    turns = sum(s.value for f in families.values() for s in f.samples if s.name.endswith("turns_total"))
    assert turns >= 1
    stage_counts = {
        s.labels["stage"]: s.value
        for s in families["voice_agent_turn_stage_seconds"].samples
        if s.name.endswith("_count")
    }
    assert stage_counts["total"] >= 1 and stage_counts["llm_first_token"] >= 1
    _, body = _get(f"{live_server}/api/metrics")
    snapshot = json.loads(body)
    assert snapshot["latency"]["total"]["p50"] > 0


@pytest.mark.e2e
def test_unknown_session_is_a_clear_404(live_server):
    try:
        _get(f"{live_server}/api/sessions/does-not-exist")
    except urllib.error.HTTPError as error:
        assert error.code == 404
        assert "does-not-exist" in json.loads(error.read())["detail"]
    else:
        raise AssertionError("expected 404")


@pytest.mark.unit
async def test_a_turn_recorder_that_fails_once_goes_on_recording():
    from pipecat.frames.frames import (
        BotStartedSpeakingFrame,
        BotStoppedSpeakingFrame,
        TranscriptionFrame,
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.observers.base_observer import FramePushed
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    from bot.observers.turn_recorder import TurnRecorder

    recorded, errors = [], []

    async def on_turn(turn):
        if not recorded and not errors:
            raise RuntimeError("the store is gone")  # the first turn's hand-off fails
        recorded.append(turn)

    recorder = TurnRecorder(session_id="s1", providers={}, engines={}, on_turn=on_turn, on_error=errors.append)
    processor = FrameProcessor()

    async def turn(text: str) -> None:
        for frame in (
            UserStartedSpeakingFrame(),
            TranscriptionFrame(text, "user", ""),
            VADUserStoppedSpeakingFrame(stop_secs=0.2),
            UserStoppedSpeakingFrame(),
            BotStartedSpeakingFrame(),
            BotStoppedSpeakingFrame(),
        ):
            await recorder.on_push_frame(FramePushed(processor, processor, frame, FrameDirection.DOWNSTREAM, 0))

    await turn("first question")
    assert errors == ["observer_error"] and not recorded
    await turn("second question")
    assert [t.user_text for t in recorded] == ["second question"]
