"""The connection layer every part of the store builds on: SQLite by default, or PostgreSQL.

SQLite: WAL mode with ``synchronous=FULL`` by default, so a committed row survives a power cut.
Connections are per thread (SQLite connections must not be shared across threads), held by the
store instance, never at module level.

PostgreSQL (``postgresql://...``): :mod:`cds.store.pg` gives the same per-thread connections and
``tx()``, taking the same SQLite-dialect statements (translated by :mod:`cds.store.dialect`), so
the store's modules are written once. Every public store method retries a transaction that lost a
serialization race (:func:`cds.store.pg.retrying`).

Schema: the idempotent DDL of :mod:`cds.store.schema` runs at every start, then the column
additions of ``_migrate``, then the versioned :data:`cds.store.schema.MIGRATIONS` not yet recorded
in ``schema_version``. Not alembic: the store has no ORM or SQLAlchemy layer for it to drive, the
migrations are few and additive, and this runner serves both backends with the same statements;
on PostgreSQL an advisory lock makes concurrent starts (several workers) take turns.
"""

from __future__ import annotations

import inspect
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cds.store.dialect import POSTGRESQL, SQLITE, Dialect
from cds.store.pg import PgBackend, retrying
from cds.store.pg_notify import JOBS_CHANNEL, OUTPUTS_CHANNEL, NotifyRelay, announce
from cds.store.schema import MIGRATIONS, SCHEMA
from cds.store.wakeup import Wakeup

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Database:
    """Owns the database (file or server) and one connection per thread; the store's parts inherit it."""

    path: Path | None = None
    _pg: PgBackend | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each public method of a store part re-runs on a serialization failure (PostgreSQL)."""
        super().__init_subclass__(**kwargs)
        for name, attr in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(attr):
                setattr(cls, name, retrying(attr))

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        self.dialect: Dialect = SQLITE
        self._local = threading.local()
        self.jobs_ready = Wakeup()  # notified after a job is committed (see cds.store.wakeup)
        self.outputs_ready = Wakeup()  # notified after an output is committed to the outbox
        self._synchronous = synchronous
        if url.startswith(POSTGRES_SCHEMES):
            self.dialect = POSTGRESQL
            self._pg = PgBackend(url)
            with self._pg.schema_lock():
                self._con().executescript(SCHEMA)
                self._migrate()
                self._apply_migrations()
            return
        if not url.startswith("sqlite:///"):
            raise ValueError(
                f"store URL {url!r} is not supported: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
            )
        self.path = Path(url.removeprefix("sqlite:///"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con().executescript(SCHEMA)  # idempotent DDL; executescript manages its own commit
        self._migrate()
        self._apply_migrations()
        for suffix in ("", "-wal", "-shm"):  # names, IDs, birth dates: owner only
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.chmod(0o600)

    def _apply_migrations(self) -> None:
        """The versioned migrations not yet recorded, each in its own transaction, in order."""
        for m in MIGRATIONS:
            with self.tx() as con:
                if con.execute("SELECT 1 FROM schema_version WHERE version=?", (m.version,)).fetchone():
                    continue
                table, column = m.column.split(".")
                present = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                for i, statement in enumerate(m.statements):
                    if i == 0 and column in present:
                        continue  # the column is there already: only the rest (idempotent) runs
                    con.execute(statement)
                con.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (?,?,?)",
                            (m.version, m.name, time.time()))

    def _migrate(self) -> None:
        """Columns added since a store was created, added in place (nothing is rewritten)."""
        con = self._con()
        columns = {row[1] for row in con.execute("PRAGMA table_info(outbox)")}
        if "payload" not in columns:  # outputs that name the patient are kept in the store
            con.execute("ALTER TABLE outbox ADD COLUMN payload BLOB")
            con.commit()
        columns = {row[1] for row in con.execute("PRAGMA table_info(results)")}
        if "seconds" not in columns:  # each model's inference time, for /metrics
            con.execute("ALTER TABLE results ADD COLUMN seconds REAL")
            con.commit()

    def _con(self) -> Any:
        """This thread's connection: ``sqlite3.Connection``, or :class:`cds.store.pg.PgConnection`
        (same ``execute``/``fetchone``/``lastrowid``/row access, SQLite-dialect SQL)."""
        if self._pg is not None:
            return self._pg.connection()
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)  # type: ignore[arg-type]
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={self._synchronous}")
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    @contextmanager
    def tx(self, *, isolation: str = "serializable") -> Iterator[Any]:
        """A write transaction. SQLite: BEGIN IMMEDIATE (takes the write lock up front, no upgrade
        races; ``isolation`` does not apply). PostgreSQL: SERIALIZABLE, or ``"read committed"`` for
        claims that lock their row with ``FOR UPDATE SKIP LOCKED``."""
        if self._pg is not None:
            with self._pg.tx(isolation) as pg:
                yield pg
            return
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        else:
            con.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        return self._con().execute(sql, params).fetchall()

    def _count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return int(self._query(sql, params)[0][0])

    def _rows(self, table: str, state: str | None, limit: int) -> list[Any]:
        """The newest rows of ``table`` (jobs, outbox), optionally of one state."""
        if state:
            return self._query(
                f"SELECT * FROM {table} WHERE state=? ORDER BY id DESC LIMIT ?", (state, limit))
        return self._query(f"SELECT * FROM {table} ORDER BY id DESC LIMIT ?", (limit,))

    def _announce(self, con: Any, channel: str) -> None:
        """PostgreSQL: tell the other processes at commit that work is due (see cds.store.pg_notify)."""
        if self._pg is not None:
            announce(con, channel)

    def relay_notifications(self) -> NotifyRelay | None:
        """PostgreSQL: start waking this process's workers and deliverers on other processes'
        commits (a running relay; stop it before closing). SQLite: None (one process writes)."""
        if self._pg is None:
            return None
        return NotifyRelay(self._pg.url, {JOBS_CHANNEL: self.jobs_ready,
                                          OUTPUTS_CHANNEL: self.outputs_ready}).start()

    def close(self) -> None:
        """Close this thread's connection (PostgreSQL: every thread's)."""
        if self._pg is not None:
            self._pg.close_all()
            return
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
