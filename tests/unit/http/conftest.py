"""Fixtures: a filled store behind an app, and one API token per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cds.contracts.review import Role
from cds.contracts.settings import Settings
from cds.store import Store
from listeners.http.context import HttpContext
from tests.unit.http.support import client, fill, make_settings, tokens


@dataclass
class Env:
    settings: Settings
    store: Store
    ctx: HttpContext
    client: TestClient
    tokens: dict[Role, str]
    ids: dict[str, int]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    settings = make_settings(tmp_path, audit_enabled=True)
    store = Store(settings.store_url)
    ids = fill(store, tmp_path)
    ctx = HttpContext(settings, store, peer_probes={})
    with client(ctx) as c:
        yield Env(settings, store, ctx, c, tokens(settings), ids)
    store.close()
