"""Session limits: a cap on concurrent sessions, and the idle and maximum-duration deadlines
that end a session with a goodbye (README: Security and limits)."""

import asyncio
import time
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InputTransportMessageFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from bot.settings import Settings

IDLE_TIMEOUT = "idle_timeout"
MAX_DURATION = "max_duration"

# Frames that show someone is taking part: the user speaking or sending a message, or the
# bot starting or finishing an answer (a user listening to a long answer is not idle).
_ACTIVITY = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    InputTransportMessageFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
)


class SessionSlots:
    """Counts sessions over every transport; `acquire` is synchronous, so two connections
    arriving together can never both take the last slot."""

    def __init__(self, limit: int):
        self.limit = limit  # 0: no limit
        self.in_use = 0

    def acquire(self) -> bool:
        if self.limit and self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use = max(0, self.in_use - 1)


EndSession = Callable[[str, str], Awaitable[None]]


class SessionDeadlines(BaseObserver):
    """Watches one session's frames for activity; `watch` calls `end(reason, goodbye)` once the
    session has been idle for `idle_secs` or has lasted `max_secs` (0 disables either)."""

    def __init__(self, *, idle_secs: float, max_secs: float, idle_goodbye: str, max_goodbye: str):
        super().__init__(observe_every_push=False)
        self._idle_secs, self._max_secs = idle_secs, max_secs
        self._goodbyes = {IDLE_TIMEOUT: idle_goodbye, MAX_DURATION: max_goodbye}
        self._started = self._last_activity = time.monotonic()
        self._user_speaking = self._bot_speaking = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionDeadlines":
        return cls(
            idle_secs=settings.idle_timeout_secs,
            max_secs=settings.max_session_secs,
            idle_goodbye=settings.idle_goodbye,
            max_goodbye=settings.max_session_goodbye,
        )

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if not isinstance(frame, _ACTIVITY):
            return
        self._last_activity = time.monotonic()
        if isinstance(frame, (UserStartedSpeakingFrame, UserStoppedSpeakingFrame)):
            self._user_speaking = isinstance(frame, UserStartedSpeakingFrame)
        elif isinstance(frame, (BotStartedSpeakingFrame, BotStoppedSpeakingFrame)):
            self._bot_speaking = isinstance(frame, BotStartedSpeakingFrame)

    def due(self, now: float) -> tuple[str | None, float]:
        """The deadline passed at `now` (or None), and how long until the next one."""
        waits = []
        if self._max_secs:
            left = self._started + self._max_secs - now
            if left <= 0:
                return MAX_DURATION, 0.0
            waits.append(left)
        if self._idle_secs:
            left = self._last_activity + self._idle_secs - now
            # Someone in the middle of speaking is not idle, however long they talk.
            if left <= 0 and not (self._user_speaking or self._bot_speaking):
                return IDLE_TIMEOUT, 0.0
            waits.append(max(left, 0.5))
        return None, min(waits, default=float("inf"))

    async def watch(self, end: EndSession, grace_secs: float, cancel: Callable[[], Awaitable[None]]) -> None:
        """Sleep until a deadline passes, end the session with its goodbye, and cancel it if
        the goodbye has not finished within `grace_secs`. Cancelled when the session ends."""
        while True:
            reason, wait = self.due(time.monotonic())
            if reason:
                break
            if wait == float("inf"):
                return
            await asyncio.sleep(wait)
        await end(reason, self._goodbyes[reason])
        await asyncio.sleep(grace_secs)
        await cancel()
