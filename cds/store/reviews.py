"""Clinicians' assessments of AI results (accept, modify, reject), kept for metrics and the pages."""

from __future__ import annotations

from cds.store.db import Database


class ReviewStore(Database):
    """Rows of the ``reviews`` table."""
