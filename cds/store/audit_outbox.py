"""The transactional audit outbox: audit records committed with the state change they describe.

WHY: the audit trail is a hash-chained file (:mod:`cds.audit.chain`) outside the store. Written
after a commit, a crash in between loses the record; written before, a rollback leaves a record of
work that never happened. So a stage stages its records here (table ``audit_pending``, migration
3) in the same transaction as the state change: an output's ``delivered`` state with its
disclosure record, a job's ``done`` with the FHIR queries it made. :mod:`cds.audit.drain` then
appends them to the chain in id order and deletes them; this module is only the table.

Functions taking the store (any :class:`cds.store.db.Database`) rather than store methods, so
that no other part of the store needs to know of them; each re-runs on a serialization failure
(:func:`cds.store.pg.retrying`), as the store's methods do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from cds.store.db import Database
from cds.store.pg import retrying

Event = dict[str, Any]


class PendingRecord(NamedTuple):
    """One staged audit record: ``drained_at`` is set once a drainer was about to append it."""

    id: int
    event: Event
    created: float
    drained_at: float | None


def stage(con: Any, events: Sequence[Event]) -> int:
    """Stage ``events`` inside the caller's open transaction ``con``; returns how many."""
    now = time.time()
    for event in events:
        con.execute("INSERT INTO audit_pending(record, created) VALUES (?, ?)",
                    (json.dumps(event, separators=(",", ":"), ensure_ascii=False), now))
    return len(events)


@retrying
def stage_alone(db: Database, events: Sequence[Event]) -> int:
    """Stage ``events`` in a transaction of their own: for records of something that already
    happened and that no state change of ours describes (the FHIR queries of a job that failed)."""
    if not events:
        return 0
    with db.tx() as con:
        return stage(con, events)


def _record(row: Any) -> PendingRecord:
    return PendingRecord(int(row["id"]), json.loads(row["record"]), float(row["created"]),
                         None if row["drained_at"] is None else float(row["drained_at"]))


@retrying
def pending(db: Database, limit: int = 500) -> list[PendingRecord]:
    """The oldest ``limit`` staged records, in id order (the order they are appended in)."""
    rows = db._query("SELECT id, record, created, drained_at FROM audit_pending ORDER BY id LIMIT ?",
                     (limit,))
    return [_record(r) for r in rows]


@retrying
def any_pending(db: Database) -> bool:
    """One cheap query: is there anything to drain? (Every writer asks after each commit.)"""
    return bool(db._query("SELECT 1 FROM audit_pending LIMIT 1"))


@retrying
def mark_draining(db: Database, ids: Sequence[int]) -> None:
    """Note that these records are about to be appended (see :func:`cds.audit.drain.drain`)."""
    if not ids:
        return
    with db.tx() as con:
        con.execute(f"UPDATE audit_pending SET drained_at=? WHERE id IN ({','.join('?' * len(ids))})",
                    (time.time(), *ids))


@retrying
def delete(db: Database, ids: Sequence[int]) -> int:
    """Remove records now in the chain; returns how many rows went."""
    if not ids:
        return 0
    with db.tx() as con:
        cur = con.execute(f"DELETE FROM audit_pending WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
    return int(cur.rowcount or 0)


@retrying
def backlog(db: Database) -> tuple[int, float | None]:
    """(records staged but not yet in the chain, creation time of the oldest) for ``cds audit verify``."""
    row = db._query("SELECT COUNT(*), MIN(created) FROM audit_pending")[0]
    return int(row[0]), (None if row[1] is None else float(row[1]))
