"""Clinicians' assessments of AI results (accept, modify, reject), kept for metrics and the pages.

Every assessment is a new row: a second review of the same result does not overwrite the first
(the history is what post-market monitoring reads), it supersedes it. Counts and the pages use
the *latest* review of each result, the one with the highest id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable

from cds.contracts.handoffs import ResultRow
from cds.contracts.review import ReviewOutcome, ReviewRow
from cds.store.db import Database


def _review(row: sqlite3.Row) -> ReviewRow:
    d = dict(row)
    d["removed_lesions"] = json.loads(d["removed_lesions"] or "[]")
    d["reason"] = d["reason"] or ""
    d["reviewer_display"] = d["reviewer_display"] or ""
    d["sr_uid"] = d["sr_uid"] or ""
    return ReviewRow.model_validate(d)


_LATEST = "SELECT * FROM reviews r WHERE r.id = (SELECT MAX(id) FROM reviews WHERE result_id = r.result_id)"


class ReviewStore(Database):
    """Rows of the ``reviews`` table."""

    def add_review(self, *, result_id: int, outcome: ReviewOutcome | str, reviewer: str,
                   patient_key: str | None = None, study_uid: str | None = None, model: str | None = None,
                   model_version: str | None = None, reason: str = "", decision: str | None = None,
                   removed_lesions: Iterable[int] = (), reviewer_display: str = "", sr_uid: str = "",
                   created_at: float | None = None) -> int:
        """Record one assessment; returns its id (later reviews of the same result supersede it)."""
        with self.tx() as con:
            cur = con.execute(
                """INSERT INTO reviews(result_id, patient_key, study_uid, model, model_version, outcome,
                   reason, decision, removed_lesions, reviewer, reviewer_display, created_at, sr_uid)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (result_id, patient_key, study_uid, model, model_version, ReviewOutcome(outcome).value,
                 reason, decision, json.dumps(sorted(set(removed_lesions))), reviewer, reviewer_display,
                 time.time() if created_at is None else created_at, sr_uid))
            return int(cur.lastrowid or 0)

    def set_review_sr(self, review_id: int, sr_uid: str) -> None:
        """The SOP Instance UID of the review's assessment SR (derived from the review's id)."""
        with self.tx() as con:
            con.execute("UPDATE reviews SET sr_uid=? WHERE id=?", (sr_uid, review_id))

    def discard_review(self, review_id: int) -> None:
        """Undo a review whose outputs could not be built: its row and its still-pending outputs
        (keys ``review:<id>:...``) go, so a failed assessment leaves nothing half-recorded."""
        with self.tx() as con:
            con.execute("DELETE FROM outbox WHERE key LIKE ? AND state='pending'", (f"review:{review_id}:%",))
            con.execute("DELETE FROM reviews WHERE id=?", (review_id,))

    def review_target(self, result_id: int) -> ResultRow | None:
        """The stored result a review is about (``results.id``), or None when there is none."""
        rows = self._query("SELECT * FROM results WHERE id=?", (result_id,))
        if not rows:
            return None
        d = dict(rows[0])
        d["body"] = json.loads(d["body"]) if d["body"] else None
        return ResultRow.model_validate(d)

    def review(self, review_id: int) -> ReviewRow | None:
        rows = self._query("SELECT * FROM reviews WHERE id=?", (review_id,))
        return _review(rows[0]) if rows else None

    def reviews_of(self, result_id: int) -> list[ReviewRow]:
        """Every review of one result, newest first (the first one is the one that counts)."""
        return [_review(r) for r in self._query(
            "SELECT * FROM reviews WHERE result_id=? ORDER BY id DESC", (result_id,))]

    def reviews(self, *, model: str | None = None, patient_key: str | None = None, limit: int = 100,
                offset: int = 0) -> list[ReviewRow]:
        """All reviews (superseded ones included), newest first, optionally of one model or patient."""
        sql, params = "SELECT * FROM reviews WHERE 1=1", []
        for col, val in (("model", model), ("patient_key", patient_key)):
            if val is not None:
                sql += f" AND {col}=?"
                params.append(val)
        rows = self._query(sql + " ORDER BY id DESC LIMIT ? OFFSET ?", (*params, max(0, limit), max(0, offset)))
        return [_review(r) for r in rows]

    def review_counts(self) -> dict[tuple[str, str], int]:
        """(model, outcome) -> number of results whose *latest* review has that outcome."""
        rows = self._query(f"SELECT COALESCE(model, '') AS model, outcome, COUNT(*) AS n FROM ({_LATEST}) "
                           "GROUP BY 1, 2")
        return {(r["model"], r["outcome"]): int(r["n"]) for r in rows}

    def latest_reviews(self, result_ids: Iterable[int]) -> dict[int, ReviewRow]:
        """result id -> its latest review, for the results that have one."""
        ids = sorted({int(i) for i in result_ids})
        out: dict[int, ReviewRow] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._query(f"{_LATEST} AND r.result_id IN ({marks})", tuple(chunk)):
                row = _review(r)
                out[row.result_id] = row
        return out
