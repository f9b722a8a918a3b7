"""A `PipelineWorker` whose observers are only told about the events they handle.

Pipecat's `WorkerObserver` gives each observer a queue and a task, and queues every frame
that every processor handles (`on_process_frame`) to every observer, whether or not the
observer does anything with it. None of this project's observers, nor RTVI's, handles that
event, yet it was most of the event loop's work per 20 ms of microphone audio: three
processors see each frame, times four observers, each a queue put and a task wake-up. With
dozens of sessions that fan-out alone kept the loop busy.

Microphone audio is the other bulk: 50 frames a second per session, each pushed by four
processors, and so queued to every observer on its first push and to RTVI's on the three
repeats. No observer of a session reads it (RTVI's skips audio unless it reports audio
levels), so it is not queued to them at all; an observer that wants it says so with
`observes_microphone_audio = True`, and one that says nothing is assumed to. Every other
push, and the lifecycle events, are delivered exactly as before.
"""

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frameworks.rtvi.observer import RTVIObserver

from bot.pipecat_internals import observers_of, reports_audio_levels


def handles(observer: BaseObserver, event: str) -> bool:
    """Whether the observer's class overrides `BaseObserver`'s no-op handler for `event`."""
    return getattr(type(observer), event) is not getattr(BaseObserver, event)


def observes_microphone_audio(observer: BaseObserver) -> bool:
    """Whether the observer may act on a pushed `InputAudioRawFrame`."""
    if isinstance(observer, RTVIObserver):
        return reports_audio_levels(observer)
    return getattr(observer, "observes_microphone_audio", True)


class HandledEventsObserver(WorkerObserver):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._microphone_audio_wanted = any(map(observes_microphone_audio, observers_of(self)))

    def add_observer(self, observer: BaseObserver):
        super().add_observer(observer)
        self._microphone_audio_wanted = any(map(observes_microphone_audio, observers_of(self)))

    async def on_push_frame(self, data: FramePushed):
        if isinstance(data.frame, InputAudioRawFrame) and not self._microphone_audio_wanted:
            return
        await super().on_push_frame(data)

    async def on_process_frame(self, data: FrameProcessed):
        for proxy in (self._proxies or {}).values():
            if handles(proxy.observer, "on_process_frame"):
                await proxy.queue.put(data)


class LeanPipelineWorker(PipelineWorker):
    """`PipelineWorker` with the observers Pipecat and the caller gave it (RTVI's included),
    behind a `HandledEventsObserver`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Swapped before setup, so no proxy or processor has seen the original yet.
        self._observer = HandledEventsObserver(observers=observers_of(self._observer))
