"""The session store on SQLite: an embedded database file, written turn by turn.

Every call runs on one dedicated worker thread that owns the connection, so the writes of all
sessions are serialised without a lock and the event loop never waits on disk. Each write is
its own committed transaction in WAL mode with `synchronous=FULL`: once it has been written,
its data survives a crash of the process (or of the machine).

A write the database refuses (a locked file, a full disk) never fails the session that made
it: it waits in a bounded spool, in order, with every write after it, and is retried until
the database takes it. Each failure is logged and counted; only a full spool drops a write,
and says so.

The schema is brought to the current version on open (`migrations.py`).
"""

import asyncio
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from bot.records import SessionRecord, TurnRecord
from bot.store.migrations import migrate

T = TypeVar("T")

_SESSION_COLUMNS = (
    "session_id, transport, started_at, ended_at, state, providers, resources, visualizations, end_reason"
)


RETRY_SECS = 1.0  # between attempts to write the spool while the database refuses


class SQLiteSessionStore:
    def __init__(
        self,
        path: Path,
        *,
        spool_writes: int = 1000,
        on_error: Callable[[str], None] | None = None,
        busy_timeout_ms: int = 5000,
        server_id: str | None = None,
    ):
        """`spool_writes` (AGENT_STORE_SPOOL_WRITES) bounds the writes kept while the
        database refuses them; `on_error` hears of each failure ("store_write") and of each
        write dropped from a full spool ("store_spool_full"). `server_id` names the server
        whose sessions these are (several may share one database)."""
        self.path = Path(path)
        self.server_id = server_id  # written on every session row this store saves
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._spool: deque[tuple[Callable, tuple]] = deque()
        self._spool_limit = spool_writes
        self._on_error = on_error or (lambda _kind: None)
        self._busy_timeout_ms = busy_timeout_ms
        self._retry: asyncio.Task | None = None

    @property
    def spooled(self) -> int:
        """Writes waiting for the database to take them."""
        return len(self._spool)

    # --- lifecycle ---

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-store")
        try:
            await self._run(self._open)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise

    def _open(self) -> None:
        # Transcripts are private: the folder is the user's only, the database file (and with
        # it the -wal and -shm files, which SQLite creates with its permissions) 0600.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        for path in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            if path.exists():
                path.chmod(0o600)  # a file an earlier version left readable by all
        # Created on the worker thread and only ever used there.
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        conn.execute("PRAGMA synchronous=FULL")  # a returned write survives a power cut too
        # Another process (the CLI report) may read; a writer waits this long for it.
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        try:
            migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Wait for every pending write (one last try for the spool), then close; calling it
        again does nothing."""
        if self._executor is None:
            return
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._spool and not await self._write_spool():
            logger.error(f"Session store closed with {len(self._spool)} write(s) it could not make")
            self._on_error("store_spool_full")
        executor, self._executor = self._executor, None
        # The worker runs jobs in order, so this one runs after every write queued before it.
        await asyncio.get_running_loop().run_in_executor(executor, self._close)
        executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, for the jobs on the worker thread between open and close."""
        if self._conn is None:
            raise RuntimeError("SessionStore is not open")
        return self._conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("SessionStore is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- writes: each goes through the spool's order ---

    async def _write(self, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn`'s result, or None when the write was kept in the spool."""
        if self._spool:  # behind the writes that wait, so the rows keep their order
            self._keep(fn, args)
            return None
        try:
            return await self._run(fn, *args)
        except sqlite3.Error as e:
            self._failed(e)
            self._keep(fn, args)
            return None

    def _failed(self, error: sqlite3.Error) -> None:
        logger.warning(f"Session store write failed ({error}); kept to retry")
        self._on_error("store_write")

    def _keep(self, fn: Callable[..., Any], args: tuple) -> None:
        """Spool a write for the retry task (or drop it, saying so, when the spool is full)."""
        if len(self._spool) >= self._spool_limit:
            logger.error(
                f"Session store spool is full ({self._spool_limit} writes,"
                " AGENT_STORE_SPOOL_WRITES): a write is dropped"
            )
            self._on_error("store_spool_full")
            return
        self._spool.append((fn, args))
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_until_written())

    async def _write_spool(self) -> bool:
        """Write the spool in order; False (the rest kept) at the first refusal."""
        while self._spool:
            fn, args = self._spool[0]
            try:
                await self._run(fn, *args)
            except sqlite3.Error as e:
                self._failed(e)
                return False
            self._spool.popleft()
        return True

    async def _retry_until_written(self) -> None:
        while True:
            await asyncio.sleep(RETRY_SECS)
            waiting = len(self._spool)
            if await self._write_spool():
                logger.info(f"Session store is back: {waiting} kept write(s) written")
                return

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
            self.server_id,
        )
        await self._write(self._save_session, row)

    def _save_session(self, row: tuple) -> None:
        with self._db:
            # Visualizations only ever grow (see add_visualization), so the longer list is the
            # newer one: a record that never held them in memory cannot erase stored ones.
            self._db.execute(
                f"INSERT INTO sessions ({_SESSION_COLUMNS}, server_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        await self._write(self._append_turn, row)

    def _append_turn(self, row: tuple) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO turns VALUES (?, ?, ?, ?)", row)

    async def add_visualization(self, session_id: str, visualization: dict) -> bool:
        """Append to the session's visualizations; False when the session is not stored."""
        written = await self._write(self._add_visualization, session_id, json.dumps(visualization))
        return written is not False  # kept in the spool: it will be

    def _add_visualization(self, session_id: str, visualization: str) -> bool:
        with self._db:
            cursor = self._db.execute(
                "UPDATE sessions SET visualizations = json_insert(visualizations, '$[#]', json(?))"
                " WHERE session_id = ?",
                (visualization, session_id),
            )
        return cursor.rowcount > 0

    async def close_crashed_sessions(self) -> int:
        """End the sessions this server (`server_id`) left unfinished when it last stopped
        without ending them (a crash, a kill): `end_reason` "crashed", ended at their last
        turn. Another server's sessions are left alone. Returns how many were closed."""
        if self.server_id is None:
            return 0
        return await self._run(self._close_crashed)

    def _close_crashed(self) -> int:
        with self._db:
            cursor = self._db.execute(
                "UPDATE sessions SET state = 'ended', end_reason = 'crashed', ended_at ="
                " COALESCE((SELECT MAX(json_extract(t.record, '$.ended_at')) FROM turns t"
                " WHERE t.session_id = sessions.session_id), started_at)"
                " WHERE server_id = ? AND state != 'ended'",
                (self.server_id,),
            )
        return cursor.rowcount

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
            for row in self._db.execute(
                "SELECT session_id FROM sessions WHERE COALESCE(ended_at, started_at) < ?",
                (cutoff,),
            )
        ]
        return self._delete(ids)

    def _delete(self, session_ids: list[str]) -> int:
        deleted = 0
        with self._db:  # one transaction: a session never loses its row but keeps turns
            for session_id in session_ids:
                self._db.execute("DELETE FROM turns WHERE session_id = ?", (session_id,))
                cursor = self._db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
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
        rows = self._db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions {where} ORDER BY started_at", params
        ).fetchall()
        turns = self._db.execute(
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
        rows = self._db.execute(
            "SELECT s.session_id, s.transport, s.state, s.started_at, s.ended_at,"
            " COUNT(t.idx), COALESCE(SUM(t.cost_total), 0.0)"
            " FROM sessions s LEFT JOIN turns t ON t.session_id = s.session_id"
            " GROUP BY s.session_id ORDER BY s.started_at DESC LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        keys = ("session_id", "transport", "state", "started_at", "ended_at", "turns")
        return [{**dict(zip(keys, row[:6])), "cost_total": row[6]} for row in rows]
