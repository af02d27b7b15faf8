"""The job queue: enqueue, claim (with leases), finish, fail/dead-letter, orphan recovery."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cds.contracts.handoffs import Job, JobPayload, StudyJobPayload
from cds.store.audit_outbox import stage
from cds.store.db import Database
from cds.store.pg_notify import JOBS_CHANNEL

PRIORITY_MG, PRIORITY_DEFAULT, PRIORITY_CASE = 0, 5, 8
"""Claim order (lower runs first): a mammography exam before a slide batch, and a patient case
after the study jobs due with it, so that one case evaluation sees all of them (in `cds serve`
cases have their own worker lane, so this delays no case behind a slide batch there)."""


def process_space() -> str:
    """Where a pid means one process: ``hostname@<boot and pid namespace>``.

    A hostname alone is not enough: two containers sharing a host's network (and so its hostname)
    have separate pid namespaces, and two machines may share a name. The boot id and the pid
    namespace's inode tell them apart, so a restarted process only requeues jobs of dead processes
    it can really see; everything else waits for its lease."""
    marks = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            marks.append(Path(path).read_text().strip() if path.endswith("boot_id") else str(os.stat(path).st_ino))
        except OSError:
            marks.append("")
    digest = hashlib.sha256("/".join(marks).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}@{digest}"


def worker_name(suffix: str = "") -> str:
    """space:pid[:suffix] (:func:`process_space`) — lets a restarted service tell its own dead
    jobs from a live peer's."""
    name = f"{process_space()}:{os.getpid()}"
    return f"{name}:{suffix}" if suffix else name


def process_gone(name: str, space: str = "") -> bool:
    """True when ``name`` (a :func:`worker_name`) is a process of this process space that no longer
    runs; a process elsewhere, or one still alive, is never judged gone. ``space``: this process's
    :func:`process_space`, when the caller judges many names (read from /proc otherwise)."""
    parts = name.split(":")
    if len(parts) < 2 or parts[0] != (space or process_space()) or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid == os.getpid() or not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_lane(kind: str, payload: JobPayload) -> str:
    """The worker lane that runs the job: ``case``, ``slide`` (SM studies) or ``study``.

    Slides get their own lane so that `cds work --lane study` processes on small machines never
    pick up a multi-gigabyte slide, and a slide batch never occupies every study worker."""
    if kind == "case":
        return "case"
    if isinstance(payload, StudyJobPayload) and payload.modality == "SM":
        return "slide"
    return "study"


def job_priority(kind: str, payload: JobPayload) -> int:
    """A study job of a mammography exam 0, a case 8, anything else (slides, SM) 5.

    A radiologist reads the exam within minutes; a slide batch of a thousand slides a day must
    not hold it back, so claims order by (priority, due time, id)."""
    if kind == "study" and isinstance(payload, StudyJobPayload) and payload.modality == "MG":
        return PRIORITY_MG
    if kind == "case":
        return PRIORITY_CASE
    return PRIORITY_DEFAULT


def insert_job(con: Any, kind: str, key: str, payload: JobPayload,
               max_attempts: int, now: float, delay_s: float = 0.0) -> int:
    """Queue a job inside the caller's transaction; idempotent on ``key``."""
    con.execute(
        """INSERT INTO jobs(kind, key, payload, state, attempts, max_attempts, next_run_at,
           created_at, updated_at, priority, lane) VALUES (?,?,?, 'queued', 0, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(key) DO NOTHING""",
        (kind, key, payload.model_dump_json(), max_attempts, now + delay_s, now, now,
         job_priority(kind, payload), job_lane(kind, payload)),
    )
    return int(con.execute("SELECT id FROM jobs WHERE key=?", (key,)).fetchone()["id"])


def _job(row: Any) -> Job:
    d = dict(row)
    d["payload"] = json.loads(d["payload"] or "{}")
    return Job.model_validate({k: d[k] for k in Job.model_fields if k in d})


