"""Rows waiting for a peer: jobs and outbox items whose last failure was that peer not answering.

A peer outage leaves rows in backoff whose ``last_error`` starts with the peer's marker
(``cds.contracts.errors.peer_marker``: ``[peer:fhir]``). When the peer answers again the
dispatcher calls :meth:`WaitingStore.wake_waiting`, which makes every such row due now, so a case
is re-evaluated within a probe interval of the server's return rather than at the end of a
backoff capped at minutes (or at the hourly refresh).
"""

from __future__ import annotations

import time

from cds.contracts.errors import peer_marker
from cds.store.db import Database

_JOBS = "FROM jobs WHERE state='queued' AND instr(COALESCE(last_error, ''), ?) > 0"
_OUTBOX = "FROM outbox WHERE state='pending' AND instr(COALESCE(last_error, ''), ?) > 0"


class WaitingStore(Database):
    def waiting_on(self, peer: str) -> int:
        """How many queued jobs and pending outputs wait for ``peer``."""
        marker = peer_marker(peer)
        return sum(int(self._query(f"SELECT COUNT(*) AS n {sql}", (marker,))[0]["n"])
                   for sql in (_JOBS, _OUTBOX))

    def wake_waiting(self, peer: str) -> int:
        """Make every row waiting for ``peer`` due now; returns how many were woken."""
        marker, now = peer_marker(peer), time.time()
        with self.tx() as con:
            n = con.execute(f"UPDATE jobs SET next_run_at=? WHERE id IN (SELECT id {_JOBS}) AND next_run_at>?",
                            (now, marker, now)).rowcount
            n += con.execute(f"UPDATE outbox SET next_attempt_at=? WHERE id IN (SELECT id {_OUTBOX}) "
                             "AND next_attempt_at>?", (now, marker, now)).rowcount
        return int(n)
