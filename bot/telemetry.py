"""Process-wide metrics: sessions, turns, stage latencies, usage, cost, errors and resources.

The server creates one `Telemetry` and serves it as Prometheus text (`GET /metrics`) and as JSON
(`GET /api/metrics`). Each instance has its own registry, so tests and several servers in one
process never see each other's numbers.
"""

import asyncio
import math
import os
import time
from collections import Counter as Tally
from collections import deque

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bot.costs import COMPONENTS, PriceTable, cost_summary
from bot.percentiles import percentile
from bot.records import TurnRecord, Usage

# Voice-to-voice budgets are around a second: fine steps below it, coarse ones up to the
# point where a turn has clearly failed.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
RESOURCES = {
    "cpu_percent": "Process CPU percent since the previous sample (100 = one core).",
    "rss_bytes": "Process resident memory.",
    "threads": "Process threads.",
    "open_sockets": "Open sockets of the process (connections and listeners).",
    "open_fds": "Open file descriptors of the process.",
    "memory_per_session_bytes": "RSS above the idle baseline divided by active sessions.",
}
HISTORY_IN_SNAPSHOT = 60


TRACKED_PEAKS = ("cpu_percent", "rss_bytes")


def _open_sockets() -> int:
    # The process's own descriptors: psutil's net_connections parses the whole machine's
    # socket tables, which took ~15 ms of the event loop per sample under load.
    fds = "/proc/self/fd"
    count = 0
    for name in os.listdir(fds):
        try:
            count += os.readlink(f"{fds}/{name}").startswith("socket:")
        except OSError:  # closed while listing
            pass
    return count


