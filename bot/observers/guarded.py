"""An observer that survives its own failure on one frame.

Pipecat runs each observer in a task of its own, fed by a queue. An exception from
`on_push_frame` ends that task for the rest of the session: a turn recorder that fails once
records no more turns, a fault watcher apologizes for nothing more, while its queue goes on
filling. Here the failure is logged and counted (`voice_agent_errors_total{kind=
"observer_error"}`) and the next frame is observed as usual.
"""

from collections.abc import Callable

from loguru import logger
from pipecat.observers.base_observer import BaseObserver, FramePushed


class GuardedObserver(BaseObserver):
    def __init__(self, *, on_error: Callable[[str], None] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.on_error = on_error

    async def on_push_frame(self, data: FramePushed):
        try:
            await self.observe(data)
        except Exception:
            logger.exception(f"{type(self).__name__} failed on {type(data.frame).__name__}; goes on")
            if self.on_error:
                self.on_error("observer_error")

    async def observe(self, data: FramePushed) -> None:
        """What the observer does with a pushed frame."""
