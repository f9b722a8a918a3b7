"""Live figures that really exist on this server, as time series ready to chart.

- latency: voice-to-voice time of the server's recent turns (all sessions), from telemetry.
- server_sessions: sessions open now and started since the server began. Telemetry keeps no history
  of these counts, so this is the current value only (one timestamp).
- cpu, memory: the process's resource samples (the server samples them every second).
- this_session: this session's finished turns: words per side, tool calls.

Nothing is estimated or invented: with no data yet, the summary says so and nothing is kept.
"""

import asyncio
import re
import time
from collections import Counter
from datetime import datetime
from typing import Any

from pipecat.adapters.llm.schemas.direct_function import tool_options
from pipecat.services.llm_service import FunctionCallParams

from bot.conversation import Messages, current_request
from bot.percentiles import percentile
from bot.routing_hints import argument_choices, only_choice, requested_when, routing_constraint, routing_examples
from bot.session_resources import SessionResources
from bot.tools.results import (
    MAX_POINTS,
    build_figure,
    keep_and_show,
    resources_for_a_result,
    rounded,
    spoken_number,
)

METRICS = ("latency", "server_sessions", "cpu", "memory", "this_session")
MIB = 1024 * 1024


class NoData(Exception):
    """Nothing measured yet; its message is the honest summary."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _span(seconds: float) -> str:
    """A duration as spoken: '45 seconds', '3 minutes', '2 hours'."""
    seconds = max(seconds, 0)
    if seconds < 120:
        return _plural(round(seconds), "second")
    if seconds < 7200:
        return _plural(round(seconds / 60), "minute")
    return _plural(round(seconds / 3600), "hour")


def _over(timestamps: list[float]) -> str:
    """The window samples cover, as a phrase: 'over the last 59 seconds'."""
    seconds = timestamps[-1] - timestamps[0]
    if seconds < 1:
        return f"across the last {len(timestamps)} samples"
    return f"over the last {_span(seconds)}"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _date_axis(timestamps: list[float]) -> list[str]:
    """Server-local times Plotly reads as a date axis."""
    return [datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") for ts in timestamps]


def _series_result(
    title: str,
    timestamps: list[float],
    series: list[dict[str, Any]],
    summary: str,
    key_figures: dict[str, Any],
    *,
    chart_type: str = "line",
    y_title: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """A kept result's data; `chart` says how `_figure` draws it (in a worker thread)."""
    return {
        "title": title,
        "timestamps": timestamps,
        "labels": [_clock(ts) for ts in timestamps],
        "series": series,
        "summary": summary,
        "key_figures": key_figures,
        "chart": {"chart_type": chart_type, "y_title": y_title},
        **extra,
    }


def _figure(result: dict[str, Any]) -> dict[str, Any]:
    chart = result["chart"]
    line = chart["chart_type"] == "line"
    return build_figure(
        chart["chart_type"],
        result["title"],
        result["labels"],
        result["series"],
        x=_date_axis(result["timestamps"]) if line else None,
        y_title=chart["y_title"],
    )


def _latency(resources: SessionResources) -> dict[str, Any]:
    rows = [r for r in resources.telemetry.recent_turn_latencies(MAX_POINTS) if r["total"] is not None]
    if not rows:
        raise NoData("No reply latencies have been recorded on this server yet.")
    values = [float(r["total"]) for r in rows]
    median = percentile(values, 50)
    assert median is not None  # None only without values, and `rows` has some
    fastest, slowest = min(values), max(values)
    if len(values) == 1:
        summary = f"The one recorded turn on this server took {spoken_number(values[0])} seconds to reply."
    else:
        summary = (
            f"Over the last {len(values)} turns on this server, replies took "
            f"{spoken_number(median)} seconds at the median, from {spoken_number(fastest)} "
            f"to {spoken_number(slowest)} seconds."
        )
    return _series_result(
        "Reply latency (end of speech to first audio)",
        [float(r["timestamp"]) for r in rows],
        [{"name": "seconds", "values": values}],
        summary,
        {
            "turns": len(values),
            "median_seconds": rounded(median),
            "fastest_seconds": rounded(fastest),
            "slowest_seconds": rounded(slowest),
            "latest_seconds": rounded(values[-1]),
        },
        y_title="seconds",
        stages=[r["stages"] for r in rows],
    )


