"""The PostgreSQL connection layer: psycopg 3 connections that speak the store's SQLite dialect.

Selected by ``CDS_DATABASE_URL=postgresql://user@host:port/db``. The store's modules call
``con.execute(sql, params)`` with SQLite-dialect SQL, read rows as ``r["col"]`` / ``r[0]`` /
``dict(r)`` and new ids as ``cur.lastrowid``; :class:`PgConnection` gives them exactly that on
PostgreSQL (statements translated by :mod:`cds.store.dialect`), so every module of the store runs
unchanged on both backends.

Durability and concurrency:

- one connection per thread, held by the store instance (no module-level state); autocommit
  outside :meth:`PgBackend.tx`, so a read never leaves a transaction open; ``synchronous_commit=on``
  so an acknowledged C-STORE is a committed row on the server's disk.
- ``tx()`` is SERIALIZABLE by default: the store's read-then-write transactions (is this instance
  a duplicate? which generation is the study in?) were written for SQLite's single writer, and
  SERIALIZABLE keeps them correct under concurrent writers. A conflict aborts the transaction with
  a serialization failure; :func:`retrying` re-runs the whole store method, a bounded number of
  times. Claims run READ COMMITTED with ``FOR UPDATE SKIP LOCKED`` (they must not conflict).
- a lost connection (server restart, network) raises :class:`StoreUnavailable` for the call that
  hit it and is re-opened on the next call; callers treat it as transient.
"""

from __future__ import annotations

import functools
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Loader

from cds.contracts.errors import TransientError
from cds.store.dialect import Translated, split_script, to_postgres

RETRIES = 30
"""Attempts of a store method whose transaction hit a serialization failure or a deadlock. A hot
row (one study received over several associations at once) lets one writer commit per round, so
the budget is generous; the backoff (full jitter, capped at 50 ms) spreads the writers out."""
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
_ISOLATION = {"serializable": "SERIALIZABLE", "read committed": "READ COMMITTED"}
_SCHEMA_LOCK = 0x0CD5_0017  # pg_advisory_lock key: one process at a time creates and migrates

F = TypeVar("F", bound=Callable[..., Any])


class StoreUnavailable(TransientError):
    """The PostgreSQL server could not be reached or dropped the connection (retry later)."""


class StoreConflict(TransientError):
    """A transaction kept conflicting with concurrent ones after every retry."""


class _NumericLoader(Loader):
    """``numeric`` (SUM of BIGINT, ...) as int or float, as SQLite returns them, not Decimal."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class Row(tuple):  # type: ignore[type-arg]
    """A result row readable like ``sqlite3.Row``: by index, by column name, and ``dict(row)``."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(classes: dict[tuple[str, ...], type[Row]]) -> Callable[[Any], Callable[[Sequence[Any]], Row]]:
    def factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
        names = tuple(d.name for d in (cursor.description or ()))
        cls = classes.get(names)
        if cls is None:
            cls = classes[names] = type("Row", (Row,), {"_index": {n: i for i, n in enumerate(names)}})
        return cls
    return factory


