"""The store tests run on both backends (fixtures in tests/store_fixtures.py)."""

from tests.store_fixtures import postgres_server, store, store_url  # noqa: F401  (pytest fixtures)
