"""The store: the single source of truth for instances, studies, cases, jobs, results and outbox.

SQLite in WAL mode with ``synchronous=FULL`` by default, so a committed row survives a power cut:
the listener acknowledges a C-STORE only after its row is committed here. Everything goes through
:class:`Store`; a PostgreSQL implementation can replace it by providing the same methods (the SQL
is plain and the claim queries use ``UPDATE ... RETURNING``, which PostgreSQL also has).

Connections are per thread (SQLite connections must not be shared across threads), held by the
store instance, never at module level.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from cds.contracts.domain import InstanceRecord, PatientRef

SCHEMA = """
CREATE TABLE IF NOT EXISTS patients (
    key TEXT PRIMARY KEY, patient_id TEXT, issuer TEXT, name TEXT, birth_date TEXT, sex TEXT,
    first_seen REAL, updated_at REAL);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, patient_key TEXT, accession TEXT, study_date TEXT,
    first_received REAL, last_received REAL, state TEXT NOT NULL DEFAULT 'receiving',
    generation INTEGER NOT NULL DEFAULT 0, stable_at REAL, n_instances INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS studies_state ON studies(state, last_received);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, sop_class TEXT, study_uid TEXT, series_uid TEXT, modality TEXT,
    path TEXT, transfer_syntax TEXT, size INTEGER, calling_ae TEXT, received_at REAL,
    generation INTEGER, duplicates INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid, modality);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY, at REAL, calling_ae TEXT, sop_uid TEXT, status INTEGER, reason TEXT,
    quarantine_path TEXT);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL UNIQUE, payload TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
    next_run_at REAL NOT NULL, lease_until REAL, worker TEXT, last_error TEXT,
    created_at REAL, updated_at REAL, finished_at REAL);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(state, next_run_at);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, job_id INTEGER, kind TEXT, patient_key TEXT, study_uid TEXT,
    modality TEXT, model TEXT, model_version TEXT, status TEXT, summary TEXT, body TEXT,
    created_at REAL);
CREATE INDEX IF NOT EXISTS results_patient ON results(patient_key, kind);
CREATE TABLE IF NOT EXISTS cases (
    patient_key TEXT PRIMARY KEY, updated_at REAL, fingerprint TEXT, evaluated_at REAL,
    last_job_id INTEGER);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, destination TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
    payload_path TEXT NOT NULL, meta TEXT, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at REAL NOT NULL,
    lease_until REAL, worker TEXT, created_at REAL, delivered_at REAL, response TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
