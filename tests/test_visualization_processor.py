"""VisualizationProcessor: a tool's visualization goes out right before the first audio of
the sentence that presents it, as a non-urgent RTVI server-message (Pipecat's run_test)."""

import time
from collections.abc import AsyncGenerator

import pytest
from pipecat.frames.frames import (
    Frame,
    FunctionCallResultFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.tests.utils import SleepFrame, run_test

from bot.frames import ReplyUnheardFrame
from bot.processors.tool_result_speech import ToolResultSpeech
from bot.processors.visualization import VisualizationProcessor
from bot.records import SessionRecord
from bot.session_resources import SessionResources
from bot.telemetry import Telemetry

pytestmark = pytest.mark.unit

FIGURE = {
    "data": [{"type": "bar", "x": ["Mon", "Tue", "Wed"], "y": [3, 5, 2]}],
    "layout": {"yaxis": {"title": {"text": "calls"}}},
}


def resources() -> SessionResources:
    record = SessionRecord(session_id="s1", transport="test", started_at=time.time())
    return SessionResources(record=record, telemetry=Telemetry())


def chart(title: str = "Calls per day") -> dict:
    return {"type": "chart", "result_id": "r1", "title": title, "figure": FIGURE}


def result(tool_call_id: str = "call-1", **kwargs) -> FunctionCallResultFrame:
    return FunctionCallResultFrame(
        function_name="chart_result", tool_call_id=tool_call_id, arguments={}, result={"ok": True}, **kwargs
    )


def audio(context_id: str = "ctx-1") -> TTSAudioRawFrame:
    return TTSAudioRawFrame(audio=b"\x00\x00" * 240, sample_rate=24000, num_channels=1, context_id=context_id)


def sentence(context_id: str = "ctx-1", chunks: int = 2) -> list[Frame]:
    return [
        TTSStartedFrame(context_id=context_id),
        *[audio(context_id) for _ in range(chunks)],
        TTSStoppedFrame(context_id=context_id),
    ]


def messages(frames) -> list[dict]:
    return [f.message for f in frames if isinstance(f, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame)]


async def test_visualization_goes_out_right_before_the_first_audio_of_the_answer():
    res = resources()
    res.show("call-1", chart())
    kept = []

    async def keep(entry):
        kept.append(entry)

    processor = VisualizationProcessor(res, keep)
    down, _ = await run_test(
        processor,
        frames_to_send=[UserStartedSpeakingFrame(), result("call-1"), *sentence("ctx-7")],
        expected_down_frames=[
            UserStartedSpeakingFrame,
            FunctionCallResultFrame,
            TTSStartedFrame,
            OutputTransportMessageFrame,  # not before the sentence starts, not after its audio
            TTSAudioRawFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
        ],
    )
    (message,) = messages(down)
    assert message["label"] == "rtvi-ai" and message["type"] == "server-message"
    data = message["data"]
    assert data["type"] == "visualization"
    assert data["turn_id"] == "t1"  # own count of user turns without a turn id source
    assert data["utterance_id"] == "ctx-7" == down[4].context_id
    assert data["tool_call_id"] == "call-1"
    assert data["visualization"]["title"] == "Calls per day"
    assert data["visualization"]["figure"] == FIGURE
    assert res.pending_visualizations == {}
    assert processor.held == 0
    # Kept in the session (via the callback) with the ids that tie it to the turn.
    (entry,) = kept
    assert entry["figure"] == FIGURE and entry["type"] == "chart"
    assert (entry["turn_id"], entry["utterance_id"], entry["tool_call_id"]) == ("t1", "ctx-7", "call-1")


async def test_no_pending_visualization_adds_nothing():
    res = resources()
    res.show("other-call", chart())  # belongs to a call whose result has not come
    down, _ = await run_test(
        VisualizationProcessor(res),
        frames_to_send=[result("call-1"), *sentence()],
        expected_down_frames=[
            FunctionCallResultFrame,
            TTSStartedFrame,
            TTSAudioRawFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
        ],
    )
    assert messages(down) == []
    assert list(res.pending_visualizations) == ["other-call"]


async def test_audio_before_the_result_is_not_preceded_by_it_and_each_visual_goes_once():
    res = resources()
    res.show("call-1", chart("First"))
    res.show("call-2", chart("Second"))
    down, _ = await run_test(
        VisualizationProcessor(res, turn_id=lambda: "turn-abc"),
        frames_to_send=[
            *sentence("ctx-1", chunks=1),  # "Let me check." spoken before the tools ran
            result("call-1"),
            result("call-2"),
            *sentence("ctx-2"),
            *sentence("ctx-3"),
        ],
    )
    kinds = [type(f).__name__ for f in down]
    assert kinds == [
        "TTSStartedFrame",
        "TTSAudioRawFrame",
        "TTSStoppedFrame",
        "FunctionCallResultFrame",
        "FunctionCallResultFrame",
        "TTSStartedFrame",
        "OutputTransportMessageFrame",
        "OutputTransportMessageFrame",
        "TTSAudioRawFrame",
        "TTSAudioRawFrame",
        "TTSStoppedFrame",
        "TTSStartedFrame",
        "TTSAudioRawFrame",
        "TTSAudioRawFrame",
        "TTSStoppedFrame",
    ]
    sent = [m["data"] for m in messages(down)]
    assert [d["visualization"]["title"] for d in sent] == ["First", "Second"]
    assert {d["turn_id"] for d in sent} == {"turn-abc"}  # every message of a turn: one id
    assert {d["utterance_id"] for d in sent} == {"ctx-2"}


async def test_interruption_drops_visualizations_whose_sentence_was_never_spoken():
    res = resources()
    res.show("call-1", chart())
    processor = VisualizationProcessor(res)
    down, _ = await run_test(
        processor,
        frames_to_send=[
            result("call-1"),
            SleepFrame(sleep=0.05),  # the result is held before the user barges in
            InterruptionFrame(),
            SleepFrame(sleep=0.05),
            *sentence("ctx-next"),  # the next answer must not carry the old chart
        ],
    )
    assert messages(down) == []
    assert processor.held == 0
    assert res.pending_visualizations == {}  # the result itself stays in res.results


async def test_a_picture_sent_with_a_reply_the_user_did_not_hear_is_withdrawn():
    """The reply's audio went out just as the user went on with the request: its picture is
    taken down, and only its own (a picture a heard reply sent stays)."""
    res = resources()
    res.show("call-1", chart("January and February"))
    res.show("call-2", chart("January to March"))
    heard = [result("call-1"), *sentence("ctx-1"), SleepFrame(sleep=0.05)]
    unheard = [UserStartedSpeakingFrame(), result("call-2"), *sentence("ctx-2"), SleepFrame(sleep=0.05)]
    down, _ = await run_test(
        VisualizationProcessor(res, turn_id=lambda: "turn-1"),
        frames_to_send=[*heard, *unheard, ReplyUnheardFrame(), UserStartedSpeakingFrame()],
    )
    assert [m["data"].get("tool_call_id") for m in messages(down)] == ["call-1", "call-2", None]
    # At once, not behind the audio the interruption that follows will clear.
    (withdrawn,) = [f.message["data"] for f in down if isinstance(f, OutputTransportMessageUrgentFrame)]
    assert withdrawn == {"type": "visualization-withdrawn", "turn_id": "turn-1", "tool_call_ids": ["call-2"]}


async def test_text_only_answer_carries_it_with_its_first_text():
    res = resources()
    res.show("call-1", chart())
    text = TextFrame("Here is the chart.")
    text.skip_tts = True
    down, _ = await run_test(
        VisualizationProcessor(res),
        frames_to_send=[result("call-1"), text],
        expected_down_frames=[FunctionCallResultFrame, OutputTransportMessageFrame, TextFrame],
    )


async def test_a_failing_keeper_never_stops_the_audio():
    res = resources()
    res.show("call-1", chart())

    async def broken(_entry):
        raise RuntimeError("store is down")

    down, _ = await run_test(
        VisualizationProcessor(res, broken),
        frames_to_send=[result("call-1"), *sentence()],
        expected_down_frames=[
            FunctionCallResultFrame,
            TTSStartedFrame,
            OutputTransportMessageFrame,
            TTSAudioRawFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
        ],
    )


async def test_numpy_figures_are_sent_as_plain_json():
    import json

    import numpy as np

    res = resources()
    res.show("call-1", {"type": "chart", "title": "np", "figure": {"data": [{"type": "bar", "y": np.arange(3)}]}})
    down, _ = await run_test(VisualizationProcessor(res), frames_to_send=[result("call-1"), audio()])
    (message,) = messages(down)
    assert json.loads(json.dumps(message))["data"]["visualization"]["figure"]["data"][0]["y"] == [0, 1, 2]


class SilentTTS(TTSService):
    """A TTS that speaks every sentence as two chunks of silence."""

    def __init__(self):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="silent", voice="none", language="en"),
        )

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        for _ in range(2):
            yield TTSAudioRawFrame(
                audio=b"\x00\x00" * 480, sample_rate=self.sample_rate, num_channels=1, context_id=context_id
            )


