"""Session limits: a cap on concurrent sessions, what one client may send, and the idle and
maximum-duration deadlines that end a session with a goodbye (docs/operations.md: Limits)."""

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frameworks.rtvi.frames import RTVISendTextFrame

from bot.settings import Settings

IDLE_TIMEOUT = "idle_timeout"
MAX_DURATION = "max_duration"

# Frames that show someone is taking part: the user speaking or typing a message, or the bot
# starting or finishing an answer (a user listening to a long answer is not idle). Other
# client messages do not count: a client that only pings is idle.
_ACTIVITY = (
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    RTVISendTextFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
)


ABUSE = "too many refused messages or too much audio: disconnected"


class TokenBucket:
    """Holds up to `capacity` units and refills at `rate` units a second."""

    def __init__(self, rate: float, capacity: float, now: Callable[[], float] = time.monotonic):
        self.rate, self.capacity = rate, capacity
        self._now = now
        self._tokens, self._at = capacity, now()

    def take(self, amount: float) -> bool:
        """Take `amount` if the bucket holds it; False (and nothing taken) if not."""
        now = self._now()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True


@dataclass(frozen=True)
class Refusal:
    tell: bool  # answer the client with an RTVI error (the same problem at most once a second)
    abusive: bool  # refused in enough separate seconds lately: disconnect the client


class ClientAllowance:
    """What one client may send (typed messages on every transport, WebSocket audio), and how
    much refusing it takes before it is disconnected.

    Audio is a token bucket of seconds: it refills at `audio_rate_limit` times real time and
    holds `audio_rate_limit * audio_rate_window_secs + audio_burst_secs` (8.25 s by default),
    so a client catching up after a network stall is not cut off, and a flood is. A client is
    abusive once it has been refused in `abuse_refusals` different seconds within
    `abuse_window_secs`: one burst of bad input is answered, a sustained one disconnected."""

    # How many distinct problems are remembered for telling each once a second.
    _TOLD_MEMORY = 64

    def __init__(self, settings: Settings, now: Callable[[], float] = time.monotonic):
        self.max_text_chars = settings.max_text_chars
        self._now = now
        self._text = TokenBucket(settings.max_text_per_sec, settings.text_burst, now)
        self._audio = TokenBucket(
            settings.audio_rate_limit,
            settings.audio_rate_limit * settings.audio_rate_window_secs + settings.audio_burst_secs,
            now,
        )
        self._abuse_refusals, self._abuse_window = settings.abuse_refusals, settings.abuse_window_secs
        self._refused_seconds: deque[int] = deque()
        self._abusive = False
        self._told: dict[str, float] = {}
        # How the transport tells and disconnects this client for abuse (WebSocket: an RTVI
        # error, then close code 1008); without one the session is cancelled. A coroutine
        # function: the serializer runs it as a task.
        self.disconnect: Callable[[str], Coroutine[Any, Any, None]] | None = None

    def text_allowed(self) -> bool:
        return self._text.take(1)

    def audio_allowed(self, seconds: float) -> bool:
        return self._audio.take(seconds)

    def refused(self, problem: str) -> Refusal:
        """Note a refusal; `abusive` is True once, when the client is to be disconnected."""
        now = self._now()
        second = math.floor(now)
        if not self._refused_seconds or self._refused_seconds[-1] != second:
            self._refused_seconds.append(second)
        while self._refused_seconds and self._refused_seconds[0] <= now - self._abuse_window:
            self._refused_seconds.popleft()
        tell = now - self._told.get(problem, -math.inf) >= 1.0
        if tell:
            if len(self._told) >= self._TOLD_MEMORY:
                self._told = {p: t for p, t in self._told.items() if now - t < 1.0}
            self._told[problem] = now
        if self._abusive:
            return Refusal(tell=False, abusive=False)  # being disconnected already
        self._abusive = len(self._refused_seconds) >= self._abuse_refusals
        return Refusal(tell=tell, abusive=self._abusive)


