"""Worker pool over the persisted job queue.

Jobs live in the store, not in memory: a worker claims one (with a lease), runs its handler, and
marks it done, queued again with exponential backoff, or dead with the reason. A service killed
mid-job leaves the job 'running'; the next start requeues it (``Store.recover_orphans``) and
handlers are idempotent, so it simply runs again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from cds.audit.drain import after_commit
from cds.audit.trail import holding
from cds.contracts.errors import PeerUnreachable, PermanentError
from cds.contracts.handoffs import JobHandler
from cds.contracts.settings import Settings
from cds.store import Store, worker_name
from cds.store.audit_outbox import stage_alone

log = logging.getLogger(__name__)

T = TypeVar("T")


LANES: dict[str, tuple[str, ...]] = {
    "study": ("study",),  # mammography, ultrasound and any other non-slide study
    "slide": ("slide",),  # whole-slide images
    "case": ("case",),  # patient cases: recurrence fusion, PDF
    "imaging": ("study", "slide"),  # `cds serve`'s study threads when cases have their own
}
"""Worker lanes (`cds work --lane`) and the job lanes (:func:`cds.store.jobs.job_lane`) each claims."""


class LeaseHeartbeat:
    """Keeps a running job's lease alive while its handler runs.

    Without it a job that runs longer than ``job_lease_s`` (a large slide) would be claimed by a
    second worker and run twice. A worker that dies stops beating, so its job is taken over one
    lease after the last beat. Beats come every third of the lease, so one slow store write does
    not lose it.
    """

    def __init__(self, store: Store, job_id: int, worker: str, lease_s: float) -> None:
        self._store, self._job_id, self._worker, self._lease_s = store, job_id, worker, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cds-lease-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._lease_s / 3):
            try:
                if not self._store.extend_job_lease(self._job_id, self._worker, self._lease_s):
                    log.warning("job %d: lease lost (taken over by another worker)", self._job_id)
                    return
            except Exception:  # the store is briefly unavailable: try again at the next beat
                log.exception("job %d: lease heartbeat failed", self._job_id)

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class WorkerPool:
    def __init__(self, settings: Settings, store: Store, handlers: dict[str, JobHandler],
                 lanes: Sequence[str] = ()) -> None:
        """``lanes``: run only these lanes (`cds work --lane ...`); empty: as the settings say."""
        unknown = [lane for lane in lanes if lane not in LANES]
        if unknown:
            raise ValueError(f"unknown worker lane(s) {unknown}; expected some of {sorted(LANES)}")
        self.settings = settings
        self.store = store
        self.handlers = handlers
        self._lanes = tuple(lanes)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_one(self, worker: str, lane: str = "") -> bool:
        """Claim and run one due job of ``lane`` (all kinds when empty); False when none is due."""
        job = self.store.claim_job(worker, self.settings.job_lease_s, lanes=LANES.get(lane, ()))
        if job is None:
            return False
        handler = self.handlers.get(job.kind)
        if handler is None:
            self._record(job.id, lambda: self.store.fail_job(
                job.id, f"no handler for job kind {job.kind!r}", retry_delay_s=None, worker=worker))
            return True
        log.info("job %d (%s) attempt %d started", job.id, job.kind, job.attempts)
        held: list[dict[str, object]] = []  # the run's audit records (FHIR queries), committed with its outcome
        try:
            with holding() as held, LeaseHeartbeat(self.store, job.id, worker, self.settings.job_lease_s):
                note = handler(job)
        except PermanentError as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._record(job.id, lambda: self.store.fail_job(job.id, error, retry_delay_s=None, worker=worker))
            log.error("job %d dead: %s", job.id, exc)
        except PeerUnreachable as exc:
            # An outage of any length within the retry budget: capped backoff, never dead on the
            # attempt count; the dispatcher's probe makes it due when the peer answers again.
            within = self.settings.within_retry_budget(job.created_at, time.time())
            error = f"{type(exc).__name__}: {exc}"
            state = self._record(job.id, lambda: self.store.fail_job(
                job.id, error, ignore_attempts=within, worker=worker,
                retry_delay_s=self.settings.backoff_s(job.attempts) if within else None))
            log.warning("job %d (attempt %d) waits for %s, now %s", job.id, job.attempts, exc.peer, state)
        except Exception as exc:
            # TransientError, and anything unforeseen (a bug): retried with backoff until
            # max_attempts, then dead, so nothing is lost; the traceback goes to the log.
            delay = self.settings.backoff_s(job.attempts)
            error = f"{type(exc).__name__}: {exc}"
            state = self._record(job.id, lambda: self.store.fail_job(job.id, error, retry_delay_s=delay, worker=worker))
            log.exception("job %d failed (attempt %d), now %s", job.id, job.attempts, state)
        else:
            done = list(held)
            if self._record(job.id, lambda: self.store.finish_job(job.id, note or "", worker=worker, audit=done)):
                log.info("job %d done%s", job.id, f": {note}" if note else "")
            else:  # its lease expired and another worker took it over: that run records the outcome
                log.warning("job %d finished after its lease was taken over; outcome left to the new run",
                            job.id)
            held = []  # staged with the finish
        if held:  # a failed run's queries did read patient data: staged on their own
            failed = list(held)
            self._record(job.id, lambda: stage_alone(self.store, failed))
        after_commit(self.settings, self.store)
        return True

    def _record(self, job_id: int, action: Callable[[], T]) -> T:
        """Record a job's outcome, retrying while the store does not answer (a PostgreSQL restart)
        for up to one lease: the work is done, and giving up would leave the job 'running' until
        its lease runs out (15 minutes by default) and then run it again."""
        deadline = time.monotonic() + self.settings.job_lease_s
        delay = 0.25
        while True:
            try:
                return action()
            except Exception:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("job %d: recording its outcome failed; retrying in %.2f s", job_id, delay,
                            exc_info=True)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def drain(self, worker: str = "") -> int:
        """Run due jobs in this thread until none is due (used by `cds analyze` and tests)."""
        n = 0
        name = worker or worker_name("drain")
        while self.run_one(name):
            n += 1
        return n

    def _loop(self, name: str, lane: str) -> None:
        held = False  # a store failure may have left a job claimed by this thread without its knowing
        while not self._stop.is_set():
            try:
                if held:
                    released = self.store.release_held_jobs(name)
                    held = False
                    if released:
                        log.warning("worker %s: %d job(s) held during a store failure queued again", name, released)
                seen = self.store.jobs_ready.generation
                ran = self.run_one(name, lane)
            except Exception:  # the store itself failed; keep the worker alive
                log.exception("worker %s: a store operation failed (store unavailable?)", name)
                self._stop.wait(self.settings.poll_interval_s)
                held, ran = True, False
                continue
            if not ran:  # a job committed in this process wakes it at once; others' at the next poll
                self.store.jobs_ready.wait(seen, self.settings.poll_interval_s)

    def lanes(self) -> list[tuple[str, str]]:
        """(thread name, lane) of each worker: study workers, then the case lane when it has any.

        With explicit lanes, each gets ``workers`` threads (``case_workers`` for the case lane,
        at least one)."""
        if self._lanes:
            return [(f"{lane[0]}{i}", lane) for lane in self._lanes
                    for i in range(max(self.settings.case_workers, 1) if lane == "case" else self.settings.workers)]
        split = self.settings.case_workers > 0
        names = [(f"w{i}", "imaging" if split else "") for i in range(self.settings.workers)]
        return names + [(f"c{i}", "case") for i in range(self.settings.case_workers)]

    def start(self) -> None:
        for label, lane in self.lanes():
            t = threading.Thread(target=self._loop, args=(worker_name(label), lane),
                                 name=f"cds-worker-{label}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a job in progress finishes (or is recovered after restart)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
