"""The SQLite session store: round trips across restarts, ordering, deletion, pruning,
concurrent writers and durability of a write when the process dies without closing."""

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from bot.records import Cost, SessionRecord, ToolCall, TurnLatency, TurnRecord, Usage
from bot.store import SessionStore
from client.server_process import ROOT

DAY = 86400.0


def make_session(session_id: str, started_at: float, ended_at: float | None = None, **kw):
    state = "ended" if ended_at is not None else "active"
    return SessionRecord(
        session_id=session_id,
        transport="ws",
        started_at=started_at,
        ended_at=ended_at,
        state=state,
        **kw,
    )


def make_turn(session_id: str, index: int, cost: float = 0.001) -> TurnRecord:
    return TurnRecord(
        turn_id=f"{session_id}-{index}",
        session_id=session_id,
        index=index,
        started_at=1000.0 + index,
        ended_at=1001.0 + index,
        user_text=f"question {index}",
        bot_text=f"answer {index}",
        latency=TurnLatency.from_milestones(
            {"vad_stop": 0.3, "turn_end": 0.4, "llm_first_token": 0.8, "bot_audio_sent": 1.1}
        ),
        usage=Usage(llm_prompt_tokens=20, tts_characters=30, cpu_seconds={"llm": 0.5}),
        cost=Cost(components={"llm": cost}, total=cost),
        providers={"llm": "embedded:qwen"},
    )


@pytest.fixture
async def store(tmp_path):
    store = SessionStore(tmp_path / "sub" / "records.sqlite3")
    await store.open()
    yield store
    await store.close()


@pytest.mark.unit
async def test_round_trip_across_restart(tmp_path):
    path = tmp_path / "records.sqlite3"
    session = make_session(
        "s1",
        100.0,
        160.0,
        providers={"llm": "embedded:qwen"},
        resources={"peak_rss_bytes": 1.5e9, "peak_cpu_percent": 180.0},
    )
    turn0 = make_turn("s1", 0)
    turn1 = make_turn("s1", 1).model_copy(
        update={
            "tool_calls": [
                ToolCall(
                    id="c1",
                    name="get_current_time",
                    arguments={"tz": "UTC"},
                    result={"time": "12:00"},
                    duration_secs=0.01,
                )
            ]
        }
    )
    store = SessionStore(path)
    await store.open()
    await store.save_session(session)
    await store.append_turn(turn1)  # out of order on purpose: reads come back by index
    await store.append_turn(turn0)
    assert await store.add_visualization("s1", {"type": "chart", "points": [1, 2]})
    assert not await store.add_visualization("missing", {"type": "chart"})
    await store.close()
    await store.close()  # idempotent

    reopened = SessionStore(path)
    await reopened.open()
    loaded = await reopened.get_session("s1")
    await reopened.close()

    assert loaded is not None
    assert loaded.turns == [turn0, turn1]
    assert loaded.turns[1].tool_calls[0].result == {"time": "12:00"}
    assert loaded.turns[0].latency.total == pytest.approx(1.1)
    assert loaded.visualizations == [{"type": "chart", "points": [1, 2]}]
    assert loaded.model_dump(exclude={"turns", "visualizations"}) == session.model_dump(
        exclude={"turns", "visualizations"}
    )


@pytest.mark.unit
async def test_save_session_keeps_turns_and_visualizations(store):
    session = make_session("s1", 100.0)
    await store.save_session(session)
    await store.append_turn(make_turn("s1", 0))
    await store.add_visualization("s1", {"type": "table"})
    # The final save of a record that holds neither turns nor visualizations erases neither.
    await store.save_session(session.model_copy(update={"ended_at": 200.0, "state": "ended"}))
    loaded = await store.get_session("s1")
    assert (loaded.state, loaded.ended_at) == ("ended", 200.0)
    assert len(loaded.turns) == 1 and loaded.visualizations == [{"type": "table"}]
    assert await store.get_session("missing") is None


@pytest.mark.unit
async def test_list_order_counts_and_delete(store):
    for i, sid in enumerate(["old", "mid", "new"]):
        await store.save_session(make_session(sid, 100.0 * (i + 1), 100.0 * (i + 1) + 50))
        for index in range(i + 1):
            await store.append_turn(make_turn(sid, index, cost=0.01))

    listed = await store.list_sessions()
    assert [s["session_id"] for s in listed] == ["new", "mid", "old"]
    assert [s["turns"] for s in listed] == [3, 2, 1]
    assert listed[0]["cost_total"] == pytest.approx(0.03)
    assert listed[0]["transport"] == "ws" and listed[0]["state"] == "ended"
    assert listed[0]["started_at"] == 300.0 and listed[0]["ended_at"] == 350.0
    assert [s["session_id"] for s in await store.list_sessions(limit=1, offset=1)] == ["mid"]

    assert await store.delete_session("mid") is True
    assert await store.delete_session("mid") is False
    assert await store.get_session("mid") is None
    assert [s["session_id"] for s in await store.list_sessions()] == ["new", "old"]


@pytest.mark.unit
async def test_prune_by_age(store):
    now = 100 * DAY
    await store.save_session(make_session("ended-old", now - 40 * DAY, now - 31 * DAY))
    await store.save_session(make_session("ended-recent", now - 40 * DAY, now - 1 * DAY))
    await store.save_session(make_session("never-ended-old", now - 35 * DAY))
    await store.save_session(make_session("never-ended-new", now - 2 * DAY))
    await store.append_turn(make_turn("ended-old", 0))

    assert await store.prune(0, now=now) == 0  # 0 disables pruning
    assert await store.prune(30, now=now) == 2
    remaining = {s["session_id"] for s in await store.list_sessions()}
    assert remaining == {"ended-recent", "never-ended-new"}
    assert await store.get_session("ended-old") is None


