"""Rows waiting for a peer are found by its marker and woken at once; a peer outage within the
retry budget never dead-letters a job on its attempt count."""

from __future__ import annotations

import time

from cds.contracts.errors import PeerUnreachable
from cds.contracts.handoffs import CaseJobPayload
from cds.contracts.settings import Settings
from cds.scheduling.workers import WorkerPool
from cds.store import Store


def test_outage_retries_past_max_attempts_then_wakes(tmp_path, store: Store):
    settings = Settings(data_dir=tmp_path, job_max_attempts=1, job_backoff_base_s=100.0)

    def down(job):
        raise PeerUnreachable("fhir", "connection refused")

    pool = WorkerPool(settings, store, {"case": down})
    job_id = store.enqueue("case", "case:k:1", CaseJobPayload(patient_key="k"), settings.job_max_attempts)
    assert pool.run_one("w")
    job = store.job(job_id)
    assert job.state == "queued" and job.attempts == 1 and "[peer:fhir]" in job.last_error
    assert job.next_run_at > time.time() + 50  # in backoff
    assert store.waiting_on("fhir") == 1 and store.waiting_on("pacs") == 0
    assert store.wake_waiting("fhir") == 1 and store.job(job_id).next_run_at <= time.time()
    assert pool.run_one("w") and store.job(job_id).state == "queued"  # attempt 2 > max 1: still not dead


def test_outage_past_the_budget_is_dead(tmp_path, store: Store):
    settings = Settings(data_dir=tmp_path, retry_budget_h=1e-9)

    def down(job):
        raise PeerUnreachable("fhir", "connection refused")

    job_id = store.enqueue("case", "case:k:1", CaseJobPayload(patient_key="k"))
    WorkerPool(settings, store, {"case": down}).run_one("w")
    assert store.job(job_id).state == "dead"