class LoopLoad:
    """How loaded the event loop is. Every session's frames, VAD windows and turn logic run on
    this one thread: once it is busy nearly all the time, or wakes up late, each new session
    makes every session slower (the benchmark providers saturate it near 16 sessions on two
    cores, docs/performance.md: Capacity). Sampled every `interval_secs` over the last `window` samples."""

    def __init__(
        self,
        interval_secs: float = 0.1,
        window: int = 30,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,  # CPU time of the loop's own thread
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._clock, self._cpu_clock, self._sleep = clock, cpu_clock, sleep
        self._interval = interval_secs
        self._lateness: deque[float] = deque(maxlen=window)
        self._busy: deque[tuple[float, float]] = deque(maxlen=window + 1)  # (wall, loop CPU)

    async def run(self) -> None:
        """Sample forever; runs on the loop it measures."""
        self._busy.append((self._clock(), self._cpu_clock()))
        while True:
            started = self._clock()
            await self._sleep(self._interval)
            now = self._clock()
            self._lateness.append(max(0.0, now - started - self._interval))
            self._busy.append((now, self._cpu_clock()))

    def late(self) -> float:
        """Seconds the loop wakes up late, at the 90th percentile (one pause, such as a
        garbage collection, is not overload)."""
        if not self._lateness:
            return 0.0
        ordered = sorted(self._lateness)
        return ordered[int(0.9 * (len(ordered) - 1))]

    def busy(self) -> float:
        """Share of the window's wall time the loop's thread spent on the CPU (0-1)."""
        if len(self._busy) < 2:
            return 0.0
        (wall0, cpu0), (wall1, cpu1) = self._busy[0], self._busy[-1]
        return (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else 0.0


class SessionSlots:
    """Counts sessions over every transport and admits a new one only below the limit and
    while the event loop has room; `acquire` is synchronous, so two connections arriving
    together can never both take the last slot."""

    def __init__(
        self,
        limit: int,
        *,
        load: LoopLoad | None = None,
        max_busy: float = 0.0,
        max_late_secs: float = 0.0,
    ):
        self.limit = limit  # 0: no limit
        self.in_use = 0
        self.refusing: str | None = None  # why every new session is refused (a drain), or None
        self._load, self._max_busy, self._max_late = load, max_busy, max_late_secs  # 0: unchecked

    def refusal(self) -> str | None:
        """Why a new session would be refused now, or None. An idle server always admits one:
        whatever loads its loop, it is not its sessions."""
        if self.refusing is not None:
            return self.refusing
        if self.limit and self.in_use >= self.limit:
            return f"the server is at its limit of {self.limit} concurrent sessions; try again later"
        if self._load is None or not self.in_use:
            return None
        if self._max_busy and (busy := self._load.busy()) > self._max_busy:
            return f"the server is overloaded (its event loop is {100 * busy:.0f}% busy); try again later"
        if self._max_late and (late := self._load.late()) > self._max_late:
            return f"the server is overloaded (its event loop runs {1000 * late:.0f} ms late); try again later"
        return None

    def stop_admitting(self, reason: str) -> None:
        """Refuse every session from now on (the server is draining), saying `reason`."""
        self.refusing = reason

    def acquire(self) -> str | None:
        """Take a slot; returns why not (see `refusal`), or None when taken."""
        if problem := self.refusal():
            return problem
        self.in_use += 1
        return None

    def release(self) -> None:
        self.in_use = max(0, self.in_use - 1)


EndSession = Callable[[str, str], Awaitable[None]]


class SessionDeadlines(BaseObserver):
    """Watches one session's frames for activity; `watch` calls `end(reason, goodbye)` once the
    session has been idle for `idle_secs` or has lasted `max_secs` (0 disables either)."""

    observes_microphone_audio = False  # see bot/observers/lean_worker.py

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