class Telemetry:
    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        window: int = 500,
        sample_history: int = 600,
        prices: PriceTable | None = None,
    ):
        self.registry = registry or CollectorRegistry()
        self._prices = prices or PriceTable()
        self._started = time.time()
        self._active: Tally[str] = Tally()
        self._total_sessions = 0
        self._turn_count = 0
        self._by_status: Tally[str] = Tally()
        self._errors: Tally[str] = Tally()
        self._usage = Usage()
        self._turns: deque[TurnRecord] = deque(maxlen=window)
        self._history: deque[dict] = deque(maxlen=sample_history)
        self._peak: dict[str, float] = {}
        self._tracked: dict[str, dict[str, float]] = {}  # key -> peaks since tracking began
        self._baseline_rss: int | None = None
        self._process = psutil.Process()
        self._process.cpu_percent()  # the first call only starts psutil's measuring interval

        def counter(name, doc, labels=()):
            return Counter(name, doc, labels, registry=self.registry)

        def gauge(name, doc, labels=()):
            return Gauge(name, doc, labels, registry=self.registry)

        self._m_active = gauge("voice_agent_sessions_active", "Sessions now open.", ["transport"])
        self._m_sessions = counter("voice_agent_sessions", "Sessions started.", ["transport"])
        self._m_turns = counter("voice_agent_turns", "Turns finished.", ["status"])
        self._m_latency = Histogram(
            "voice_agent_turn_stage_seconds",
            "Seconds per turn stage after the end of user speech; stage=total is voice-to-voice, stage=answer the first audio of the answer.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._m_tokens = counter("voice_agent_llm_tokens", "LLM tokens.", ["kind"])
        self._m_characters = counter("voice_agent_tts_characters", "Characters sent to the TTS.")
        self._m_audio = counter("voice_agent_stt_audio_seconds", "Seconds of audio transcribed.")
        self._m_cpu = counter("voice_agent_embedded_cpu_seconds", "CPU seconds of embedded engines.", ["stage"])
        self._m_cost = counter("voice_agent_cost_usd", "Provider fees in US dollars.", ["component"])
        self._m_errors = counter("voice_agent_errors", "Errors by kind.", ["kind"])
        self._m_resources = {name: gauge(f"voice_agent_process_{name}", doc) for name, doc in RESOURCES.items()}
        self._m_peaks = {
            name: gauge(f"voice_agent_process_peak_{name}", f"Peak of: {doc}") for name, doc in RESOURCES.items()
        }

    # --- sessions ---
    def session_started(self, transport: str) -> None:
        self._active[transport] += 1
        self._total_sessions += 1
        self._m_active.labels(transport).set(self._active[transport])
        self._m_sessions.labels(transport).inc()

    def session_ended(self, transport: str) -> None:
        self._active[transport] = max(self._active[transport] - 1, 0)
        self._m_active.labels(transport).set(self._active[transport])

    @property
    def active_sessions(self) -> int:
        return sum(self._active.values())

    @property
    def total_sessions(self) -> int:
        return self._total_sessions

    # --- turns and errors ---
    def record_turn(self, turn: TurnRecord) -> None:
        """Count a finished turn; its `cost` must already be priced (`bot.providers.price_turn`)."""
        self._turn_count += 1
        self._by_status[turn.status] += 1
        self._m_turns.labels(turn.status).inc()
        self._turns.append(turn)
        for stage, seconds in self._stages(turn).items():
            self._m_latency.labels(stage).observe(seconds)

        usage, totals = turn.usage, self._usage
        totals.llm_prompt_tokens += usage.llm_prompt_tokens
        totals.llm_completion_tokens += usage.llm_completion_tokens
        totals.llm_cached_tokens += usage.llm_cached_tokens
        totals.tts_characters += usage.tts_characters
        totals.stt_audio_seconds += usage.stt_audio_seconds
        self._m_tokens.labels("prompt").inc(usage.llm_prompt_tokens)
        self._m_tokens.labels("completion").inc(usage.llm_completion_tokens)
        self._m_tokens.labels("cached").inc(usage.llm_cached_tokens)
        self._m_characters.inc(usage.tts_characters)
        self._m_audio.inc(usage.stt_audio_seconds)
        for stage, seconds in usage.cpu_seconds.items():
            totals.cpu_seconds[stage] = totals.cpu_seconds.get(stage, 0.0) + seconds
            self._m_cpu.labels(stage).inc(seconds)
        for component in COMPONENTS:
            self._m_cost.labels(component).inc(turn.cost.components.get(component, 0.0))

    def record_error(self, kind: str) -> None:
        self._errors[kind] += 1
        self._m_errors.labels(kind).inc()

    @staticmethod
    def _stages(turn: TurnRecord) -> dict[str, float]:
        if turn.latency is None:
            return {}
        stages = dict(turn.latency.stages)
        if turn.latency.total is not None:
            stages["total"] = turn.latency.total
        if turn.latency.answer is not None:
            stages["answer"] = turn.latency.answer
        return stages

    def recent_turn_latencies(self, limit: int = 50) -> list[dict]:
        recent = [(t, t.latency) for t in self._turns if t.latency is not None][-limit:]
        return [
            {
                "timestamp": t.ended_at or t.started_at,
                "total": latency.total,
                "stages": dict(latency.stages),
            }
            for t, latency in recent
        ]

    # --- resources ---
    def sample_resources(self) -> dict:
        process = self._process
        with process.oneshot():
            values = {
                "cpu_percent": process.cpu_percent(),
                "rss_bytes": process.memory_info().rss,
                "threads": process.num_threads(),
                "open_sockets": _open_sockets(),
                "open_fds": process.num_fds(),
            }
        active = self.active_sessions
        if self._baseline_rss is None and active == 0:
            self._baseline_rss = values["rss_bytes"]
        values["memory_per_session_bytes"] = (
            max(values["rss_bytes"] - self._baseline_rss, 0) / active
            if active and self._baseline_rss is not None
            else None
        )
        for name, value in values.items():
            # NaN is Prometheus' "no value"; an estimate without sessions has none.
            self._m_resources[name].set(math.nan if value is None else value)
            if value is not None and value > self._peak.get(name, -math.inf):
                self._peak[name] = value
                self._m_peaks[name].set(value)
        for peaks in self._tracked.values():
            for name in TRACKED_PEAKS:
                peaks[f"peak_{name}"] = max(peaks.get(f"peak_{name}", 0.0), float(values[name]))
        self._history.append({"timestamp": time.time(), **values})
        return values

    def track_peaks(self, key: str) -> None:
        """Start keeping the process's peak CPU and RSS while `key` (a session) lives."""
        self._tracked[key] = {}

    def untrack_peaks(self, key: str) -> dict[str, float]:
        """The peaks seen since `track_peaks(key)`: {'peak_cpu_percent', 'peak_rss_bytes'}."""
        return self._tracked.pop(key, {})

    async def sample_resources_forever(self, interval: float = 1.0) -> None:
        while True:
            self.sample_resources()
            await asyncio.sleep(interval)

    # --- exports ---
    def snapshot(self) -> dict:
        """Everything as JSON. Latency percentiles and cost cover the last `window` turns. The
        cost's talk time is the sum of those turns' durations (user turn start to the turn's
        end, pauses between turns excluded), and its projections extrapolate the wall-clock
        span those turns were observed in (server uptime until turns start falling out of the
        window), so they are the cost per day at the observed load."""
        now = time.time()
        turns = list(self._turns)
        latency = {}
        stages = [self._stages(t) for t in turns]
        for stage in sorted({name for turn in stages for name in turn}):
            values = [turn[stage] for turn in stages if stage in turn]
            latency[stage] = {
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "p99": percentile(values, 99),
                "count": len(values),
            }
        talk = sum((t.ended_at - t.started_at) for t in turns if t.ended_at is not None)
        observed_since = turns[0].started_at if self._turn_count > len(turns) else self._started
        history = list(self._history)[-HISTORY_IN_SNAPSHOT:]
        return {
            "uptime_seconds": now - self._started,
            "sessions": {"active": self.active_sessions, "total": self.total_sessions},
            "turns": {"total": self._turn_count, "by_status": dict(self._by_status)},
            "latency": latency,
            "usage": self._usage.model_dump(),
            "cost": cost_summary(turns, talk, window_seconds=now - observed_since, prices=self._prices),
            "resources": {
                "current": history[-1] if history else None,
                "peak": dict(self._peak),
                "history": history,
            },
            "errors": dict(self._errors),
        }

    def prometheus(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
