"""The dispatcher: claims due outbox items and delivers each through its target, exactly once.

An item is marked delivered only after the peer acknowledged it. Outages (connection refused,
timeouts, 5xx, DICOM "out of resources", association aborted) are retried with the settings'
backoff (a peer that does not answer: for ``retry_budget_h``, woken when it answers again; any
other transient failure: until ``outbox_max_attempts``); a permanent refusal (FHIR 4xx with its OperationOutcome,
a DICOM failure status, a STOW-RS 4xx) goes to the dead letter with the reason and is never
retried automatically. Safe to run in several processes: claims carry a lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from cds.audit.disclosure import delivery_event
from cds.audit.drain import after_commit
from cds.contracts.errors import PeerUnreachable, PermanentError, TransientError, peer_marker
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.dispatch.peer_watch import PeerWatch
from cds.dispatch.targets import Targets
from cds.store import Store, worker_name

log = logging.getLogger(__name__)

_PEERS = {"fhir": "fhir", "pacs": "pacs"}  # outbox destination -> peer name


class Dispatcher:
    def __init__(self, settings: Settings, store: Store, *, worker: str | None = None,
                 lease_s: float = 120.0, destinations: Sequence[str] = ()) -> None:
        """``destinations``: deliver only to these (empty: all); a deliverer per destination keeps
        a C-STORE of a large SEG from holding up the FHIR resources queued behind it."""
        self.settings = settings
        self.store = store
        self.destinations = tuple(destinations)
        self.worker = worker or worker_name("dispatch" + "".join(f"-{d}" for d in self.destinations))
        self.lease_s = lease_s
        self.targets = Targets(settings)
        self.watch = PeerWatch(settings, store)

    drain_idle_s = 5.0
    """When idle, the audit records another process staged and could not drain (it died) are
    looked for this often, not at every poll (each look is a store query)."""

    release_idle_s = 2.0
    """An association is released after this long with nothing to send, not at the first empty
    look: a study's SEG and SR are queued a few hundred ms apart, and a new association per output
    costs a round of A-ASSOCIATE negotiation each."""

    def close(self) -> None:
        self.targets.close()

    def _deliver(self, item: OutboxItem) -> str:
        if not item.available:
            raise PermanentError(f"payload file {item.payload_path} is missing")
        return self.targets.for_item(item).deliver(item)

    def _dead(self, item: OutboxItem, reason: str) -> str:
        self.store.outbox_dead(item.id, reason, worker=self.worker)
        log.error("outbox %d (%s -> %s) dead-lettered: %s", item.id, item.kind, item.destination, reason)
        return "dead"

    def handle(self, item: OutboxItem) -> str:
        """Deliver one claimed item and record the outcome; returns its new state."""
        try:
            response = self._deliver(item)
        except PermanentError as exc:
            return self._dead(item, str(exc))
        except PeerUnreachable as exc:  # an outage of any length within the retry budget
            if not self.settings.within_retry_budget(item.created_at, time.time()):
                return self._dead(item, f"gave up after {self.settings.retry_budget_h:g} h: {exc}")
            delay = self.settings.backoff_s(item.attempts)
            self.store.outbox_retry(item.id, str(exc), delay, worker=self.worker)
            log.warning("outbox %d (%s -> %s) waits for %s, retry in %.1fs", item.id, item.kind,
                        item.destination, exc.peer, delay)
            return "pending"
        except TransientError as exc:
            if item.attempts >= self.settings.outbox_max_attempts:
                return self._dead(item, f"gave up after {item.attempts} attempts: {exc}")
            delay = self.settings.backoff_s(item.attempts)
            self.store.outbox_retry(item.id, str(exc), delay, worker=self.worker)
            log.warning("outbox %d (%s -> %s) attempt %d failed, retry in %.1fs: %s", item.id, item.kind,
                        item.destination, item.attempts, delay, exc)
            return "pending"
        except Exception as exc:  # an unexpected bug must not kill the loop nor lose the item
            error = f"{exc.__class__.__name__}: {exc}"
            log.exception("outbox %d: unexpected error (attempt %d)", item.id, item.attempts)
            if item.attempts >= self.settings.outbox_max_attempts:  # a bug does not fix itself
                return self._dead(item, f"gave up after {item.attempts} attempts: {error}")
            self.store.outbox_retry(item.id, error, self.settings.backoff_s(item.attempts), worker=self.worker)
            return "pending"
        # The BALP disclosure record is committed with the delivered state, then drained into the chain.
        event = delivery_event(self.settings, self.store, item, response)
        if not self.store.outbox_delivered(item.id, response, worker=self.worker, audit=[event] if event else []):
            log.warning("outbox %d delivered after its lease was taken over (%s)", item.id, response)
        after_commit(self.settings, self.store)
        if item.last_error and peer_marker(_PEERS.get(item.destination, "")) in item.last_error:
            self.watch.answered(_PEERS[item.destination])  # back after an outage: wake the rest
        log.info("outbox %d (%s -> %s) delivered: %s", item.id, item.kind, item.destination, response)
        return "delivered"

    def run_once(self) -> int:
        """Deliver every item due now; returns how many were handled (any outcome). First, at
        most once per probe interval, wake the work waiting for a peer that answers again."""
        self.watch.tick()
        handled = 0
        seen: set[int] = set()
        while True:
            item = self.store.outbox_claim(self.worker, self.lease_s, self.destinations)
            if item is None:
                return handled
            if item.id in seen:  # failed earlier in this pass and already due again: next pass
                self.store.outbox_retry(item.id, item.last_error or "", self.settings.backoff_s(item.attempts))
                return handled
            seen.add(item.id)
            self.handle(item)
            handled += 1

    def run_forever(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        """Deliver until ``stop``. A round that fails (the store unavailable: a PostgreSQL
        restart, a full disk; or a bug) never ends the loop: it waits, and once the store answers
        again the items this deliverer held are due at once instead of after their lease."""
        held = False
        busy_at = float("inf")  # when the last delivery was handled; inf: no connection held since
        drained_at = 0.0
        try:
            while not stop.is_set():
                try:
                    if held:
                        released = self.store.outbox_release_held(self.worker)
                        held = False
                        if released:
                            log.warning("dispatcher: %d output(s) held during a store failure are due again",
                                        released)
                    seen = self.store.outputs_ready.generation
                    handled = self.run_once()
                except Exception:
                    held = True
                    log.exception("dispatcher: a delivery round failed; trying again")
                    stop.wait(max(idle_s, 1.0))
                    continue
                now = time.monotonic()
                if handled:
                    busy_at = now
                elif now - busy_at >= self.release_idle_s:
                    busy_at = float("inf")  # released: nothing to release again until the next delivery
                    try:
                        self.targets.idle()  # release a held association while there is nothing to send
                    except Exception:  # a release that fails changes nothing delivered
                        log.warning("dispatcher: releasing an idle connection failed", exc_info=True)
                if not handled:
                    if now - drained_at >= self.drain_idle_s:  # records a process left that died before its drain
                        drained_at = now
                        after_commit(self.settings, self.store)
                    # an output committed in this process wakes it at once; others' at the next poll
                    self.store.outputs_ready.wait(seen, idle_s)
        finally:
            self.close()
