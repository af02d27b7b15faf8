"""The SQLite connection layer every part of the store builds on.

WAL mode with ``synchronous=FULL`` by default, so a committed row survives a power cut.
Connections are per thread (SQLite connections must not be shared across threads), held by the
store instance, never at module level.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cds.store.schema import SCHEMA


class Database:
    """Owns the database file and one connection per thread; the store's parts inherit it."""

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        if not url.startswith("sqlite:///"):
            raise ValueError(
                f"store URL {url!r} is not supported: only sqlite:///PATH is built in "
                "(a PostgreSQL store implementing the same methods is the planned alternative)"
            )
        self.path = Path(url.removeprefix("sqlite:///"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._local = threading.local()
        self._con().executescript(SCHEMA)  # idempotent DDL; executescript manages its own commit
        self._migrate()
        for suffix in ("", "-wal", "-shm"):  # names, IDs, birth dates: owner only
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.chmod(0o600)

    def _migrate(self) -> None:
        """Columns added since a store was created, added in place (nothing is rewritten)."""
        con = self._con()
        columns = {row[1] for row in con.execute("PRAGMA table_info(outbox)")}
        if "payload" not in columns:  # outputs that name the patient are kept in the store
            con.execute("ALTER TABLE outbox ADD COLUMN payload BLOB")
            con.commit()

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={self._synchronous}")
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: takes the write lock up front, no upgrade races)."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        else:
            con.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._con().execute(sql, params).fetchall()

    def _count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return int(self._query(sql, params)[0][0])

    def _rows(self, table: str, state: str | None, limit: int) -> list[sqlite3.Row]:
        """The newest rows of ``table`` (jobs, outbox), optionally of one state."""
        if state:
            return self._query(
                f"SELECT * FROM {table} WHERE state=? ORDER BY id DESC LIMIT ?", (state, limit))
        return self._query(f"SELECT * FROM {table} ORDER BY id DESC LIMIT ?", (limit,))

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
