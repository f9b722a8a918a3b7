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


@pytest.mark.unit
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


@pytest.mark.unit
def test_none_of_the_session_observers_handles_processed_frames():
    # The saving rests on this: if one of them starts handling on_process_frame, it still
    # gets the events, but the per-frame fan-out comes back (see bench/capacity.py).
    async def ignore(*_):
        pass

    recovery = FaultRecovery(
        stages={},
        timeouts=StageTimeouts(stt=1, llm=1, tts=1),
        apology=b"",
        apology_sample_rate=24000,
        on_failure=ignore,
    )
    recorder = TurnRecorder(session_id="s", providers={}, engines={}, on_turn=ignore)
    for observer in (recorder, recovery.observer, RTVIObserver(rtvi=None)):
        assert not handles(observer, "on_process_frame")
    assert handles(ProcessWatcher(), "on_process_frame")
    assert handles(PushWatcher(), "on_push_frame")


@pytest.mark.unit
@pytest.mark.asyncio
async def test_microphone_audio_is_not_pushed_past_the_turn_detection():
    audio = InputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    assert await _is_not_microphone_audio(audio) is False
    assert await _is_not_microphone_audio(TextFrame("hi")) is True


class MicrophoneWatcher(BaseObserver):
    def __init__(self, wants_audio: bool | None):
        super().__init__()
        if wants_audio is not None:
            self.observes_microphone_audio = wants_audio
        self.audio = self.texts = 0

    async def on_push_frame(self, data: FramePushed):
        self.audio += isinstance(data.frame, InputAudioRawFrame)
        self.texts += isinstance(data.frame, TextFrame)


async def _push_audio_and_text(observers: list[BaseObserver]) -> None:
    # As the session pipeline runs it: no Pipecat turn-tracking or idle observers.
    worker = LeanPipelineWorker(
        Pipeline([IdentityFilter()]),
        observers=observers,
        enable_turn_tracking=False,
        idle_timeout_secs=None,
    )
    audio = InputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)
    await worker.queue_frames([audio, TextFrame("hello"), EndFrame()])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


@pytest.mark.unit
@pytest.mark.asyncio
async def test_microphone_audio_reaches_observers_only_if_one_may_want_it():
    declined, also_declined = MicrophoneWatcher(False), MicrophoneWatcher(False)
    await _push_audio_and_text([declined, also_declined])
    assert (declined.audio, also_declined.audio) == (0, 0)
    assert declined.texts and also_declined.texts

    # An observer that does not say what it reads gets microphone audio, as in Pipecat.
    declined, silent = MicrophoneWatcher(False), MicrophoneWatcher(None)
    await _push_audio_and_text([declined, silent])
    assert silent.audio > 0 and silent.texts


@pytest.mark.model
def test_no_session_observer_takes_microphone_audio():
    """The real session pipeline (its RTVI observer included) queues no microphone audio to
    its observers; the idle/duration watch is added later, the same way."""
    from bot.limits import SessionDeadlines
    from bot.observers.lean_worker import observes_microphone_audio
    from bot.pipeline import build_worker
    from bot.providers import EmbeddedEngines
    from bot.records import SessionRecord
    from bot.session_resources import SessionResources
    from bot.settings import Settings
    from bot.telemetry import Telemetry
    from evals.text_mode import TextTransport

    async def ignore(*_):
        pass

    settings = Settings(stt_provider="benchmark", llm_provider="benchmark", tts_provider="benchmark")
    worker, _ = build_worker(
        TextTransport(ignore),
        settings,
        EmbeddedEngines(),
        session_id="s",
        on_turn=ignore,
        resources=SessionResources(
            record=SessionRecord(session_id="s", transport="test", started_at=0.0), telemetry=Telemetry()
        ),
    )
    worker.add_observer(SessionDeadlines.from_settings(settings))
    observers = worker._observer._observers
    assert any(isinstance(o, RTVIObserver) for o in observers)
    assert not any(map(observes_microphone_audio, observers)), observers
    assert worker._observer._microphone_audio_wanted is False
