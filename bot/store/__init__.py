"""Where session records are kept: the interface sessions, the report and the REST routes call,
and the factory that picks its implementation (SQLite, `sqlite.py`).

The SQLite store keeps its own worker thread rather than adopting aiosqlite, which is also one
thread per connection but hops to it once per statement, so a transaction of several statements (a
deletion, a migration step) could interleave with another session's write unless locked, where a
job here is a whole transaction run in one hop.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bot.records import SessionRecord, TurnRecord
from bot.store.migrations import SCHEMA_VERSION, SchemaTooNewError
from bot.store.sqlite import SQLiteSessionStore

__all__ = ["SCHEMA_VERSION", "SchemaTooNewError", "SessionStore", "create_store"]


class SessionStore(Protocol):
    """Session records and their turns. Writes never fail the caller: one the backend refuses
    waits, in order with every write after it, until it is taken (see `spooled`)."""

    @property
    def spooled(self) -> int:
        """How many writes wait for the backend to take them."""

    async def open(self) -> None:
        """Connect and bring the schema to the current version (again: nothing); raises
        SchemaTooNewError for records written by a newer release."""

    async def close(self) -> None:
        """Make every pending write (one last try for those waiting), then disconnect; again: nothing."""

    async def save_session(self, record: SessionRecord) -> None:
        """Insert or update the session's row, never erasing its stored turns or visualizations."""

    async def append_turn(self, turn: TurnRecord) -> None:
        """Store one turn; the same (session, index) again replaces it."""

    async def add_visualization(self, session_id: str, visualization: dict) -> bool:
        """Append to the session's visualizations; False when the session is not stored."""

    async def close_crashed_sessions(self) -> int:
        """End this server's sessions left unfinished by its last run as "crashed"; how many."""

    async def delete_session(self, session_id: str) -> bool:
        """Delete the session and its turns together; False when it was not stored."""

    async def prune(self, retention_days: float, now: float | None = None) -> int:
        """Delete sessions ended (or, never ended, started) over `retention_days` ago (0: none); how many."""

    async def get_session(self, session_id: str) -> SessionRecord | None:
        """The session with its turns in index order, or None."""

    async def iter_sessions(self, since: float | None = None) -> list[SessionRecord]:
        """Every session (with its turns) started at or after `since`, oldest first."""

    async def list_sessions(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Summaries (turn count, cost total), newest first, without loading any turn."""


def create_store(
    path: Path,
    *,
    spool_writes: int = 1000,
    on_error: Callable[[str], None] | None = None,
    busy_timeout_ms: int = 5000,
    server_id: str | None = None,
) -> SessionStore:
    """The store of the records at `path`, not yet open. `spool_writes` bounds the writes kept
    while the backend refuses them; `on_error` hears of each failure ("store_write") and of each
    write dropped ("store_spool_full"); `server_id` names the server whose sessions these are."""
    return SQLiteSessionStore(
        path, spool_writes=spool_writes, on_error=on_error, busy_timeout_ms=busy_timeout_ms, server_id=server_id
    )
