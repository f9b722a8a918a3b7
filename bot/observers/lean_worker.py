"""A `PipelineWorker` whose observers are only told about the events they handle.

Pipecat's `WorkerObserver` gives each observer a queue and a task, and queues every frame
that every processor handles (`on_process_frame`) to every observer, whether or not the
observer does anything with it. None of this project's observers, nor RTVI's, handles that
event, yet it was most of the event loop's work per 20 ms of microphone audio: three
processors see each frame, times four observers, each a queue put and a task wake-up. With
dozens of sessions that fan-out alone kept the loop busy. `on_push_frame` (which they all
use) and the lifecycle events are delivered exactly as before.
"""

from pipecat.observers.base_observer import BaseObserver, FrameProcessed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver


def handles(observer: BaseObserver, event: str) -> bool:
    """Whether the observer's class overrides `BaseObserver`'s no-op handler for `event`."""
    return getattr(type(observer), event) is not getattr(BaseObserver, event)


class HandledEventsObserver(WorkerObserver):
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
        self._observer = HandledEventsObserver(observers=self._observer._observers)
