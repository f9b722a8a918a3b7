"""The lean worker tells each observer about the events it handles, and only those."""

import pytest
from pipecat.frames.frames import EndFrame, InputAudioRawFrame, TextFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frameworks.rtvi.observer import RTVIObserver
from pipecat.workers.runner import WorkerRunner

from bot.observers.lean_worker import HandledEventsObserver, LeanPipelineWorker, handles
from bot.observers.turn_recorder import TurnRecorder
from bot.pipeline import _is_not_microphone_audio
from bot.processors.fault_recovery import FaultRecovery, StageTimeouts


class PushWatcher(BaseObserver):
    def __init__(self):
        super().__init__()
        self.texts: list[str] = []

    async def on_push_frame(self, data: FramePushed):
        if isinstance(data.frame, TextFrame):
            self.texts.append(data.frame.text)


class ProcessWatcher(BaseObserver):
    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    async def on_process_frame(self, data: FrameProcessed):
        if isinstance(data.frame, TextFrame):
            self.seen.append((data.processor.name, data.frame.text))


@pytest.mark.asyncio
async def test_each_observer_gets_the_events_it_handles():
    pushes, processing = PushWatcher(), ProcessWatcher()
    identity = IdentityFilter(name="identity")
    worker = LeanPipelineWorker(Pipeline([identity]), observers=[pushes, processing])
    await worker.queue_frames([TextFrame("hello"), EndFrame()])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()

    assert isinstance(worker._observer, HandledEventsObserver)
    # Each push of the frame reaches the push watcher (it observes every push).
    assert pushes.texts and set(pushes.texts) == {"hello"}
    assert ("identity", "hello") in processing.seen


def test_none_of_the_session_observers_handles_processed_frames():
    # The saving rests on this: if one of them starts handling on_process_frame, it still
    # gets the events, but the per-frame fan-out comes back (see bench/capacity.py).
    async def ignore(*_):
        pass

    recovery = FaultRecovery(
        stages={}, timeouts=StageTimeouts(stt=1, llm=1, tts=1), apology=b"",
        apology_sample_rate=24000, on_failure=ignore,
    )
    recorder = TurnRecorder(session_id="s", providers={}, engines={}, on_turn=ignore)
    for observer in (recorder, recovery.observer, RTVIObserver(rtvi=None)):
        assert not handles(observer, "on_process_frame")
    assert handles(ProcessWatcher(), "on_process_frame")
    assert handles(PushWatcher(), "on_push_frame")


@pytest.mark.asyncio
async def test_microphone_audio_is_not_pushed_past_the_turn_detection():
    audio = InputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    assert await _is_not_microphone_audio(audio) is False
    assert await _is_not_microphone_audio(TextFrame("hi")) is True