def describe(url: str) -> str:
    """host:port/db of a URL, never its password (for errors and logs)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


class PgCursor:
    """The part of ``sqlite3.Cursor`` the store uses."""

    def __init__(self, cur: psycopg.Cursor[Any], translated: Translated) -> None:
        self._cur = cur
        self.lastrowid: int | None = None
        self.rowcount = cur.rowcount
        if translated.returns_id:
            row = cur.fetchone()
            self.lastrowid = int(row[0]) if row is not None else None

    def fetchone(self) -> Row | None:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[Row]:
        return self._cur.fetchall() if self._cur.description else []

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class PgConnection:
    """One psycopg connection that takes SQLite-dialect statements (see :mod:`cds.store.dialect`)."""

    def __init__(self, raw: psycopg.Connection[Any], where: str, cache: dict[str, Translated]) -> None:
        self.raw, self._where, self._cache = raw, where, cache
        self.in_tx = False

    def _translate(self, sql: str) -> Translated:
        translated = self._cache.get(sql)
        if translated is None:
            translated = self._cache[sql] = to_postgres(sql)
        return translated

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        translated = self._translate(sql)
        try:
            cur = self.raw.execute(translated.sql, tuple(params) if not isinstance(params, dict) else params)
            return PgCursor(cur, translated)
        except psycopg.OperationalError as exc:
            self.raise_unavailable(exc)
            raise

    def executescript(self, script: str) -> None:
        """Run a DDL script statement by statement (each translated)."""
        for statement in split_script(script):
            self.execute(statement)

    def commit(self) -> None:
        """Outside :meth:`PgBackend.tx` every statement commits on its own (autocommit)."""

    def raise_unavailable(self, exc: BaseException) -> None:
        """Raise StoreUnavailable for ``exc`` when the connection is gone (else return)."""
        if self.raw.broken or self.raw.closed or isinstance(exc, pg_errors.AdminShutdown):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"PostgreSQL store {self._where} unavailable: {first}") from exc


class PgBackend:
    """Connections per thread to one PostgreSQL database, and its transactions."""

    def __init__(self, url: str, *, connect_timeout_s: int = 5) -> None:
        self.url = url
        self.where = describe(url)
        self._timeout = connect_timeout_s
        self._local = threading.local()
        self._translations: dict[str, Translated] = {}
        self._rows: dict[tuple[str, ...], type[Row]] = {}
        # Every thread's connection, weakly: a thread that ends (a job's lease heartbeat) drops its
        # thread-local connection, which psycopg closes when it is collected; close_all reaches the rest.
        self._connections: weakref.WeakSet[PgConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def connection(self) -> PgConnection:
        """This thread's connection, (re)opened when there is none or the last one broke."""
        con: PgConnection | None = getattr(self._local, "con", None)
        if con is not None and not (con.raw.broken or con.raw.closed):
            return con
        if con is not None:
            self._discard(con)
        try:
            raw = psycopg.connect(self.url, autocommit=True, connect_timeout=self._timeout,
                                  application_name="cds", options="-c synchronous_commit=on",
                                  row_factory=_row_factory(self._rows))
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(f"PostgreSQL store {self.where} unavailable: {first}") from exc
        raw.adapters.register_loader("numeric", _NumericLoader)
        con = PgConnection(raw, self.where, self._translations)
        self._local.con = con
        with self._lock:
            self._connections.add(con)
        return con

    def _discard(self, con: PgConnection) -> None:
        self._local.con = None
        with self._lock:
            self._connections.discard(con)
        try:
            con.raw.close()
        except psycopg.Error:
            pass

    @contextmanager
    def tx(self, isolation: str = "serializable") -> Iterator[PgConnection]:
        """One transaction on this thread's connection; nested use is an error, as on SQLite."""
        con = self.connection()
        if con.in_tx:
            raise RuntimeError("store transaction already open on this thread (tx() does not nest)")
        con.execute(f"BEGIN ISOLATION LEVEL {_ISOLATION[isolation]}")
        con.in_tx = True
        try:
            yield con
        except BaseException as exc:
            con.in_tx = False
            self._rollback(con)
            if isinstance(exc, psycopg.OperationalError):
                con.raise_unavailable(exc)
            raise
        con.in_tx = False
        try:
            con.raw.execute("COMMIT")
        except psycopg.OperationalError as exc:
            self._rollback(con)
            con.raise_unavailable(exc)
            raise

    @staticmethod
    def _rollback(con: PgConnection) -> None:
        if con.raw.broken or con.raw.closed:
            return
        try:
            con.raw.execute("ROLLBACK")
        except psycopg.Error:
            pass  # the connection went away: the server rolled the transaction back

    @contextmanager
    def schema_lock(self) -> Iterator[PgConnection]:
        """Held while the schema is created and migrated: concurrent starts take turns."""
        con = self.connection()
        con.raw.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            yield con
        finally:
            if not (con.raw.broken or con.raw.closed):
                con.raw.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    @property
    def depth(self) -> int:
        return int(getattr(self._local, "depth", 0))

    @depth.setter
    def depth(self, value: int) -> None:
        self._local.depth = value

    def close(self) -> None:
        """Close this thread's connection (other threads' close when their store is dropped)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            self._discard(con)

    def close_all(self) -> None:
        with self._lock:
            cons = list(self._connections)
            self._connections.clear()
        self._local.con = None
        for con in cons:
            try:
                con.raw.close()
            except psycopg.Error:
                pass


def retrying(fn: F) -> F:
    """Re-run a store method whose transaction lost a serialization race or a deadlock.

    Only the outermost store method on a thread retries (a method calling another is re-run as a
    whole); on SQLite (one writer at a time) it is a plain call.
    """

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        backend: PgBackend | None = getattr(self, "_pg", None)
        if backend is None or backend.depth > 0:
            return fn(self, *args, **kwargs)
        for attempt in range(RETRIES):
            backend.depth += 1
            try:
                return fn(self, *args, **kwargs)
            except _RETRYABLE as exc:
                if attempt == RETRIES - 1:
                    raise StoreConflict(f"{fn.__name__}: still conflicting after {RETRIES} attempts "
                                        f"({type(exc).__name__})") from exc
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))  # noqa: S311 - jitter
            finally:
                backend.depth -= 1
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]