"""


class Job(BaseModel):
    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    next_run_at: float
    last_error: str | None = None
    worker: str | None = None
    created_at: float | None = None
    updated_at: float | None = None


class OutboxItem(BaseModel):
    id: int
    kind: str
    destination: str
    key: str
    payload_path: Path
    meta: dict[str, Any] = Field(default_factory=dict)
    state: str
    attempts: int
    last_error: str | None = None
    next_attempt_at: float
    created_at: float | None = None
    delivered_at: float | None = None


class ResultRow(BaseModel):
    id: int
    job_id: int | None
    kind: str
    patient_key: str
    study_uid: str | None
    modality: str | None
    model: str | None
    model_version: str | None
    status: str
    summary: str | None
    body: dict[str, Any] | None
    created_at: float


def worker_name(suffix: str = "") -> str:
    """host:pid[:suffix] — lets a restarted service tell its own dead jobs from a live peer's."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}:{suffix}" if suffix else name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """SQLite-backed store. One instance per process; thread-safe through per-thread connections."""

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        if not url.startswith("sqlite:///"):
            raise ValueError(
                f"store URL {url!r} is not supported: only sqlite:///PATH is built in "
                "(a PostgreSQL store implementing the same methods is the planned alternative)"
            )
        self.path = Path(url.removeprefix("sqlite:///"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._local = threading.local()
        self._con().executescript(SCHEMA)  # idempotent DDL; executescript manages its own commit

    # -- connection handling ----------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(f"PRAGMA synchronous={self._synchronous}")
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: takes the write lock up front, no upgrade races)."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        else:
            con.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self._con().execute(sql, params).fetchall()

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- intake -----------------------------------------------------------------------------
    def record_instance(
        self,
        rec: InstanceRecord,
        patient: PatientRef,
        *,
        accession: str = "",
        study_date: str = "",
    ) -> bool:
        """Index one durably spooled instance. Returns False for a duplicate SOP Instance UID.

        A new instance in a study that was already stable opens a new generation of the study,
        so its jobs run again with everything received (results are per generation).
        """
        now = time.time()
        with self.tx() as con:
            dup = con.execute(
                "SELECT 1 FROM instances WHERE sop_uid=?", (rec.sop_instance_uid,)
            ).fetchone()
            if dup:
                con.execute(
                    "UPDATE instances SET duplicates=duplicates+1 WHERE sop_uid=?",
                    (rec.sop_instance_uid,),
                )
                return False
            con.execute(
                """INSERT INTO patients(key, patient_id, issuer, name, birth_date, sex, first_seen,
                   updated_at) VALUES (?,?,?,?,?,?,?,?)
                   ON CONFLICT(key) DO UPDATE SET name=excluded.name,
                   birth_date=excluded.birth_date, sex=excluded.sex, updated_at=excluded.updated_at""",
                (patient.key, patient.patient_id, patient.issuer, patient.name,
                 patient.birth_date, patient.sex, now, now),
            )
            row = con.execute(
                "SELECT state, generation FROM studies WHERE study_uid=?",
                (rec.study_instance_uid,),
            ).fetchone()
            if row is None:
                generation = 0
                con.execute(
                    """INSERT INTO studies(study_uid, patient_key, accession, study_date,
                       first_received, last_received, state, generation, n_instances)
                       VALUES (?,?,?,?,?,?, 'receiving', 0, 1)""",
                    (rec.study_instance_uid, patient.key, accession, study_date, now, now),
                )
            else:
                generation = row["generation"] + (1 if row["state"] == "stable" else 0)
                con.execute(
                    """UPDATE studies SET last_received=?, state='receiving', generation=?,
                       n_instances=n_instances+1 WHERE study_uid=?""",
                    (now, generation, rec.study_instance_uid),
                )
            con.execute(
                """INSERT INTO instances(sop_uid, sop_class, study_uid, series_uid, modality, path,
                   transfer_syntax, size, calling_ae, received_at, generation)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                (rec.sop_instance_uid, rec.sop_class_uid, rec.study_instance_uid,
                 rec.series_instance_uid, rec.modality, str(rec.path), rec.transfer_syntax_uid,
                 rec.size_bytes, rec.calling_ae, now, generation),
            )
        return True

    def record_rejection(
        self, calling_ae: str, sop_uid: str, status: int, reason: str, quarantine_path: str = ""
    ) -> None:
        with self.tx() as con:
            con.execute(
                """INSERT INTO rejections(at, calling_ae, sop_uid, status, reason, quarantine_path)
                   VALUES (?,?,?,?,?,?)""",
                (time.time(), calling_ae, sop_uid, status, reason, quarantine_path),
            )

    def instance_exists(self, sop_uid: str) -> bool:
        return bool(self.query("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)))

    def study_instances(self, study_uid: str, modality: str | None = None) -> list[InstanceRecord]:
        sql = "SELECT * FROM instances WHERE study_uid=?"
        params: tuple = (study_uid,)
        if modality:
            sql += " AND modality=?"
            params += (modality,)
        return [
            InstanceRecord(
                sop_instance_uid=r["sop_uid"], sop_class_uid=r["sop_class"],
                study_instance_uid=r["study_uid"], series_instance_uid=r["series_uid"],
                modality=r["modality"], path=Path(r["path"]),
                transfer_syntax_uid=r["transfer_syntax"] or "", size_bytes=r["size"] or 0,
                calling_ae=r["calling_ae"] or "",
            )
            for r in self.query(sql + " ORDER BY received_at, sop_uid", params)
        ]

    def study(self, study_uid: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM studies WHERE study_uid=?", (study_uid,))
        return rows[0] if rows else None

    def patient(self, key: str) -> PatientRef | None:
        rows = self.query("SELECT * FROM patients WHERE key=?", (key,))
        if not rows:
            return None
        r = rows[0]
        return PatientRef(patient_id=r["patient_id"] or "", issuer=r["issuer"] or "",
                          name=r["name"] or "", birth_date=r["birth_date"] or "", sex=r["sex"] or "")

    # -- stability -> jobs ------------------------------------------------------------------
    def promote_stable_studies(self, stable_age_s: float, max_attempts: int) -> list[str]:
        """Mark studies quiet for ``stable_age_s`` as stable and enqueue one job per modality.

        Done in one transaction, so a crash either leaves the study 'receiving' (checked again
        next tick) or stable with its jobs queued; never stable without jobs.
        """
        now = time.time()
        promoted: list[str] = []
        with self.tx() as con:
            rows = con.execute(
                "SELECT study_uid, generation, patient_key FROM studies "
                "WHERE state='receiving' AND last_received<=?",
                (now - stable_age_s,),
            ).fetchall()
            for r in rows:
                modalities = [
                    m["modality"]
                    for m in con.execute(
                        "SELECT DISTINCT modality FROM instances WHERE study_uid=?",
                        (r["study_uid"],),
                    )
                ]
                con.execute(
                    "UPDATE studies SET state='stable', stable_at=? WHERE study_uid=?",
                    (now, r["study_uid"]),
                )
                for modality in modalities:
                    self._enqueue(
                        con, "study",
                        f"study:{r['study_uid']}:{modality}:g{r['generation']}",
                        {"study_uid": r["study_uid"], "modality": modality,
                         "generation": r["generation"], "patient_key": r["patient_key"]},
                        max_attempts, now,
                    )
                promoted.append(r["study_uid"])
        return promoted

    # -- jobs -------------------------------------------------------------------------------
    @staticmethod
    def _enqueue(con: sqlite3.Connection, kind: str, key: str, payload: dict, max_attempts: int,
                 now: float, delay_s: float = 0.0) -> int:
        con.execute(
            """INSERT INTO jobs(kind, key, payload, state, attempts, max_attempts, next_run_at,
               created_at, updated_at) VALUES (?,?,?, 'queued', 0, ?, ?, ?, ?)
               ON CONFLICT(key) DO NOTHING""",
            (kind, key, json.dumps(payload), max_attempts, now + delay_s, now, now),
        )
        return con.execute("SELECT id FROM jobs WHERE key=?", (key,)).fetchone()["id"]

    def enqueue(self, kind: str, key: str, payload: dict, max_attempts: int = 5,
                delay_s: float = 0.0) -> int:
        """Queue a job; idempotent on ``key`` (the existing job's id is returned)."""
        with self.tx() as con:
            return self._enqueue(con, kind, key, payload, max_attempts, time.time(), delay_s)

    def claim_job(self, worker: str, lease_s: float, *, only: Sequence[str] = (),
                  exclude: Sequence[str] = ()) -> Job | None:
        """Take the next due job (or one whose lease expired) and mark it running.

        ``only`` / ``exclude`` restrict the job kinds, so that a worker lane (study jobs, case
        jobs) never waits behind the other lane's work.
        """
        now = time.time()
        kind_sql, kind_params = "", ()
        if only:
            kind_sql += f" AND kind IN ({','.join('?' * len(only))})"
            kind_params += tuple(only)
        if exclude:
            kind_sql += f" AND kind NOT IN ({','.join('?' * len(exclude))})"
            kind_params += tuple(exclude)
        with self.tx() as con:
            row = con.execute(
                f"""UPDATE jobs SET state='running', attempts=attempts+1, lease_until=?, worker=?,
                   updated_at=? WHERE id = (
                     SELECT id FROM jobs WHERE ((state='queued' AND next_run_at<=?)
                        OR (state='running' AND lease_until<?)){kind_sql}
                     ORDER BY next_run_at, id LIMIT 1)
                   RETURNING *""",
                (now + lease_s, worker, now, now, now, *kind_params),
            ).fetchone()
        return self._job(row) if row else None

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        d = dict(row)
        d["payload"] = json.loads(d["payload"] or "{}")
        return Job.model_validate({k: d[k] for k in Job.model_fields if k in d})

    def job(self, job_id: int) -> Job | None:
        rows = self.query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return self._job(rows[0]) if rows else None

    def finish_job(self, job_id: int, note: str = "") -> None:
        now = time.time()
        with self.tx() as con:
            con.execute(
                "UPDATE jobs SET state='done', finished_at=?, updated_at=?, last_error=? WHERE id=?",
                (now, now, note or None, job_id),
            )

    def fail_job(self, job_id: int, error: str, *, retry_delay_s: float | None) -> str:
        """Record a failure: back to the queue after ``retry_delay_s``, or dead-letter when the
        attempts are used up or the error is permanent (``retry_delay_s=None``)."""
        now = time.time()
        with self.tx() as con:
            row = con.execute("SELECT attempts, max_attempts FROM jobs WHERE id=?", (job_id,)).fetchone()
            if retry_delay_s is None or row["attempts"] >= row["max_attempts"]:
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
        """Requeue 'running' jobs and outbox items whose worker process on this host is gone.

        Called at start-up: after a SIGKILL the previous process's jobs are still 'running'; a job
        of another live process (same host) or another host is left to its lease.
        """
        host = socket.gethostname()
        n = 0
        now = time.time()
        with self.tx() as con:
            for table, state in (("jobs", "queued"), ("outbox", "pending")):
                busy = "running" if table == "jobs" else "delivering"
                due = "next_run_at" if table == "jobs" else "next_attempt_at"
                for r in con.execute(f"SELECT id, worker FROM {table} WHERE state=?", (busy,)).fetchall():
                    parts = (r["worker"] or "").split(":")
                    if len(parts) >= 2 and parts[0] == host and parts[1].isdigit():
                        if _pid_alive(int(parts[1])) and int(parts[1]) != os.getpid():
                            continue
                        con.execute(
                            f"UPDATE {table} SET state=?, {due}=?, lease_until=NULL WHERE id=?",
                            (state, now, r["id"]),
                        )
                        n += 1
        return n

    def _rows(self, table: str, state: str | None, limit: int) -> list[sqlite3.Row]:
        if state:
            return self.query(f"SELECT * FROM {table} WHERE state=? ORDER BY id DESC LIMIT ?", (state, limit))
        return self.query(f"SELECT * FROM {table} ORDER BY id DESC LIMIT ?", (limit,))

    def jobs(self, state: str | None = None, limit: int = 200) -> list[Job]:
        return [self._job(r) for r in self._rows("jobs", state, limit)]

    def pending_work(self) -> int:
        """Jobs not yet finished plus studies not yet stable (the demo waits for zero)."""
        jobs = self.query("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')")[0][0]
        studies = self.query("SELECT COUNT(*) FROM studies WHERE state='receiving'")[0][0]
        outbox = self.query("SELECT COUNT(*) FROM outbox WHERE state IN ('pending','delivering')")[0][0]
        return int(jobs) + int(studies) + int(outbox)

    # -- results ----------------------------------------------------------------------------
    def replace_results(self, job_id: int, rows: list[dict[str, Any]]) -> list[int]:
        """Write a job's results, replacing any from an earlier attempt (jobs are idempotent)."""
        now = time.time()
        ids = []
        with self.tx() as con:
            con.execute("DELETE FROM results WHERE job_id=?", (job_id,))
            for r in rows:
                cur = con.execute(
                    """INSERT INTO results(job_id, kind, patient_key, study_uid, modality, model,
                       model_version, status, summary, body, created_at)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                    (job_id, r["kind"], r["patient_key"], r.get("study_uid"), r.get("modality"),
                     r.get("model"), r.get("model_version"), r["status"], r.get("summary"),
                     json.dumps(r.get("body")) if r.get("body") is not None else None, now),
                )
                ids.append(int(cur.lastrowid))
        return ids

    def results(self, *, patient_key: str | None = None, kind: str | None = None,
                study_uid: str | None = None, limit: int = 500) -> list[ResultRow]:
        sql, params = "SELECT * FROM results WHERE 1=1", []
        for col, val in (("patient_key", patient_key), ("kind", kind), ("study_uid", study_uid)):
            if val is not None:
                sql += f" AND {col}=?"
                params.append(val)
        rows = self.query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        out = []
        for r in rows:
            d = dict(r)
            d["body"] = json.loads(d["body"]) if d["body"] else None
            out.append(ResultRow.model_validate(d))
        return out

    # -- cases ------------------------------------------------------------------------------
    def case_fingerprint(self, patient_key: str) -> str | None:
        rows = self.query("SELECT fingerprint FROM cases WHERE patient_key=?", (patient_key,))
        return rows[0]["fingerprint"] if rows else None

    def set_case(self, patient_key: str, fingerprint: str | None, job_id: int | None) -> None:
        now = time.time()
        with self.tx() as con:
            con.execute(
                """INSERT INTO cases(patient_key, updated_at, fingerprint, evaluated_at, last_job_id)
                   VALUES (?,?,?,?,?) ON CONFLICT(patient_key) DO UPDATE SET
                   updated_at=excluded.updated_at,
                   fingerprint=COALESCE(excluded.fingerprint, cases.fingerprint),
                   evaluated_at=COALESCE(excluded.evaluated_at, cases.evaluated_at),
                   last_job_id=COALESCE(excluded.last_job_id, cases.last_job_id)""",
                (patient_key, now, fingerprint, now if fingerprint else None, job_id),
            )

    def active_patients(self, since: float) -> list[str]:
        """Patient keys with a study received since ``since`` (epoch seconds)."""
        return [r[0] for r in self.query(
            "SELECT DISTINCT patient_key FROM studies WHERE last_received>=?", (since,))]

    # -- outbox -----------------------------------------------------------------------------
    def outbox_add(self, kind: str, destination: str, key: str, payload_path: Path,
                   meta: dict[str, Any]) -> int:
        """Queue one output for delivery; idempotent on ``key`` (re-runs never duplicate)."""
        now = time.time()
        with self.tx() as con:
            con.execute(
                """INSERT INTO outbox(kind, destination, key, payload_path, meta, state,
                   next_attempt_at, created_at) VALUES (?,?,?,?,?, 'pending', ?, ?)
                   ON CONFLICT(key) DO UPDATE SET payload_path=excluded.payload_path,
                   meta=excluded.meta
                   WHERE outbox.state IN ('pending')""",
                (kind, destination, key, str(payload_path), json.dumps(meta), now, now),
            )
            return int(con.execute("SELECT id FROM outbox WHERE key=?", (key,)).fetchone()["id"])

    @staticmethod
    def _outbox(row: sqlite3.Row) -> OutboxItem:
        d = dict(row)
        d["meta"] = json.loads(d["meta"] or "{}")
        return OutboxItem.model_validate({k: d[k] for k in OutboxItem.model_fields if k in d})

    def outbox_claim(self, worker: str, lease_s: float) -> OutboxItem | None:
        now = time.time()
        with self.tx() as con:
            row = con.execute(
                """UPDATE outbox SET state='delivering', attempts=attempts+1, lease_until=?,
                   worker=? WHERE id = (
                     SELECT id FROM outbox WHERE (state='pending' AND next_attempt_at<=?)
                        OR (state='delivering' AND lease_until<?)
                     ORDER BY next_attempt_at, id LIMIT 1)
                   RETURNING *""",
                (now + lease_s, worker, now, now),
            ).fetchone()
        return self._outbox(row) if row else None

    def outbox_delivered(self, item_id: int, response: str) -> None:
        with self.tx() as con:
            con.execute(
                "UPDATE outbox SET state='delivered', delivered_at=?, response=?, last_error=NULL "
                "WHERE id=?",
                (time.time(), response, item_id),
            )

    def outbox_retry(self, item_id: int, error: str, delay_s: float) -> None:
        with self.tx() as con:
            con.execute(
                "UPDATE outbox SET state='pending', last_error=?, next_attempt_at=? WHERE id=?",
                (error, time.time() + delay_s, item_id),
            )

    def outbox_dead(self, item_id: int, reason: str) -> None:
        with self.tx() as con:
            con.execute(
                "UPDATE outbox SET state='dead', last_error=? WHERE id=?", (reason, item_id)
            )

    def outbox_items(self, state: str | None = None, limit: int = 100) -> list[OutboxItem]:
        return [self._outbox(r) for r in self._rows("outbox", state, limit)]

    # -- status -----------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """Row counts per state, for ``cds status`` and health checks."""
        out: dict[str, dict[str, int]] = {}
        for table, col in (("studies", "state"), ("jobs", "state"), ("outbox", "state"),
                           ("results", "status")):
            out[table] = {r[0]: r[1] for r in self.query(
                f"SELECT {col}, COUNT(*) FROM {table} GROUP BY {col}")}
        out["instances"] = {"total": self.query("SELECT COUNT(*) FROM instances")[0][0]}
        out["rejections"] = {"total": self.query("SELECT COUNT(*) FROM rejections")[0][0]}
        out["cases"] = {"total": self.query("SELECT COUNT(*) FROM cases")[0][0]}
        return out
