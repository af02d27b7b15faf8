"""The audit drainer: staged records (``audit_pending``, :mod:`cds.store.audit_outbox`) into the chain.

WHY: the stages stage their records in the store transaction of the state change they describe,
so a record exists exactly when its change was committed. This moves them into the hash-chained
file (and on to syslog) in id order and deletes them from the store.

- Concurrent drainers (the processes of a deployment share one chain file) never append a record
  twice: a drain holds the chain's ``flock`` and re-reads what is pending under it.
- A drain that dies between its append and its delete is repaired by the next one: just before
  appending, a drain marks the rows (``drained_at``); rows found marked are looked for among the
  event ids at the chain's tail (records since the mark, less :data:`CLOCK_SLACK_S`) and skipped
  when already there. Unmarked rows were never appended: the common case reads no tail at all.
- The chain is fsynced before the rows are deleted: a power cut loses neither.

Who drains: every process that stages records, right after its commit (:func:`after_commit`: one
query when nothing is pending), and `cds dispatch` periodically (records a crashed process left).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cds.audit.chain import ChainWriter, locked
from cds.audit.trail import audit_path, forward
from cds.contracts.settings import Settings
from cds.store import Store, audit_outbox

log = logging.getLogger(__name__)

BATCH = 500  # records re-read, appended and deleted per round under the lock
CLOCK_SLACK_S = 300.0
"""How far before a row's mark the tail is searched for it: the chain record's time comes from the
clock of the process that appended it, the mark from the same process, but a shared chain also
holds other hosts' records, whose clocks may be behind; the search stops at the first older one."""


def _round(chain: ChainWriter, store: Store) -> tuple[list[dict[str, Any]], int]:
    """Append one batch of pending records; returns (the events appended, rows read)."""
    rows = audit_outbox.pending(store, BATCH)
    if not rows:
        return [], 0
    marks = [r.drained_at for r in rows if r.drained_at is not None]
    present = chain.event_ids_since(min(marks) - CLOCK_SLACK_S) if marks else set()
    audit_outbox.mark_draining(store, [r.id for r in rows if r.drained_at is None])
    appended = []
    for r in rows:
        if r.drained_at is not None and r.event.get("id") in present:
            log.warning("audit record %s (staged row %d) was already in the chain (a drain stopped "
                        "before deleting it): not appended again", r.event.get("id"), r.id)
            continue
        chain.append(r.event)
        appended.append(r.event)
    chain.sync()  # on disk before the rows go
    audit_outbox.delete(store, [r.id for r in rows])
    return appended, len(rows)


def drain(settings: Settings, store: Store) -> int:
    """Move every staged record into the chain (then syslog); returns how many were appended.

    Raises when the chain or the store fails; what was not deleted stays staged for the next drain.
    With the audit trail off nothing is drained (and nothing is staged: the builders return None).
    """
    if not settings.audit_enabled or not audit_outbox.any_pending(store):
        return 0
    appended: list[dict[str, Any]] = []
    with locked(audit_path(settings)) as chain:
        while True:
            events, read = _round(chain, store)
            appended += events
            if read < BATCH:
                break
    for event in appended:  # after the lock: a slow syslog peer never holds up the other drainers
        forward(settings, event)
    return len(appended)


def after_commit(settings: Settings, store: Store) -> int:
    """:func:`drain`, for a caller whose own work is done: a failure is logged, never raised (the
    records stay staged, and the next drain, here or in `cds dispatch`, appends them)."""
    try:
        return drain(settings, store)
    except Exception as exc:  # the OS or store error and the log path: no patient data
        log.error("audit records staged in the store could not be appended to the chain yet: %s: %s",
                  exc.__class__.__name__, exc)
        return 0


def backlog_note(store: Store) -> str:
    """What ``cds audit verify`` says of the records committed in the store but not yet in the chain
    (the chain alone cannot show them: they are part of the trail, not yet of the file)."""
    count, oldest = audit_outbox.backlog(store)
    if not count or oldest is None:
        return "no audit record waits in the store"
    return (f"{count} audit record(s) committed in the store, not yet in the chain (oldest "
            f"{max(time.time() - oldest, 0.0):.0f} s): the next drain (`cds dispatch`) appends them")