def _sessions(resources: SessionResources) -> dict[str, Any]:
    active, total = resources.telemetry.active_sessions, resources.telemetry.total_sessions
    verb = "is" if active == 1 else "are"
    summary = (
        f"There {verb} {_plural(active, 'active session')} right now, and "
        f"{_plural(total, 'session')} started since the server began."
    )
    return _series_result(
        "Sessions",
        [time.time()],
        [{"name": "active", "values": [active]}, {"name": "started", "values": [total]}],
        summary,
        {"active": active, "total": total},
        chart_type="bar",
        y_title="sessions",
    )


def _resource_history(resources: SessionResources) -> list[dict[str, Any]]:
    # Telemetry has no public accessor for its sample history; its snapshot carries the
    # newest samples (one a second while the server's sampler runs).
    history = resources.telemetry.snapshot()["resources"]["history"]
    return [h for h in history if h.get("timestamp") is not None][-MAX_POINTS:]


def _cpu(resources: SessionResources) -> dict[str, Any]:
    history = [h for h in _resource_history(resources) if h.get("cpu_percent") is not None]
    if not history:
        raise NoData("No CPU samples have been taken on this server yet.")
    values = [float(h["cpu_percent"]) for h in history]
    timestamps = [float(h["timestamp"]) for h in history]
    average, peak = sum(values) / len(values), max(values)
    if len(values) == 1:
        summary = (
            f"The server process is using {spoken_number(round(values[0], 1))} percent CPU, "
            "where 100 percent is one full core."
        )
    else:
        summary = (
            f"{_over(timestamps).capitalize()}, the server process used "
            f"{spoken_number(round(average, 1))} percent CPU on average and "
            f"{spoken_number(round(peak, 1))} at the "
            "peak, where 100 percent is one full core."
        )
    return _series_result(
        "Server CPU",
        timestamps,
        [{"name": "CPU percent", "values": values}],
        summary,
        {
            "samples": len(values),
            "latest_percent": rounded(values[-1], 1),
            "average_percent": rounded(average, 1),
            "peak_percent": rounded(peak, 1),
        },
        y_title="percent of one core",
    )


def _memory(resources: SessionResources) -> dict[str, Any]:
    history = [h for h in _resource_history(resources) if h.get("rss_bytes") is not None]
    if not history:
        raise NoData("No memory samples have been taken on this server yet.")
    values = [float(h["rss_bytes"]) / MIB for h in history]
    timestamps = [float(h["timestamp"]) for h in history]
    latest, peak = values[-1], max(values)
    summary = f"The server process is using {spoken_number(round(latest))} megabytes of memory"
    if len(values) > 1:
        summary += f", and at most {spoken_number(round(peak))} {_over(timestamps)}"
    key_figures = {
        "samples": len(values),
        "latest_mb": rounded(latest, 1),
        "peak_mb": rounded(peak, 1),
    }
    per_session = history[-1].get("memory_per_session_bytes")
    if per_session is not None:
        key_figures["per_session_mb"] = rounded(per_session / MIB, 1)
    return _series_result(
        "Server memory",
        timestamps,
        [{"name": "resident memory (MiB)", "values": values}],
        summary + ".",
        key_figures,
        y_title="MiB",
    )


def _session_stats(resources: SessionResources) -> dict[str, Any]:
    turns = resources.record.turns[-MAX_POINTS:]
    if not turns:
        raise NoData("This session has no finished turns yet.")
    user_words = [len(t.user_text.split()) for t in turns]
    bot_words = [len(t.bot_text.split()) for t in turns]
    tools = Counter(call.name for t in resources.record.turns for call in t.tool_calls)
    all_turns = resources.record.turns
    total_user = sum(len(t.user_text.split()) for t in all_turns)
    total_bot = sum(len(t.bot_text.split()) for t in all_turns)
    tool_calls = sum(tools.values())
    summary = (
        f"This session has {_plural(len(all_turns), 'finished turn')} so far: you said "
        f"{_plural(total_user, 'word')}, I said {total_bot}, and I made "
        f"{_plural(tool_calls, 'tool call')}."
    )
    result = _series_result(
        "Words per turn in this session",
        [t.started_at for t in turns],
        [{"name": "your words", "values": user_words}, {"name": "my words", "values": bot_words}],
        summary,
        {
            "turns": len(all_turns),
            "user_words": total_user,
            "bot_words": total_bot,
            "tool_calls": tool_calls,
        },
        chart_type="bar",
        y_title="words",
        tool_calls_by_name=dict(tools),
        interrupted_turns=sum(t.status == "interrupted" for t in all_turns),
    )
    result["labels"] = [f"Turn {t.index}" for t in turns]  # clearer than clock times here
    return result