class JobStore(Database):
    """Jobs are claimed with a lease; a worker that dies leaves its job to the lease or recovery."""

    def enqueue(self, kind: str, key: str, payload: JobPayload, max_attempts: int = 5,
                delay_s: float = 0.0) -> int:
        """Queue a job; idempotent on ``key`` (the existing job's id is returned)."""
        with self.tx() as con:
            job_id = insert_job(con, kind, key, payload, max_attempts, time.time(), delay_s)
            self._announce(con, JOBS_CHANNEL)
        self.jobs_ready.notify()
        return job_id

    def claim_job(self, worker: str, lease_s: float, *, only: Sequence[str] = (),
                  exclude: Sequence[str] = (), lanes: Sequence[str] = ()) -> Job | None:
        """Take the next due job (or one whose lease expired) and mark it running.

        ``lanes`` restricts the claim to those worker lanes (:func:`job_lane`), so that a lane
        never waits behind another lane's work; ``only`` / ``exclude`` restrict the job kinds.
        """
        now = time.time()
        kind_sql = ""
        kind_params: tuple[str, ...] = ()
        if lanes:
            kind_sql += f" AND lane IN ({','.join('?' * len(lanes))})"
            kind_params += tuple(lanes)
        if only:
            kind_sql += f" AND kind IN ({','.join('?' * len(only))})"
            kind_params += tuple(only)
        if exclude:
            kind_sql += f" AND kind NOT IN ({','.join('?' * len(exclude))})"
            kind_params += tuple(exclude)
        with self.tx(isolation="read committed") as con:
            row = con.execute(
                f"""UPDATE jobs SET state='running', attempts=attempts+1, lease_until=?, worker=?,
                   updated_at=? WHERE id = (
                     SELECT id FROM jobs WHERE ((state='queued' AND next_run_at<=?)
                        OR (state='running' AND lease_until<?)){kind_sql}
                     ORDER BY priority, next_run_at, id LIMIT 1{self.dialect.skip_locked})
                   RETURNING *""",
                (now + lease_s, worker, now, now, now, *kind_params),
            ).fetchone()
        return _job(row) if row else None

    def release_held_jobs(self, worker: str) -> int:
        """Queue again, due now, the jobs ``worker`` still holds (see :meth:`outbox_release_held`):
        a worker thread calls it when it holds no job it knows of, after a store failure."""
        now = time.time()
        with self.tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state='queued', next_run_at=?, lease_until=NULL, updated_at=? "
                "WHERE state='running' AND worker=?", (now, now, worker))
        return int(cur.rowcount or 0)

    def extend_job_lease(self, job_id: int, worker: str, lease_s: float) -> bool:
        """Push a running job's lease forward while its worker is alive (the heartbeat).

        False when the worker no longer holds the job (its lease expired and another took it).
        """
        now = time.time()
        with self.tx() as con:
            cur = con.execute(
                "UPDATE jobs SET lease_until=?, updated_at=? WHERE id=? AND state='running' AND worker=?",
                (now + lease_s, now, job_id, worker))
        return cur.rowcount == 1

    def job(self, job_id: int) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, state: str | None = None, limit: int = 200) -> list[Job]:
        return [_job(r) for r in self._rows("jobs", state, limit)]

    def finish_job(self, job_id: int, note: str = "", *, worker: str | None = None,
                   audit: Sequence[dict[str, Any]] = ()) -> bool:
        """Mark a running job done. With ``worker``, only while that worker still holds it: a run
        whose lease expired and was taken over must not overwrite the other run's outcome.

        ``audit``: the run's audit records (its FHIR queries), committed in the same transaction
        (:mod:`cds.store.audit_outbox`); staged even when the job was taken over, since this run's
        queries did read patient data."""
        now = time.time()
        with self.tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state='done', finished_at=?, updated_at=?, last_error=? "
                "WHERE id=? AND state='running' AND (? IS NULL OR worker=?)",
                (now, now, note or None, job_id, worker, worker),
            )
            stage(con, audit)
        return cur.rowcount == 1

    def fail_job(self, job_id: int, error: str, *, retry_delay_s: float | None,
                 ignore_attempts: bool = False, worker: str | None = None) -> str:
        """Record a failure: back to the queue after ``retry_delay_s``, or dead-letter when the
        attempts are used up or the error is permanent (``retry_delay_s=None``).
        ``ignore_attempts``: a peer outage within the retry budget; the attempt count does not
        dead-letter it."""
        now = time.time()
        with self.tx() as con:
            row = con.execute("SELECT attempts, max_attempts, state, worker FROM jobs WHERE id=?",
                              (job_id,)).fetchone()
            if row["state"] != "running" or (worker is not None and row["worker"] != worker):
                return str(row["state"])  # taken over after its lease expired: not ours to record
            if retry_delay_s is None or (row["attempts"] >= row["max_attempts"] and not ignore_attempts):
                state = "dead"
                con.execute(
                    "UPDATE jobs SET state='dead', last_error=?, updated_at=?, finished_at=? WHERE id=?",
                    (error, now, now, job_id),
                )
            else:
                state = "queued"
                con.execute(
                    "UPDATE jobs SET state='queued', last_error=?, updated_at=?, next_run_at=? WHERE id=?",
                    (error, now, now + retry_delay_s, job_id),
                )
        return state

    def recover_orphans(self) -> int:
        """Requeue 'running' jobs and outbox items whose worker process in this process space
        (:func:`process_space`: same host, boot and pid namespace) is gone.

        Called at start-up: after a SIGKILL the previous process's jobs are still 'running'; a job
        of another live process, or of a process this one cannot see, is left to its lease.
        """
        n = 0
        now = time.time()
        space = process_space()
        with self.tx() as con:
            for table, state in (("jobs", "queued"), ("outbox", "pending")):
                busy = "running" if table == "jobs" else "delivering"
                due = "next_run_at" if table == "jobs" else "next_attempt_at"
                for r in con.execute(f"SELECT id, worker FROM {table} WHERE state=?", (busy,)).fetchall():
                    if process_gone(r["worker"] or "", space):
                        con.execute(
                            f"UPDATE {table} SET state=?, {due}=?, lease_until=NULL WHERE id=?",
                            (state, now, r["id"]),
                        )
                        n += 1
        return n