@pytest.mark.unit
async def test_concurrent_appends_all_persisted(tmp_path):
    path = tmp_path / "records.sqlite3"
    store = SessionStore(path)
    await store.open()
    sessions = [f"s{i}" for i in range(10)]
    await asyncio.gather(*(store.save_session(make_session(s, 100.0 + i)) for i, s in enumerate(sessions)))
    await asyncio.gather(*(store.append_turn(make_turn(sessions[n % 10], n // 10)) for n in range(200)))
    await store.close()

    reopened = SessionStore(path)
    await reopened.open()
    loaded = await reopened.iter_sessions()
    await reopened.close()
    assert [s.session_id for s in loaded] == sessions  # oldest first
    for session in loaded:
        assert [t.index for t in session.turns] == list(range(20))


@pytest.mark.unit
async def test_append_is_idempotent(store):
    await store.save_session(make_session("s1", 100.0))
    await store.append_turn(make_turn("s1", 0, cost=0.01))
    await store.append_turn(make_turn("s1", 0, cost=0.02))  # a retry after the turn changed
    loaded = await store.get_session("s1")
    assert len(loaded.turns) == 1 and loaded.turns[0].cost.total == 0.02
    assert (await store.list_sessions())[0]["turns"] == 1


@pytest.mark.unit
async def test_iter_sessions_since(store):
    await store.save_session(make_session("a", 100.0))
    await store.save_session(make_session("b", 200.0))
    await store.append_turn(make_turn("a", 0))
    await store.append_turn(make_turn("b", 0))
    recent = await store.iter_sessions(since=150.0)
    assert [s.session_id for s in recent] == ["b"] and len(recent[0].turns) == 1


@pytest.mark.e2e
async def test_turn_survives_a_crash(tmp_path):
    """A process that appended a turn and died without closing the store loses nothing."""
    path = tmp_path / "records.sqlite3"
    script = textwrap.dedent(
        f"""
        import asyncio, os
        from bot.store import SessionStore
        from tests.test_store import make_session, make_turn

        async def main():
            store = SessionStore({str(path)!r})
            await store.open()
            await store.save_session(make_session("s1", 100.0))
            await store.append_turn(make_turn("s1", 0))
            os._exit(3)  # die at once: no close, no atexit, no finalizers

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert result.returncode == 3, result.stderr.decode()

    store = SessionStore(path)
    await store.open()
    loaded = await store.get_session("s1")
    await store.close()
    assert loaded is not None and [t.index for t in loaded.turns] == [0]


@pytest.mark.unit
async def test_closed_store_refuses_calls(tmp_path):
    store = SessionStore(tmp_path / "r.sqlite3")
    with pytest.raises(RuntimeError):
        await store.list_sessions()
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError):
        await store.append_turn(make_turn("s1", 0))


@pytest.mark.unit
async def test_writes_the_database_refuses_wait_in_order_until_it_is_back(tmp_path):
    path = tmp_path / "records.sqlite3"
    errors: list[str] = []
    store = SessionStore(path, on_error=errors.append, busy_timeout_ms=50)
    await store.open()
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file: every write fails
    try:
        await store.save_session(make_session("s1", 1000.0))  # returns: the session goes on
        for index in range(3):
            await store.append_turn(make_turn("s1", index))
        assert store.spooled == 4
        assert errors and set(errors) == {"store_write"}
    finally:
        blocker.rollback()
        blocker.close()
    for _ in range(100):  # bounded: 10 s; the spool is retried every second
        if not store.spooled:
            break
        await asyncio.sleep(0.1)
    assert store.spooled == 0
    stored = await store.get_session("s1")
    assert [t.index for t in stored.turns] == [0, 1, 2]
    await store.close()


@pytest.mark.unit
async def test_a_full_spool_drops_a_write_and_says_so(tmp_path):
    path = tmp_path / "records.sqlite3"
    errors: list[str] = []
    store = SessionStore(path, spool_writes=2, on_error=errors.append, busy_timeout_ms=50)
    await store.open()
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for index in range(3):
            await store.append_turn(make_turn("s1", index))
        assert store.spooled == 2 and "store_spool_full" in errors
    finally:
        blocker.rollback()
        blocker.close()
    await store.close()  # writes what it kept
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT idx FROM turns ORDER BY idx").fetchall() == [(0,), (1,)]


@pytest.mark.unit
async def test_only_this_servers_unfinished_sessions_are_closed_as_crashed(tmp_path):
    path = tmp_path / "records.sqlite3"
    for server, session_id in (("a", "mine"), ("b", "theirs")):
        store = SessionStore(path, server_id=server)
        await store.open()
        await store.save_session(make_session(session_id, 1000.0))
        await store.append_turn(make_turn(session_id, 0))
        await store.close()
    store = SessionStore(path, server_id="a")
    await store.open()
    assert await store.close_crashed_sessions() == 1
    mine, theirs = await store.get_session("mine"), await store.get_session("theirs")
    assert (mine.state, mine.end_reason, mine.ended_at) == ("ended", "crashed", 1001.0)
    assert (theirs.state, theirs.end_reason) == ("active", None)
    assert await store.close_crashed_sessions() == 0
    await store.close()


@pytest.mark.unit
async def test_records_are_readable_by_their_owner_only(tmp_path):
    import stat

    path = tmp_path / "data" / "sessions.sqlite3"
    store = SessionStore(path)
    await store.open()
    await store.save_session(make_session("s1", 1000.0))
    await store.append_turn(make_turn("s1", 0))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}
    await store.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(modes) == 3 and set(modes.values()) == {0o600}, modes