_BUILDERS = {
    "latency": _latency,
    "server_sessions": _sessions,
    "cpu": _cpu,
    "memory": _memory,
    "this_session": _session_stats,
}


# What this tool can report is named by one of these; "Can you say that again more slowly?"
# is answered without it.
ASKS_FOR_LIVE_DATA = (
    r"\b(cpu|processors?+|load|memory|ram|servers?+|sessions?+|latency|latencies|respon\w*+"
    r"|repl(y|ies|ied|ying)|answers?+|fast|slow|quick(ly)?+|speed|users?+|people|connected|online"
    r"|turns?+|messages?+|words?+|tool calls?+|stats|statistics|live|real-?+time|usage|busy|uptime"
    r"|performance|telemetry|running)\b"
)

# The words that name each metric; a request that names one metric's alone calls with it.
METRIC_CUES = {
    "memory": re.compile(r"\b(?:memory|ram)\b", re.IGNORECASE),
    "cpu": re.compile(r"\b(?:cpu|processors?+|load)\b", re.IGNORECASE),
    "server_sessions": re.compile(r"\b(?:sessions?+|users?+|people|connected|online)\b", re.IGNORECASE),
    "latency": re.compile(
        r"\b(?:latency|latencies|respon\w*+|repl(?:y|ies|ied|ying)|answers?+|fast|slow|quick(?:ly)?+|speed)\b",
        re.IGNORECASE,
    ),
    "this_session": re.compile(r"\b(?:words?+|turns?+|messages?+)\b", re.IGNORECASE),
}


def metric_constraint(messages: Messages, parameters: dict[str, Any]) -> dict[str, Any]:
    """A request whose words name one metric ("How much memory ...") calls with it, with
    nothing left to decode; one naming several, or none, is the model's to read."""
    request = current_request(messages)
    named = [metric for metric, cue in METRIC_CUES.items() if cue.search(request)]
    return only_choice(parameters, metric=named[0]) if len(named) == 1 else parameters


@tool_options(timeout_secs=3.0)
@argument_choices(metric=METRICS)
@routing_constraint(requested_when(ASKS_FOR_LIVE_DATA))
@routing_constraint(metric_constraint)
@routing_examples(
    ("How fast have your replies been?", {"metric": "latency"}),
    ("What's the processor load right now?", {"metric": "cpu"}),
    ("How much memory is the server using?", {"metric": "memory"}),
    ("How many people are using the server?", {"metric": "server_sessions"}),
    ("How many words have I said so far?", {"metric": "this_session"}),
)
async def get_realtime_data(params: FunctionCallParams, metric: str = "latency"):
    """Get live figures about you and your server (reply latency, sessions, CPU, memory) or about this session (turns, words), with a chart.

    Args:
        metric: latency, server_sessions, cpu, memory or this_session (its turns and words).
    """
    resources = await resources_for_a_result(params, "live data")
    if resources is None:
        return
    metric = (metric or "latency").strip().lower()
    if metric not in METRICS:
        await params.result_callback({"error": f"unknown metric {metric!r}; use {', '.join(METRICS)}"})
        return
    try:
        # On the event loop: telemetry's deques are appended there, and these are small.
        result = _BUILDERS[metric](resources)
    except NoData as e:
        await params.result_callback({"summary": str(e), "key_figures": {}})
        return
    key_figures = result.pop("key_figures")
    result["figure"] = await asyncio.to_thread(_figure, result)
    del result["chart"]
    result["metric"] = metric
    result_id = keep_and_show(
        params,
        resources,
        kind="live-data",
        visualization_type="live-data",
        data=result,
        extra={"metric": metric},
    )
    await params.result_callback({"result_id": result_id, "summary": result["summary"], "key_figures": key_figures})
