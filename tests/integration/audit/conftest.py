"""The audit integration tests run on both store backends (fixtures in tests/store_fixtures.py)."""

from tests.store_fixtures import postgres_server, store_url  # noqa: F401  (pytest fixtures)
