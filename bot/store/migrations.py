"""The SQLite schema as numbered steps, and the version check that applies the missing ones.

A database records the last step applied in `schema_version`. Opening it applies every later
step, each in its own transaction together with the version it reaches, so a step either lands
whole or not at all. Steps are idempotent: a file written before versions were read (version 1
with the columns of version 2 already added, or tables with no version row) takes them safely.
A database newer than the code is refused before any step touches it.
"""

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer release than this one: its schema is not known here."""

    def __init__(self, path: Path | str, found: int, supported: int):
        self.path, self.found, self.supported = path, found, supported
        super().__init__(
            f"Session store {path} has schema version {found}, but this release supports up to"
            f" version {supported}: it was written by a newer release. Run that release, or point"
            " AGENT_STORE_PATH at another file."
        )


@dataclass(frozen=True)
class Step:
    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


# The first release's tables, as it created them.
_VERSION_1_TABLES = (
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id     TEXT PRIMARY KEY,
        transport      TEXT NOT NULL,
        started_at     REAL NOT NULL,
        ended_at       REAL,
        state          TEXT NOT NULL,
        providers      TEXT NOT NULL,
        resources      TEXT NOT NULL,
        visualizations TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at)",
    # A turn is stored whole as JSON; cost_total is copied out so summaries stay in SQL.
    """CREATE TABLE IF NOT EXISTS turns (
        session_id TEXT NOT NULL,
        idx        INTEGER NOT NULL,
        cost_total REAL NOT NULL,
        record     TEXT NOT NULL,
        PRIMARY KEY (session_id, idx)
    )""",
)


def _create_sessions_and_turns(conn: sqlite3.Connection) -> None:
    for statement in _VERSION_1_TABLES:
        conn.execute(statement)


def _add_end_reason_and_server_id(conn: sqlite3.Connection) -> None:
    # Files written before versions were read may have either column already.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    for column in ("end_reason", "server_id"):
        if column not in columns:
            conn.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")  # NULL in older rows


STEPS = (
    Step(1, "sessions and turns", _create_sessions_and_turns),
    Step(2, "sessions.end_reason and sessions.server_id", _add_end_reason_and_server_id),
)
SCHEMA_VERSION = STEPS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The version the database records; 0 for a new file (its steps are idempotent, so a file
    with tables but no version row is brought up to date from 0 too)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the steps the database at `path` lacks. Raises SchemaTooNewError, having written
    nothing, when its version is newer than SCHEMA_VERSION."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNewError(path, found, SCHEMA_VERSION)
    for step in STEPS:
        if step.version > found and _apply(conn, step, path):
            # A new file takes every step; only an upgrade is news to the operator.
            level = "INFO" if found else "DEBUG"
            logger.log(level, f"Session store {path}: schema version {step.version} ({step.description})")


def _apply(conn: sqlite3.Connection, step: Step, path: Path) -> bool:
    """Apply `step` and record its version in one transaction; False when the database had it."""
    # IMMEDIATE takes the write lock before the version is read again, so two servers that open
    # one file at once apply each step once.
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(conn)
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(path, current, SCHEMA_VERSION)
        if current >= step.version:
            conn.commit()
            return False
        step.apply(conn)
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (?)", (step.version,))
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    return True
