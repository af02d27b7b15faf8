"""The store's tables (idempotent DDL, run at every start) and its versioned migrations.

Written in the SQLite dialect; on PostgreSQL :mod:`cds.store.dialect` maps the column types
(INTEGER PRIMARY KEY -> identity BIGINT, INTEGER -> BIGINT, REAL -> DOUBLE PRECISION, BLOB -> BYTEA).
"""

from __future__ import annotations

from typing import NamedTuple

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
    payload_path TEXT NOT NULL, payload BLOB, meta TEXT, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at REAL NOT NULL,
    lease_until REAL, worker TEXT, created_at REAL, delivered_at REAL, response TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY, result_id INTEGER NOT NULL, patient_key TEXT, study_uid TEXT,
    model TEXT, model_version TEXT, outcome TEXT NOT NULL, reason TEXT, decision TEXT,
    removed_lesions TEXT, reviewer TEXT NOT NULL, reviewer_display TEXT, created_at REAL NOT NULL,
    sr_uid TEXT);
CREATE INDEX IF NOT EXISTS reviews_result ON reviews(result_id, id);
CREATE TABLE IF NOT EXISTS model_switches (
    model TEXT PRIMARY KEY, enabled INTEGER NOT NULL, changed_by TEXT, changed_at REAL, reason TEXT);
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL);
"""


class Migration(NamedTuple):
    """One schema change, applied once per store (recorded in ``schema_version``), in order.

    ``column`` (``table.column``) is checked first, so a store whose column already exists (added
    by hand, or by a start that crashed before recording it) is not altered twice.
    """

    version: int
    name: str
    column: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs.priority: a mammography exam before a slide batch (lower runs first)", "jobs.priority", (
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 5",
        "UPDATE jobs SET priority=0 WHERE kind='study' AND json_extract(payload, '$.modality')='MG'",
        "UPDATE jobs SET priority=8 WHERE kind='case'",
        "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(state, priority, next_run_at, id)",
    )),
    Migration(2, "jobs.lane: study, slide and case workers scale apart (cds work --lane)", "jobs.lane", (
        "ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT 'study'",
        "UPDATE jobs SET lane='case' WHERE kind='case'",
        "UPDATE jobs SET lane='slide' WHERE kind='study' AND json_extract(payload, '$.modality')='SM'",
    )),
    # WHY: an audit record written to the chain file outside the store's transaction is lost by a
    # crash after the commit, or describes work a rollback undid. The stages stage it here in the
    # transaction of the state change it describes; cds.audit.drain appends it to the chain and
    # deletes it. ``drained_at``: set just before an append, so that after a crash between the
    # append and the delete only those rows are looked for in the chain's tail.
    Migration(3, "audit_pending: audit records committed with the state change they describe",
              "audit_pending.id", (
        "CREATE TABLE IF NOT EXISTS audit_pending (id INTEGER PRIMARY KEY, record TEXT NOT NULL, "
        "created REAL NOT NULL, drained_at REAL)",
    )),
)

