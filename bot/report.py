"""The cost and resource report over the stored sessions, as a dict (JSON) or Markdown.

`python -m bot report [--format json|markdown] [--out FILE] [--days N]` prints it.
"""

import time
from datetime import UTC, datetime
from typing import Any

from bot.costs import PriceTable, cost_summary
from bot.percentiles import percentile
from bot.records import MILESTONES, SessionRecord
from bot.store import SessionStore

PERCENTILES = (50, 95, 99)


def session_seconds(session: SessionRecord) -> float:
    """How long a session lasted; one that never ended (a crash) lasted until its last turn."""
    end = session.ended_at
    if end is None:
        end = max((t.ended_at or t.started_at for t in session.turns), default=session.started_at)
    return max(0.0, end - session.started_at)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


async def build_report(
    store: SessionStore, *, since_days: float | None = None, prices: PriceTable | None = None
) -> dict:
    """Everything stored (or the last `since_days` days); `prices` only shapes the advice."""
    now = time.time()
    since = now - since_days * 86400 if since_days else None
    sessions = await store.iter_sessions(since)
    turns = [turn for session in sessions for turn in session.turns]
    seconds = sum(session_seconds(s) for s in sessions)

    start = since if since is not None else min((s.started_at for s in sessions), default=None)
    end = max((s.started_at + session_seconds(s) for s in sessions), default=None)
    if since is not None:
        end = now  # the asked-for window runs up to now, busy or not
    window = (end - start) if start is not None and end is not None else None

    per_session = []
    for s in sessions:
        cost = sum(t.cost.total for t in s.turns)
        minutes = session_seconds(s) / 60
        per_session.append(
            {
                "session_id": s.session_id,
                "transport": s.transport,
                "started_at": _iso(s.started_at),
                "minutes": minutes,
                "turns": len(s.turns),
                "cost": cost,
                "cost_per_minute": cost / minutes if minutes > 0 else None,
            }
        )

    # Latency per stage, in milestone order, then the voice-to-voice total.
    samples: dict[str, list[float]] = {}
    for turn in turns:
        if turn.latency is None:
            continue
        for stage, value in turn.latency.stages.items():
            samples.setdefault(stage, []).append(value)
        if turn.latency.total is not None:
            samples.setdefault("total", []).append(turn.latency.total)
    order = [*MILESTONES, *sorted(set(samples) - {*MILESTONES, "total"}), "total"]
    latency = {
        stage: {"count": len(samples[stage])} | {f"p{p}": percentile(samples[stage], p) for p in PERCENTILES}
        for stage in order
        if stage in samples
    }

    peaks: dict[str, float] = {}
    for s in sessions:
        for name, value in s.resources.items():
            peaks[name] = max(peaks.get(name, value), value)

    return {
        "generated_at": _iso(now),
        "period": {
            "from": _iso(start),
            "to": _iso(end),
            "days": window / 86400 if window is not None else 0.0,
        },
        "sessions": len(sessions),
        "turns": len(turns),
        "conversation_minutes": seconds / 60,
        "costs": cost_summary(turns, seconds, window_seconds=window or None, prices=prices),
        "per_session": per_session,
        "latency_seconds": latency,
        "resource_peaks": peaks,
    }


# --- Markdown ---


def money(value: float | None) -> str:
    """Dollars with 4 decimals, 6 for sub-cent amounts so they never read as zero."""
    if value is None:
        return "-"
    return f"${value:,.4f}" if abs(value) >= 0.01 or value == 0 else f"${value:.6f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return "-" if value is None else str(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _resource(name: str, value: float) -> str:
    if name.endswith("_bytes"):
        return f"{value / 2**20:,.1f} MiB"
    if name.endswith("_percent"):
        return _pct(value)
    return _num(value)


def render_markdown(report: dict) -> str:
    period = report["period"]
    costs = report["costs"]
    out = [
        "# Cost and resource report",
        "",
        f"Period: {period['from'] or '-'} to {period['to'] or '-'}"
        f" ({period['days']:.2f} days); generated {report['generated_at']}.",
        "",
        *_table(
            ["Sessions", "Turns", "Conversation minutes", "Total cost"],
            [
                [
                    str(report["sessions"]),
                    str(report["turns"]),
                    f"{report['conversation_minutes']:.2f}",
                    money(costs.get("total")),
                ]
            ],
        ),
    ]
    out += _render_costs(costs)

    out += ["## Per session", ""]
    out += _table(
        ["Session", "Transport", "Started (UTC)", "Minutes", "Turns", "Cost", "Cost / min"],
        [
            [
                f"`{s['session_id']}`",
                s["transport"],
                s["started_at"],
                f"{s['minutes']:.2f}",
                str(s["turns"]),
                money(s["cost"]),
                money(s["cost_per_minute"]),
            ]
            for s in report["per_session"]
        ],
    )

    out += ["## Latency (end of user speech -> first bot audio)", ""]
    out += _table(
        ["Stage", "Turns", "p50", "p95", "p99"],
        [
            [stage, str(v["count"]), *(_ms(v[f"p{p}"]) for p in PERCENTILES)]
            for stage, v in report["latency_seconds"].items()
        ],
    )

    out += ["## Resource peaks", ""]
    out += _table(
        ["Resource", "Peak"],
        [[name, _resource(name, value)] for name, value in report["resource_peaks"].items()],
    )
    return "\n".join(out)


def _render_costs(costs: dict) -> list[str]:
    out = ["## Costs", ""]
    out += _table(
        ["Component", "Cost", "Share"],
        [[name, money(value), _pct(costs["shares_percent"].get(name))] for name, value in costs["components"].items()]
        + [["**total**", f"**{money(costs['total'])}**", _pct(100.0 if costs["total"] else 0.0)]],
    )
    projection = costs["projection"]
    basis = (
        "at the load observed over the period"
        if costs.get("window_seconds")
        else "for one conversation running nonstop"
    )
    out += _table(
        ["Per turn", "Per conversation minute", "Projected per day", "Projected per month"],
        [
            [
                money(costs["per_turn"]),
                money(costs["per_minute"]),
                money(projection["per_day"]),
                money(projection["per_month"]),
            ]
        ],
    )
    out += [f"Projections are {basis}.", ""]
    if costs["cpu_seconds"]:
        out += ["### CPU (embedded stages)", ""]
        out += _table(
            ["Stage", "CPU seconds", "CPU seconds / conversation minute"],
            [
                [stage, f"{value:.2f}", f"{costs['cpu_seconds_per_minute'].get(stage, 0.0):.2f}"]
                for stage, value in costs["cpu_seconds"].items()
            ],
        )
    if costs["recommendations"]:
        out += ["### Recommendations", ""]
        out += [f"- {line}" for line in costs["recommendations"]] + [""]
    return out
