"""Process metrics: Prometheus text, JSON snapshot, percentiles, resources, errors, isolation."""

import asyncio
import mmap
import socket

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bot.costs import PriceTable
from bot.percentiles import percentile
from bot.providers import price_turn
from bot.records import SessionRecord, TurnLatency, TurnRecord, Usage
from bot.telemetry import Telemetry

pytestmark = pytest.mark.unit

CLOUD = {"stt": "deepgram:nova-3-general", "llm": "openai:gpt-4.1-mini", "tts": "embedded:piper"}


def make_turn(index, *, total=1.0, status="completed", usage=None, duration=5.0):
    usage = usage or Usage(
        llm_prompt_tokens=1200,
        llm_cached_tokens=1000,
        llm_completion_tokens=80,
        stt_audio_seconds=6.0,
        tts_characters=90,
        cpu_seconds={"tts": 0.25},
    )
    turn = TurnRecord(
        turn_id=f"t{index}",
        session_id="s",
        index=index,
        status=status,
        usage=usage,
        providers=CLOUD,
        latency=TurnLatency.from_milestones(
            {
                "vad_stop": 0.2,
                "turn_end": 0.4,
                "llm_first_token": 0.8,
                "tts_first_audio": total - 0.1,
                "bot_audio_sent": total,
            }
        ),
    )
    turn.ended_at = turn.started_at + duration
    turn.cost = price_turn(usage, CLOUD, PriceTable(), transport="websocket", duration_secs=duration)
    return turn


def samples(telemetry: Telemetry) -> dict:
    """(sample name, frozen labels) -> value, from the Prometheus text itself."""
    body, content_type = telemetry.prometheus()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_prometheus_text_has_the_families_and_values():
    telemetry = Telemetry()
    telemetry.session_started("websocket")
    telemetry.session_started("webrtc")
    telemetry.session_ended("webrtc")
    telemetry.record_turn(make_turn(0, total=0.9))
    telemetry.record_turn(make_turn(1, total=1.3, status="interrupted"))
    values = samples(telemetry)

    assert values[("voice_agent_sessions_total", frozenset({("transport", "websocket")}))] == 1
    assert values[("voice_agent_sessions_active", frozenset({("transport", "websocket")}))] == 1
    assert values[("voice_agent_sessions_active", frozenset({("transport", "webrtc")}))] == 0
    assert values[("voice_agent_turns_total", frozenset({("status", "completed")}))] == 1
    assert values[("voice_agent_turns_total", frozenset({("status", "interrupted")}))] == 1
    total = frozenset({("stage", "total")})
    assert values[("voice_agent_turn_stage_seconds_count", total)] == 2
    assert values[("voice_agent_turn_stage_seconds_sum", total)] == pytest.approx(2.2)
    # 0.9 s falls in the 1.0 bucket, 1.3 s only from 1.5 up
    assert values[("voice_agent_turn_stage_seconds_bucket", total | {("le", "1.0")})] == 1
    assert values[("voice_agent_turn_stage_seconds_bucket", total | {("le", "1.5")})] == 2
    vad = frozenset({("stage", "vad_stop")})
    assert values[("voice_agent_turn_stage_seconds_sum", vad)] == pytest.approx(0.4)
    assert values[("voice_agent_llm_tokens_total", frozenset({("kind", "prompt")}))] == 2400
    assert values[("voice_agent_llm_tokens_total", frozenset({("kind", "cached")}))] == 2000
    assert values[("voice_agent_tts_characters_total", frozenset())] == 180
    assert values[("voice_agent_stt_audio_seconds_total", frozenset())] == pytest.approx(12.0)
    assert values[("voice_agent_embedded_cpu_seconds_total", frozenset({("stage", "tts")}))] == 0.5
    llm = values[("voice_agent_cost_usd_total", frozenset({("component", "llm")}))]
    assert llm == pytest.approx(2 * (200 * 0.40 + 1000 * 0.10 + 80 * 1.60) / 1e6)
    assert values[("voice_agent_cost_usd_total", frozenset({("component", "tts")}))] == 0


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50, 95, 99)
    assert percentile([0.3, 0.1, 0.2], 50) == 0.2  # rank ceil(1.5) = 2
    assert percentile([0.3, 0.1, 0.2], 99) == 0.3
    assert percentile([0.7], 1) == 0.7
    assert percentile([], 50) is None


def test_the_pages_tile_and_the_metrics_api_agree_on_the_same_turns():
    """The session summary (the page's "Latency p50" tile) and `/api/metrics` once used two
    formulas and said 2 and 3 for turns of 1..5 s."""
    from bot.sessions import session_summary

    turns = [
        TurnRecord(
            turn_id=f"t{i}",
            session_id="s1",
            index=i,
            started_at=100.0 + i,
            ended_at=101.0 + i,
            latency=TurnLatency.from_milestones({"bot_audio_sent": float(i)}),
        )
        for i in (4, 1, 5, 2, 3)
    ]
    telemetry = Telemetry(window=50)
    for turn in turns:
        telemetry.record_turn(turn)
    tile = session_summary(SessionRecord(session_id="s1", transport="ws", started_at=100.0, turns=turns))
    api = telemetry.snapshot()["latency"]["total"]
    assert (tile["latency_p50"], tile["latency_p95"]) == (api["p50"], api["p95"]) == (3.0, 5.0)