async def test_after_a_real_tts_the_result_follows_earlier_audio_and_precedes_the_answer():
    """The LLM broadcasts FunctionCallResultFrame; the TTS forwards it downstream behind the
    audio queued before it, so a processor after the TTS sees it between the two sentences."""
    res = resources()
    res.show("call-1", chart())
    down, _ = await run_test(
        Pipeline([SilentTTS(), VisualizationProcessor(res)]),
        frames_to_send=[
            TTSSpeakFrame("Let me check."),
            result("call-1"),
            TTSSpeakFrame("Here is your chart."),
            SleepFrame(sleep=0.5),
        ],
    )
    relevant = [
        f for f in down if isinstance(f, (TTSAudioRawFrame, FunctionCallResultFrame, OutputTransportMessageFrame))
    ]
    kinds = [type(f).__name__ for f in relevant]
    first_result = kinds.index("FunctionCallResultFrame")
    assert kinds[first_result : first_result + 3] == [
        "FunctionCallResultFrame",
        "OutputTransportMessageFrame",
        "TTSAudioRawFrame",
    ]
    assert "TTSAudioRawFrame" in kinds[:first_result]  # "Let me check." went out before it
    contexts = [f.context_id for f in relevant if isinstance(f, TTSAudioRawFrame)]
    message = messages(down)[0]["data"]
    assert message["utterance_id"] == relevant[first_result + 2].context_id != contexts[0]


async def test_a_result_that_speaks_its_own_sentence_shows_its_picture_just_before_that_audio():
    """With the tool's sentence as the answer (`run_llm=False`, no LLM reply follows), the
    picture still waits for the first audio of the sentence that presents it."""
    res = resources()
    res.show("call-1", chart())
    spoken = FunctionCallResultFrame(
        function_name="generate_chart",
        tool_call_id="call-1",
        arguments={},
        result={"result_id": "r1", "summary": "Here is a bar chart of calls per day."},
    )
    down, _ = await run_test(
        Pipeline([ToolResultSpeech(), SilentTTS(), VisualizationProcessor(res)]),
        frames_to_send=[spoken, SleepFrame(sleep=0.5)],
    )
    relevant = [
        f for f in down if isinstance(f, (TTSAudioRawFrame, FunctionCallResultFrame, OutputTransportMessageFrame))
    ]
    assert [type(f).__name__ for f in relevant] == [
        "FunctionCallResultFrame",
        "OutputTransportMessageFrame",
        "TTSAudioRawFrame",
        "TTSAudioRawFrame",
    ]
    assert relevant[0].properties.run_llm is False  # the LLM is not asked to word it again
    assert messages(down)[0]["data"]["utterance_id"] == relevant[2].context_id
