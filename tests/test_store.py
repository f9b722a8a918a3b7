"""The SQLite session store: round trips across restarts, ordering, deletion, pruning,
concurrent writers and durability of a write when the process dies without closing; its schema
migrations; and the interface the rest of the code calls, which the implementation matches."""

import asyncio
import inspect
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from bot.records import Cost, SessionRecord, ToolCall, TurnLatency, TurnRecord, Usage
from bot.store import SCHEMA_VERSION, SchemaTooNewError, SessionStore, create_store, migrations
from bot.store.sqlite import SQLiteSessionStore
from client.server_process import ROOT, start_server

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
    store = create_store(tmp_path / "sub" / "records.sqlite3")
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
    store = create_store(path)
    await store.open()
    await store.save_session(session)
    await store.append_turn(turn1)  # out of order on purpose: reads come back by index
    await store.append_turn(turn0)
    assert await store.add_visualization("s1", {"type": "chart", "points": [1, 2]})
    assert not await store.add_visualization("missing", {"type": "chart"})
    await store.close()
    await store.close()  # idempotent

    reopened = create_store(path)
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
    store = create_store(path)
    await store.open()
    sessions = [f"s{i}" for i in range(10)]
    await asyncio.gather(*(store.save_session(make_session(s, 100.0 + i)) for i, s in enumerate(sessions)))
    await asyncio.gather(*(store.append_turn(make_turn(sessions[n % 10], n // 10)) for n in range(200)))
    await store.close()

    reopened = create_store(path)
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
        from bot.store import create_store
        from tests.test_store import make_session, make_turn

        async def main():
            store = create_store({str(path)!r})
            await store.open()
            await store.save_session(make_session("s1", 100.0))
            await store.append_turn(make_turn("s1", 0))
            os._exit(3)  # die at once: no close, no atexit, no finalizers

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert result.returncode == 3, result.stderr.decode()

    store = create_store(path)
    await store.open()
    loaded = await store.get_session("s1")
    await store.close()
    assert loaded is not None and [t.index for t in loaded.turns] == [0]


@pytest.mark.unit
async def test_closed_store_refuses_calls(tmp_path):
    store = create_store(tmp_path / "r.sqlite3")
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
    store = create_store(path, on_error=errors.append, busy_timeout_ms=50)
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
    store = create_store(path, spool_writes=2, on_error=errors.append, busy_timeout_ms=50)
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
        store = create_store(path, server_id=server)
        await store.open()
        await store.save_session(make_session(session_id, 1000.0))
        await store.append_turn(make_turn(session_id, 0))
        await store.close()
    store = create_store(path, server_id="a")
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
    store = create_store(path)
    await store.open()
    await store.save_session(make_session("s1", 1000.0))
    await store.append_turn(make_turn("s1", 0))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.exists()}
    await store.close()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(modes) == 3 and set(modes.values()) == {0o600}, modes


# --- the schema's versions ---

# What the first release created, verbatim: no end_reason, no server_id.
VERSION_1_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    transport      TEXT NOT NULL,
    started_at     REAL NOT NULL,
    ended_at       REAL,
    state          TEXT NOT NULL,
    providers      TEXT NOT NULL,
    resources      TEXT NOT NULL,
    visualizations TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    cost_total REAL NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (session_id, idx)
);
"""


def write_version_1_file(path, *, version_row: bool = True, added_columns: tuple[str, ...] = ()) -> None:
    """A database as an older release left it: one ended session with two turns and a chart.
    `added_columns` are those the releases before versions were read added without a step."""
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1_SCHEMA)
        for column in added_columns:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
        if version_row:
            db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute(
            "INSERT INTO sessions (session_id, transport, started_at, ended_at, state, providers, resources,"
            " visualizations) VALUES ('old', 'ws', 100.0, 160.0, 'ended', ?, '{}', ?)",
            ('{"llm": "embedded:qwen"}', '[{"type": "chart"}]'),
        )
        for index in (0, 1):
            turn = make_turn("old", index, cost=0.01)
            db.execute("INSERT INTO turns VALUES ('old', ?, ?, ?)", (index, 0.01, turn.model_dump_json()))
    db.close()


def recorded_versions(path) -> list[int]:
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version")]
    db.close()
    return versions


def session_columns(path) -> set[str]:
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    db.close()
    return columns


async def assert_old_session_intact(store: SessionStore) -> None:
    old = await store.get_session("old")
    assert old is not None
    assert (old.state, old.ended_at, old.end_reason) == ("ended", 160.0, None)
    assert old.providers == {"llm": "embedded:qwen"} and old.visualizations == [{"type": "chart"}]
    assert old.turns == [make_turn("old", 0, cost=0.01), make_turn("old", 1, cost=0.01)]
    [summary] = await store.list_sessions()
    assert summary["turns"] == 2 and summary["cost_total"] == pytest.approx(0.02)


@pytest.mark.unit
async def test_a_version_1_database_is_migrated_keeps_its_rows_and_records_the_version(tmp_path):
    path = tmp_path / "records.sqlite3"
    write_version_1_file(path)
    assert SCHEMA_VERSION >= 2 and recorded_versions(path) == [1]

    store = create_store(path, server_id="a")
    await store.open()
    await assert_old_session_intact(store)
    # The columns version 2 added take writes.
    await store.save_session(make_session("new", 200.0, end_reason="client_left"))
    assert (await store.get_session("new")).end_reason == "client_left"
    await store.close()
    assert recorded_versions(path) == [SCHEMA_VERSION]
    assert {"end_reason", "server_id"} <= session_columns(path)

    # Opening again is idempotent: nothing to apply, nothing lost, one version row.
    for _ in range(2):
        again = create_store(path, server_id="a")
        await again.open()
        await again.open()
        assert [s["session_id"] for s in await again.list_sessions()] == ["new", "old"]
        assert len((await again.get_session("old")).turns) == 2
        await again.close()
    assert recorded_versions(path) == [SCHEMA_VERSION]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("version_row", "added_columns"),
    [
        (True, ("end_reason", "server_id")),  # version 1 as the ad-hoc ALTERs left it
        (True, ("end_reason",)),  # a release that had added only end_reason
        (False, ("end_reason", "server_id")),  # tables written, version row not yet
        (False, ()),
    ],
)
async def test_files_written_before_the_version_was_read_are_brought_up_to_date(tmp_path, version_row, added_columns):
    path = tmp_path / "records.sqlite3"
    write_version_1_file(path, version_row=version_row, added_columns=added_columns)
    store = create_store(path)
    await store.open()
    await assert_old_session_intact(store)
    await store.close()
    assert recorded_versions(path) == [SCHEMA_VERSION]
    assert {"end_reason", "server_id"} <= session_columns(path)


@pytest.mark.unit
async def test_a_database_newer_than_the_code_is_refused_naming_file_and_versions(tmp_path):
    path = tmp_path / "records.sqlite3"
    store = create_store(path)
    await store.open()
    await store.save_session(make_session("s1", 100.0))
    await store.close()
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (newer,))
    db.close()

    refused = create_store(path)
    with pytest.raises(SchemaTooNewError) as error:
        await refused.open()
    assert (error.value.path, error.value.found, error.value.supported) == (path, newer, SCHEMA_VERSION)
    message = str(error.value)
    assert str(path) in message and f"version {newer}" in message and f"version {SCHEMA_VERSION}" in message
    with pytest.raises(RuntimeError):  # it stays closed
        await refused.list_sessions()
    await refused.close()
    assert recorded_versions(path) == [newer]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT session_id FROM sessions").fetchall() == [("s1",)]
    db.close()


@pytest.mark.unit
async def test_a_step_that_fails_leaves_the_database_at_the_step_before(tmp_path, monkeypatch):
    path = tmp_path / "records.sqlite3"
    write_version_1_file(path, version_row=True)

    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        raise sqlite3.OperationalError("disk I/O error")

    broken = migrations.Step(SCHEMA_VERSION + 1, "a step that fails half way", half_then_fail)
    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, broken))
    monkeypatch.setattr(migrations, "SCHEMA_VERSION", broken.version)
    store = create_store(path)
    with pytest.raises(sqlite3.OperationalError):
        await store.open()
    # The steps before it landed, each with its version; nothing of the failed one did.
    assert recorded_versions(path) == [SCHEMA_VERSION]
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "half_done" not in tables and {"end_reason", "server_id"} <= session_columns(path)

    monkeypatch.undo()
    await store.open()  # a failed open can be retried
    await assert_old_session_intact(store)
    await store.close()


@pytest.mark.e2e
def test_the_server_refuses_a_newer_database_in_one_clear_line(tmp_path):
    path = tmp_path / "records.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    db.close()
    log = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="server exited"):
        start_server(log, AGENT_STORE_PATH=str(path))
    expected = f"Cannot start: Session store {path} has schema version {SCHEMA_VERSION + 1}"
    assert expected in log.read_text(), log.read_text()[-3000:]


# --- the interface and its SQLite implementation ---


def _public(cls: type) -> dict[str, object]:
    return {name: inspect.getattr_static(cls, name) for name in dir(cls) if not name.startswith("_")}


@pytest.mark.unit
def test_the_sqlite_store_implements_exactly_the_interface():
    """Same names, same parameters, same async-ness: the two cannot drift apart."""
    declared, implemented = _public(SessionStore), _public(SQLiteSessionStore)
    assert set(declared) == set(implemented)
    assert {"open", "close", "spooled", "save_session", "list_sessions"} <= set(declared)
    for name, interface in declared.items():
        sqlite = implemented[name]
        if isinstance(interface, property):
            assert isinstance(sqlite, property), name
            interface, sqlite = interface.fget, sqlite.fget
        assert interface.__doc__, f"SessionStore.{name} says no contract"
        assert inspect.iscoroutinefunction(sqlite) == inspect.iscoroutinefunction(interface), name
        assert inspect.signature(sqlite) == inspect.signature(interface), name


@pytest.mark.unit
def test_the_factory_makes_the_sqlite_store_with_its_options(tmp_path):
    errors: list[str] = []
    store = create_store(tmp_path / "r.sqlite3", spool_writes=3, on_error=errors.append, server_id="a")
    assert isinstance(store, SQLiteSessionStore)
    assert (store.path, store.server_id, store.spooled) == (tmp_path / "r.sqlite3", "a", 0)
    factory = inspect.signature(create_store).parameters
    constructor = inspect.signature(SQLiteSessionStore).parameters
    assert list(factory) == list(constructor)
