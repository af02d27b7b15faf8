"""Stores on both backends for the tests that run on each: SQLite (the embedded default) and
PostgreSQL.

One PostgreSQL server per test session (started on first use, on a free port, in a temporary
folder); each test gets a fresh database on it, so tests never see each other's rows. Without the
PostgreSQL binaries the PostgreSQL half is skipped on a developer's machine and fails in CI
(CONF_REQUIRE_PEERS=1), like every other peer; the PostgreSQL half is marked ``peers`` (so
``make test-fast`` runs the SQLite half only). Used as a pytest plugin by the conftests that want
these fixtures.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.store import Store
from tests.peers import need_postgres

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    need_postgres()
    from conformance.peers.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.peers)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"t{next(_names)}")  # type: ignore[attr-defined]


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()