def test_snapshot_latency_over_the_window():
    telemetry = Telemetry(window=20)
    for i in range(25):  # the first 5 fall out of the window
        telemetry.record_turn(make_turn(i, total=0.5 + i / 10))
    snapshot = telemetry.snapshot()
    # window holds totals 1.0 .. 2.9 in 0.1 steps
    assert snapshot["latency"]["total"] == {
        "p50": pytest.approx(1.9),
        "p95": pytest.approx(2.8),
        "p99": pytest.approx(2.9),
        "count": 20,
    }
    assert snapshot["latency"]["vad_stop"]["p50"] == pytest.approx(0.2)
    assert snapshot["turns"] == {"total": 25, "by_status": {"completed": 25}}
    assert snapshot["usage"]["llm_prompt_tokens"] == 25 * 1200  # usage is all-time
    cost = snapshot["cost"]
    assert cost["turns"] == 20
    assert cost["conversation_seconds"] == pytest.approx(20 * 5.0)
    assert cost["total"] == pytest.approx(sum(make_turn(0).cost.total for _ in range(20)))
    assert set(snapshot) == {"uptime_seconds", "sessions", "turns", "latency", "usage", "cost", "resources", "errors"}
    recent = telemetry.recent_turn_latencies(limit=3)
    assert [r["total"] for r in recent] == pytest.approx([2.7, 2.8, 2.9])
    assert set(recent[0]) == {"timestamp", "total", "stages"}


def test_resource_sampling_is_sane_and_peaks_only_go_up():
    telemetry = Telemetry(sample_history=5)
    first = telemetry.sample_resources()
    assert first["rss_bytes"] > 10_000_000
    assert first["threads"] >= 1 and first["open_fds"] >= 3 and first["cpu_percent"] >= 0
    assert first["memory_per_session_bytes"] is None  # no session

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        # Fresh pages from the kernel, written so they are resident (a heap allocation could
        # reuse memory the process already holds, and RSS would not move).
        ballast = mmap.mmap(-1, 64 * 1024 * 1024)
        for offset in range(0, len(ballast), mmap.PAGESIZE):
            ballast[offset] = 1
        telemetry.session_started("websocket")
        loaded = telemetry.sample_resources()
        assert loaded["open_sockets"] >= first["open_sockets"] + 1
        assert loaded["rss_bytes"] >= first["rss_bytes"] + 32 * 1024 * 1024
        assert loaded["memory_per_session_bytes"] >= 32 * 1024 * 1024
        peak = telemetry.snapshot()["resources"]["peak"]
        ballast.close()
    telemetry.session_ended("websocket")

    for _ in range(6):
        telemetry.sample_resources()
        later = telemetry.snapshot()["resources"]["peak"]
        assert all(later[name] >= value for name, value in peak.items())
        peak = later
    resources = telemetry.snapshot()["resources"]
    assert len(resources["history"]) == 5  # bounded by sample_history
    assert resources["current"] == resources["history"][-1]
    assert resources["current"]["timestamp"] > 0
    values = samples(telemetry)
    assert values[("voice_agent_process_peak_rss_bytes", frozenset())] == peak["rss_bytes"]


async def test_sampling_forever_is_cancellable():
    telemetry = Telemetry()
    task = asyncio.create_task(telemetry.sample_resources_forever(interval=0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(telemetry.snapshot()["resources"]["history"]) >= 2


def test_errors_by_kind():
    telemetry = Telemetry()
    for kind in ("stt", "stt", "llm"):
        telemetry.record_error(kind)
    assert telemetry.snapshot()["errors"] == {"stt": 2, "llm": 1}
    values = samples(telemetry)
    assert values[("voice_agent_errors_total", frozenset({("kind", "stt")}))] == 2
    assert values[("voice_agent_errors_total", frozenset({("kind", "llm")}))] == 1


def test_sessions_are_counted():
    telemetry = Telemetry()
    telemetry.session_started("websocket")
    telemetry.session_started("websocket")
    telemetry.session_ended("websocket")
    assert (telemetry.active_sessions, telemetry.total_sessions) == (1, 2)
    assert telemetry.snapshot()["sessions"] == {"active": 1, "total": 2}


def test_instances_do_not_share_a_registry():
    one, two = Telemetry(), Telemetry()
    one.record_turn(make_turn(0))
    one.record_error("tts")
    assert one.registry is not two.registry
    assert ("voice_agent_turns_total", frozenset({("status", "completed")})) in samples(one)
    assert not any(name == "voice_agent_turns_total" for name, _ in samples(two))
    assert two.snapshot()["errors"] == {}
    assert REGISTRY.get_sample_value("voice_agent_errors_total", {"kind": "tts"}) is None


def test_session_peaks_are_tracked_from_start_to_end():
    telemetry = Telemetry()
    telemetry.track_peaks("s1")
    first = telemetry.sample_resources()
    second = telemetry.sample_resources()
    peaks = telemetry.untrack_peaks("s1")
    assert peaks["peak_rss_bytes"] == max(first["rss_bytes"], second["rss_bytes"])
    assert peaks["peak_cpu_percent"] >= 0
    assert telemetry.untrack_peaks("s1") == {}  # no longer tracked
