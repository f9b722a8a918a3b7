"""Session records on disk: an embedded SQLite database, written turn by turn.

Every call runs on one dedicated worker thread that owns the connection, so the writes of all
sessions are serialised without a lock and the event loop never waits on disk. Each write is
its own committed transaction in WAL mode with `synchronous=FULL`: once a call has returned,
its data survives a crash of the process (or of the machine).
"""

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from bot.records import SessionRecord, TurnRecord

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA = """
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
-- A turn is stored whole as JSON; cost_total is copied out so summaries stay in SQL.
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    cost_total REAL NOT NULL,
    record     TEXT NOT NULL,
    PRIMARY KEY (session_id, idx)
);
"""

_SESSION_COLUMNS = (
    "session_id, transport, started_at, ended_at, state, providers, resources, visualizations,"
    " end_reason"
)


class SessionStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    # --- lifecycle ---

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-store")
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created on the worker thread and only ever used there.
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        conn.execute("PRAGMA synchronous=FULL")  # a returned write survives a power cut too
        conn.execute("PRAGMA busy_timeout=5000")  # another process (the CLI report) may read
        conn.executescript(_SCHEMA)
        # Added after the first release: older files gain the column (NULL in old rows).
        if "end_reason" not in {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}:
            conn.execute("ALTER TABLE sessions ADD COLUMN end_reason TEXT")
        with conn:
            if conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        self._conn = conn

    async def close(self) -> None:
        """Wait for every pending write, then close; calling it again does nothing."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # The worker runs jobs in order, so this one runs after every write queued before it.
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("SessionStore is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- writes ---

    async def save_session(self, record: SessionRecord) -> None:
        """Insert or update the session row; its turns are written by `append_turn` only."""
        row = (
            record.session_id,
            record.transport,
            record.started_at,
            record.ended_at,
            record.state,
            json.dumps(record.providers),
            json.dumps(record.resources),
            json.dumps(record.visualizations),
            record.end_reason,
        )
        await self._run(self._save_session, row)

    def _save_session(self, row: tuple) -> None:
        with self._conn:
            # Visualizations only ever grow (see add_visualization), so the longer list is the
            # newer one: a record that never held them in memory cannot erase stored ones.
            self._conn.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET transport = excluded.transport,"
                " started_at = excluded.started_at, ended_at = excluded.ended_at,"
                " state = excluded.state, providers = excluded.providers,"
                " resources = excluded.resources, end_reason = excluded.end_reason,"
                " visualizations = CASE WHEN json_array_length(excluded.visualizations)"
                " >= json_array_length(sessions.visualizations)"
                " THEN excluded.visualizations ELSE sessions.visualizations END",
                row,
            )

    async def append_turn(self, turn: TurnRecord) -> None:
        """Store one turn; writing the same (session, index) again replaces it."""
        row = (turn.session_id, turn.index, turn.cost.total, turn.model_dump_json())
        await self._run(self._append_turn, row)

    def _append_turn(self, row: tuple) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?)", row)

    async def add_visualization(self, session_id: str, visualization: dict) -> bool:
        """Append to the session's visualizations; False when the session is not stored."""
        return await self._run(self._add_visualization, session_id, json.dumps(visualization))

    def _add_visualization(self, session_id: str, visualization: str) -> bool:
        with self._conn:
            cursor = self._conn.execute(
                "UPDATE sessions SET visualizations = json_insert(visualizations, '$[#]', json(?))"
                " WHERE session_id = ?",
                (visualization, session_id),
            )
        return cursor.rowcount > 0

    async def delete_session(self, session_id: str) -> bool:
        return await self._run(self._delete, [session_id]) > 0

    async def prune(self, retention_days: float, now: float | None = None) -> int:
        """Delete sessions that ended (or, never ended, started) over `retention_days` ago."""
        if retention_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - retention_days * 86400
        return await self._run(self._prune, cutoff)

    def _prune(self, cutoff: float) -> int:
        ids = [
            row[0]
            for row in self._conn.execute(
                "SELECT session_id FROM sessions WHERE COALESCE(ended_at, started_at) < ?",
                (cutoff,),
            )
        ]
        return self._delete(ids)

    def _delete(self, session_ids: list[str]) -> int:
        deleted = 0
        with self._conn:  # one transaction: a session never loses its row but keeps turns
            for session_id in session_ids:
                self._conn.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
                cursor = self._conn.execute(
                    "DELETE FROM sessions WHERE session_id = ?", (session_id,)
                )
                deleted += cursor.rowcount
        return deleted

    # --- reads ---

    async def get_session(self, session_id: str) -> SessionRecord | None:
        found = await self._run(self._load, "WHERE session_id = ?", (session_id,))
        return found[0] if found else None

    async def iter_sessions(self, since: float | None = None) -> list[SessionRecord]:
        """Every session (with its turns) started at or after `since`, oldest first."""
        if since is None:
            return await self._run(self._load, "", ())
        return await self._run(self._load, "WHERE started_at >= ?", (since,))

    def _load(self, where: str, params: tuple) -> list[SessionRecord]:
        rows = self._conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {where} ORDER BY started_at", params
        ).fetchall()
        turns = self._conn.execute(
            f"SELECT session_id, record FROM turns WHERE session_id IN"
            f" (SELECT session_id FROM sessions {where}) ORDER BY session_id, idx",
            params,
        ).fetchall()
        by_session: dict[str, list[TurnRecord]] = {}
        for session_id, record in turns:
            by_session.setdefault(session_id, []).append(TurnRecord.model_validate_json(record))
        return [
            SessionRecord(
                session_id=row[0],
                transport=row[1],
                started_at=row[2],
                ended_at=row[3],
                state=row[4],
                providers=json.loads(row[5]),
                resources=json.loads(row[6]),
                visualizations=json.loads(row[7]),
                end_reason=row[8],
                turns=by_session.get(row[0], []),
            )
            for row in rows
        ]

    async def list_sessions(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Summaries, newest first, without loading any turn."""
        return await self._run(self._list, limit, offset)

    def _list(self, limit: int, offset: int) -> list[dict]:
        rows = self._conn.execute(
            "SELECT s.session_id, s.transport, s.state, s.started_at, s.ended_at,"
            " COUNT(t.idx), COALESCE(SUM(t.cost_total), 0.0)"
            " FROM sessions s LEFT JOIN turns t ON t.session_id = s.session_id"
            " GROUP BY s.session_id ORDER BY s.started_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        keys = ("session_id", "transport", "state", "started_at", "ended_at", "turns")
        return [{**dict(zip(keys, row[:6])), "cost_total": row[6]} for row in rows]
