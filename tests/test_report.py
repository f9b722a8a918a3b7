"""The cost and resource report over a hand-built store, and the `report` CLI command."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT

from bot.percentiles import percentile
from bot.records import Cost, SessionRecord, TurnLatency, TurnRecord, Usage
from bot.report import build_report, render_markdown
from bot.store import create_store

DAY = 86400.0


def turn(session_id: str, index: int, started_at: float, total: float, costs: dict) -> TurnRecord:
    return TurnRecord(
        turn_id=f"{session_id}-{index}",
        session_id=session_id,
        index=index,
        started_at=started_at + index,
        ended_at=started_at + index + 1,
        latency=TurnLatency(stages={"turn_end": 0.4, "llm_first_token": total - 0.4}, total=total),
        usage=Usage(cpu_seconds={"llm": 0.5, "tts": 0.25}),
        cost=Cost(components=costs, total=sum(costs.values())),
        providers={"llm": "embedded:qwen", "tts": "elevenlabs:eleven_flash_v2_5"},
    )


async def fill(path: Path) -> float:
    """Two sessions: "a" 10 days ago (10 min, 15 turns), "b" a day ago (5 min, 5 turns).
    Voice-to-voice totals are 0.05, 0.10, ... 1.00 s over the 20 turns."""
    now = time.time()
    store = create_store(path)
    await store.open()
    a_start, b_start = now - 10 * DAY, now - 1 * DAY
    await store.save_session(
        SessionRecord(
            session_id="a",
            transport="ws",
            started_at=a_start,
            ended_at=a_start + 600,
            state="ended",
            resources={"peak_rss_bytes": 1e9, "peak_cpu_percent": 150.0},
        )
    )
    await store.save_session(
        SessionRecord(
            session_id="b",
            transport="webrtc",
            started_at=b_start,
            ended_at=b_start + 300,
            state="ended",
            resources={"peak_rss_bytes": 2e9, "peak_cpu_percent": 120.0},
        )
    )
    for k in range(20):
        sid, start, index = ("a", a_start, k) if k < 15 else ("b", b_start, k - 15)
        costs = {"llm": 0.002, "tts": 0.001} if sid == "a" else {"tts": 0.001}
        await store.append_turn(turn(sid, index, start, round(0.05 * (k + 1), 2), costs))
    await store.close()
    return now


@pytest.mark.unit
def test_percentile_nearest_rank():
    values = [0.05 * k for k in range(1, 21)]
    assert percentile(values, 50) == values[9]
    assert percentile(values, 95) == values[18]
    assert percentile(values, 99) == values[19]
    assert percentile([3.0], 50) == 3.0 and percentile([], 50) is None


@pytest.mark.unit
async def test_report_totals_sessions_latency_resources(tmp_path):
    path = tmp_path / "records.sqlite3"
    await fill(path)
    store = create_store(path)
    await store.open()
    report = await build_report(store)
    await store.close()

    assert report["sessions"] == 2 and report["turns"] == 20
    assert report["conversation_minutes"] == pytest.approx(15.0)
    costs = report["costs"]
    assert costs["total"] == pytest.approx(15 * 0.003 + 5 * 0.001)
    assert costs["components"]["llm"] == pytest.approx(0.030)
    assert costs["components"]["tts"] == pytest.approx(0.020)
    assert costs["shares_percent"]["llm"] == pytest.approx(60.0)
    assert costs["per_minute"] == pytest.approx(0.05 / 15)
    assert costs["cpu_seconds"] == {"llm": pytest.approx(10.0), "tts": pytest.approx(5.0)}

    rows = {row["session_id"]: row for row in report["per_session"]}
    assert rows["a"]["minutes"] == pytest.approx(10.0) and rows["a"]["turns"] == 15
    assert rows["a"]["cost"] == pytest.approx(0.045)
    assert rows["a"]["cost_per_minute"] == pytest.approx(0.0045)
    assert rows["b"]["cost"] == pytest.approx(0.005) and rows["b"]["transport"] == "webrtc"

    latency = report["latency_seconds"]
    assert list(latency) == ["turn_end", "llm_first_token", "total"]
    assert latency["total"] == {"count": 20, "p50": 0.5, "p95": 0.95, "p99": 1.0}
    assert latency["turn_end"]["p99"] == pytest.approx(0.4)
    assert latency["llm_first_token"]["p50"] == pytest.approx(0.1)

    assert report["resource_peaks"] == {"peak_rss_bytes": 2e9, "peak_cpu_percent": 150.0}
    assert report["period"]["days"] == pytest.approx(9 + 300 / DAY)

    markdown = render_markdown(report)
    for heading in ("# Cost and resource report", "## Costs", "## Per session", "## Latency", "## Resource peaks"):
        assert heading in markdown
    assert "| Component | Cost | Share |" in markdown
    assert "| llm | $0.0300 | 60.0% |" in markdown
    assert "| total | 20 | 500 ms | 950 ms | 1000 ms |" in markdown
    assert "| peak_rss_bytes | 1,907.3 MiB |" in markdown
    assert "| `a` | ws |" in markdown


@pytest.mark.unit
async def test_report_since_days_and_empty_store(tmp_path):
    path = tmp_path / "records.sqlite3"
    await fill(path)
    store = create_store(path)
    await store.open()
    recent = await build_report(store, since_days=5)
    await store.close()
    assert [row["session_id"] for row in recent["per_session"]] == ["b"]
    assert recent["costs"]["total"] == pytest.approx(0.005)
    assert recent["period"]["days"] == pytest.approx(5.0, abs=0.01)

    empty = create_store(tmp_path / "empty.sqlite3")
    await empty.open()
    report = await build_report(empty)
    await empty.close()
    assert report["sessions"] == 0 and report["costs"]["total"] == 0.0
    assert "# Cost and resource report" in render_markdown(report)


@pytest.mark.e2e
async def test_cli_report(tmp_path):
    path = tmp_path / "records.sqlite3"
    await fill(path)
    env = {**os.environ, "AGENT_STORE_PATH": str(path)}
    command = [sys.executable, "-m", "bot", "report"]

    result = subprocess.run(
        [*command, "--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sessions"] == 2 and report["turns"] == 20

    out = tmp_path / "report.md"
    result = subprocess.run(
        [*command, "--out", str(out), "--days", "5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "## Per session" in out.read_text() and "`b`" in out.read_text()

    # Records a newer release wrote: refused in one line that names the file, no traceback.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = version + 1")
    db.close()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"Cannot report: Session store {path} has schema version" in result.stderr
    assert "Traceback" not in result.stderr
