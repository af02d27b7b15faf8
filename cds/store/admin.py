"""Operator actions and paged listings for the HTTP API: requeue, model switches, filters."""

from __future__ import annotations

from cds.store.db import Database


class AdminStore(Database):
    """Requeue dead jobs and outputs, switch models on and off, list with paging and filters."""
