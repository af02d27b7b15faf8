"""The outbox: rendered outputs waiting for delivery, claimed with a lease like jobs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cds.contracts.handoffs import NewOutput, OutboxItem, OutboxMeta
from cds.store.audit_outbox import stage
from cds.store.db import Database
from cds.store.pg_notify import OUTPUTS_CHANNEL


def _outbox(row: Any) -> OutboxItem:
    d = dict(row)
    d["meta"] = OutboxMeta.model_validate_json(d["meta"] or "{}")
    return OutboxItem.model_validate({k: d[k] for k in OutboxItem.model_fields if k in d})


class OutboxStore(Database):
    def outbox_add(self, output: NewOutput) -> int:
        """Queue one output for delivery; idempotent on ``key`` (re-runs never duplicate)."""
        now = time.time()
        with self.tx() as con:
            con.execute(
                """INSERT INTO outbox(kind, destination, key, payload_path, payload, meta, state,
                   next_attempt_at, created_at) VALUES (?,?,?,?,?,?, 'pending', ?, ?)
                   ON CONFLICT(key) DO UPDATE SET payload_path=excluded.payload_path,
                   payload=excluded.payload, meta=excluded.meta
                   WHERE outbox.state IN ('pending')""",
                (output.kind, output.destination, output.key, str(output.payload_path),
                 output.payload, output.meta.model_dump_json(), now, now),
            )
            item_id = int(con.execute("SELECT id FROM outbox WHERE key=?", (output.key,)).fetchone()["id"])
            self._announce(con, OUTPUTS_CHANNEL)
        self.outputs_ready.notify()
        return item_id

    def outbox_claim(self, worker: str, lease_s: float,
                     destinations: Sequence[str] = ()) -> OutboxItem | None:
        """Take the next due output (or one whose lease expired); PostgreSQL: SKIP LOCKED, as jobs.

        ``destinations`` (empty: any) limits the claim to those destinations, so a deliverer per
        destination keeps a slow peer (a C-STORE of a large SEG) from delaying the others."""
        now = time.time()
        only = ""
        if destinations:
            only = " AND destination IN (" + ",".join("?" * len(destinations)) + ")"
        with self.tx(isolation="read committed") as con:
            row = con.execute(
                f"""UPDATE outbox SET state='delivering', attempts=attempts+1, lease_until=?,
                   worker=? WHERE id = (
                     SELECT id FROM outbox WHERE ((state='pending' AND next_attempt_at<=?)
                        OR (state='delivering' AND lease_until<?)){only}
                     ORDER BY next_attempt_at, id LIMIT 1{self.dialect.skip_locked})
                   RETURNING *""",
                (now + lease_s, worker, now, now, *destinations),
            ).fetchone()
        return _outbox(row) if row else None

    # A delivered item never changes again, and with ``worker`` an outcome is recorded only while
    # that deliverer still holds the item (a deliverer whose lease expired lost it to another).
    _HELD = "WHERE id=? AND state!='delivered' AND (? IS NULL OR worker=?)"

    def outbox_delivered(self, item_id: int, response: str, *, worker: str | None = None,
                         audit: Sequence[dict[str, Any]] = ()) -> bool:
        """Mark an item delivered, with its disclosure record(s) in the same transaction (staged
        even when the lease was taken over: the peer did receive the output)."""
        with self.tx() as con:
            cur = con.execute(
                "UPDATE outbox SET state='delivered', delivered_at=?, response=?, last_error=NULL "
                + self._HELD, (time.time(), response, item_id, worker, worker))
            stage(con, audit)
        return cur.rowcount == 1

    def outbox_retry(self, item_id: int, error: str, delay_s: float, *, worker: str | None = None) -> bool:
        with self.tx() as con:
            cur = con.execute(
                "UPDATE outbox SET state='pending', last_error=?, next_attempt_at=? " + self._HELD,
                (error, time.time() + delay_s, item_id, worker, worker))
        return cur.rowcount == 1

    def outbox_dead(self, item_id: int, reason: str, *, worker: str | None = None) -> bool:
        with self.tx() as con:
            cur = con.execute("UPDATE outbox SET state='dead', last_error=? " + self._HELD,
                              (reason, item_id, worker, worker))
        return cur.rowcount == 1

    def outbox_release_held(self, worker: str) -> int:
        """Put back every item ``worker`` still holds: after a round that failed on the store (a
        PostgreSQL restart) the deliverer does not know which outcome was recorded, so what it
        holds is due again now rather than after its lease. Delivery is idempotent (the same
        SOP Instance UID, a FHIR conditional write), so a repeat duplicates nothing."""
        with self.tx() as con:
            cur = con.execute(
                "UPDATE outbox SET state='pending', next_attempt_at=?, lease_until=NULL "
                "WHERE state='delivering' AND worker=?", (time.time(), worker))
        return int(cur.rowcount or 0)

    # Listings never read the payload blobs (a PDF or a FHIR resource per row, and patient data):
    # an item listed this way has ``payload=None``; delivery claims the whole row.
    _LISTED = ("id, kind, destination, key, payload_path, meta, state, attempts, last_error, "
               "next_attempt_at, lease_until, worker, created_at, delivered_at, response")

    def outbox_items(self, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        """The newest outputs (optionally of one state), without their payloads."""
        where, params = ("WHERE state=? ", (state,)) if state else ("", ())
        rows = self._query(f"SELECT {self._LISTED} FROM outbox {where}ORDER BY id DESC LIMIT ?",
                           (*params, limit))
        return [_outbox(r) for r in rows]

    def outbox_of_job(self, job_id: int) -> list[OutboxItem]:
        """The outputs one job queued (any state), oldest first: what a re-evaluation supersedes."""
        rows = self._query("SELECT * FROM outbox WHERE CAST(json_extract(meta, '$.job_id') AS BIGINT)=? "
                           "ORDER BY id",
                           (job_id,))
        return [_outbox(r) for r in rows]
