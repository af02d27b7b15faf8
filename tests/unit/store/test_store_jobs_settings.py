"""Store, job queue, backoff, dead-letter, orphan recovery, outbox idempotency, settings names.

The ``store`` fixture (conftest.py) runs each store test on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from cds.contracts.domain import InstanceRecord, PatientRef
from cds.contracts.errors import PermanentError
from cds.contracts.handoffs import (
    CaseJobPayload,
    NewOutput,
    NewResult,
    OutboxMeta,
    StudyJobPayload,
)
from cds.contracts.settings import Settings
from cds.scheduling.workers import WorkerPool
from cds.store import worker_name


def rec(sop: str, study: str = "1.2.3", modality: str = "MG") -> InstanceRecord:
    return InstanceRecord(sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
                          study_instance_uid=study, series_instance_uid=study + ".1",
                          modality=modality, path=Path(f"/spool/{sop}.dcm"))


CASE = CaseJobPayload(patient_key="p1")  # a kind other than "study" carries a case payload


def test_settings_env_names_and_defaults(monkeypatch, tmp_path):
    s = Settings()
    assert (s.ae_title, s.port, s.data_dir, s.allowed_aes) == ("CDS", 11112, Path("./cds-data"), [])
    for k, v in {"CDS_AE_TITLE": "SITECDS", "CDS_PORT": "4242", "CDS_DATA_DIR": str(tmp_path),
                 "CDS_STABLE_AGE_S": "7", "CDS_ALLOWED_AES": "PACS1, PACS2", "CDS_PACS_AE_TITLE": "PACS",
                 "CDS_PACS_HOST": "127.0.0.1", "CDS_PACS_PORT": "4243",
                 "CDS_DICOMWEB_URL": "http://127.0.0.1/dicom-web", "CDS_FHIR_BASE_URL": "http://127.0.0.1/fhir",
                 "CDS_OUTPUT_DIR": str(tmp_path / "o")}.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.ae_title == "SITECDS" and s.port == 4242 and s.stable_age_s == 7
    assert s.allowed_aes == ["PACS1", "PACS2"] and s.pacs_port == 4243 and s.pacs_configured
    toml = tmp_path / "cds.toml"
    toml.write_text('ae_title = "FROMTOML"\nworkers = 3\n')
    monkeypatch.delenv("CDS_AE_TITLE")
    monkeypatch.setenv("CDS_CONFIG", str(toml))
    s = Settings()
    assert s.ae_title == "FROMTOML" and s.workers == 3 and s.port == 4242  # env beats file


def test_duplicate_instances_and_generations(store):
    p = PatientRef(patient_id="P1")
    assert store.record_instance(rec("1"), p) is True
    assert store.record_instance(rec("1"), p) is False
    store.promote_stable_studies(0, 3)
    assert (study := store.study("1.2.3")) and study.state == "stable"
    assert [j.key for j in store.jobs()] == ["study:1.2.3:MG:g0"]
    assert store.jobs()[0].study == StudyJobPayload(study_uid="1.2.3", modality="MG", patient_key=p.key)
    store.record_instance(rec("2"), p)  # a late instance: new generation, new job when stable
    assert (study := store.study("1.2.3")) and study.generation == 1
    store.promote_stable_studies(0, 3)
    assert sorted(j.key for j in store.jobs()) == ["study:1.2.3:MG:g0", "study:1.2.3:MG:g1"]
    store.promote_stable_studies(0, 3)  # idempotent
    assert len(store.jobs()) == 2


def test_retry_backoff_then_dead_letter(store, tmp_path):
    settings = Settings(data_dir=tmp_path, job_backoff_base_s=0.05, job_backoff_max_s=1)
    calls = []

    def flaky(job):
        calls.append(time.monotonic())
        raise RuntimeError("PACS said no")

    store.enqueue("flaky", "k1", CASE, max_attempts=3)
    pool = WorkerPool(settings, store, {"flaky": flaky})
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        pool.drain()
        time.sleep(0.01)
    job = store.jobs()[0]
    assert job.state == "dead" and job.attempts == 3 and "PACS said no" in job.last_error
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1, f"no exponential backoff: {gaps}"


def test_permanent_error_goes_dead_at_once(store, tmp_path):
    def bad(job):
        raise PermanentError("study has no MG instances")

    store.enqueue("bad", "k2", CASE, max_attempts=5)
    WorkerPool(Settings(data_dir=tmp_path), store, {"bad": bad}).drain()
    job = store.jobs()[0]
    assert job.state == "dead" and job.attempts == 1 and "no MG instances" in job.last_error


def test_a_slow_case_job_does_not_delay_study_jobs(store, tmp_path):
    """The case lane runs fusion and PDFs; the study lane keeps producing findings meanwhile."""
    import threading

    release, done = threading.Event(), {}

    def slow_case(job):
        release.wait(10)
        done["case"] = time.monotonic()

    def study(job):
        done[job.key] = time.monotonic()

    store.enqueue("case", "case:p1", CASE, max_attempts=1)
    pool = WorkerPool(Settings(data_dir=tmp_path, workers=1, case_workers=1, poll_interval_s=0.01),
                      store, {"case": slow_case, "study": study})
    assert [lane for _, lane in pool.lanes()] == ["imaging", "case"]
    pool.start()
    try:
        time.sleep(0.2)  # the case lane is now inside the slow job
        store.enqueue("study", "study:1", StudyJobPayload(study_uid="1", modality="MG", patient_key="p1"),
                      max_attempts=1)
        deadline = time.monotonic() + 5
        while "study:1" not in done and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "study:1" in done and "case" not in done, "the study job waited for the case job"
    finally:
        release.set()
        pool.stop(timeout=5)
    assert done["case"] > done["study:1"]
    assert [lane for _, lane in WorkerPool(Settings(data_dir=tmp_path, case_workers=0), store, {}).lanes()] == [""]


def test_orphans_of_a_dead_process_are_requeued(store, tmp_path):
    store.enqueue("x", "k3", CASE, max_attempts=5)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    ghost = worker_name().split(":")[0] + f":{dead.stdout.strip()}:w0"
    job = store.claim_job(ghost, lease_s=3600)
    assert job and store.job(job.id).state == "running"
    store.enqueue("y", "k4", CASE, max_attempts=5)
    other = worker_name().split(":")[0] + f":{os.getppid()}:w1"  # another live process on this host
    live = store.claim_job(other, lease_s=3600)
    # the same host name and a pid that is dead here, but another boot or pid namespace (a
    # container sharing the host's name): not ours to judge, left to its lease
    store.enqueue("z", "k4b", CASE, max_attempts=5)
    name = worker_name().split(":")[0].split("@")[0]
    elsewhere = store.claim_job(f"{name}@00000000:{dead.stdout.strip()}:w2", lease_s=3600)
    assert store.recover_orphans() == 1
    assert store.job(job.id).state == "queued" and store.job(live.id).state == "running"
    assert store.job(elsewhere.id).state == "running"


def test_expired_lease_is_taken_over(store):
    store.enqueue("x", "k5", CASE, max_attempts=5)
    first = store.claim_job("otherhost:1:w0", lease_s=-1)  # lease already expired
    again = store.claim_job("me:2:w0", lease_s=60)
    assert again and again.id == first.id and again.attempts == 2


def test_outbox_is_idempotent_and_dead_letters(store, tmp_path):
    out = NewOutput(kind="fhir", destination="fhir", key="ra:study:model:1",
                    payload_path=tmp_path / "ra.json", meta=OutboxMeta(resource_type="RiskAssessment"))
    a = store.outbox_add(out)
    b = store.outbox_add(out)
    assert a == b and len(store.outbox_items()) == 1
    assert store.outbox_items()[0].meta == OutboxMeta(resource_type="RiskAssessment")
    item = store.outbox_claim("me:1:d", 60)
    store.outbox_dead(item.id, "400: OperationOutcome: invalid")
    assert store.outbox_items("dead")[0].last_error.startswith("400")
    assert store.outbox_claim("me:1:d", 60) is None


def test_results_are_replaced_per_job_and_read_back_typed(store):
    job_id = store.enqueue("case", "case:p1:x", CASE)
    first = NewResult(kind="recurrence", patient_key="p1", status="ok", model="m", body={"risk": 0.2})
    store.replace_results(job_id, [first, first])
    ids = store.replace_results(job_id, [first.model_copy(update={"status": "no_model", "body": None})])
    rows = store.results(patient_key="p1")
    assert [r.id for r in rows] == ids and rows[0].status == "no_model" and rows[0].body is None
    assert rows[0].job_id == job_id and rows[0].kind == "recurrence"


def test_listing_queries_are_typed(store):
    p = PatientRef(patient_id="P1")
    store.record_instance(rec("1"), p)
    store.record_instance(rec("1"), p)
    store.record_rejection("PACS", "2", 0xC002, "Pixel Data too short", "/q/2.dcm")
    store.set_case(p.key, "fp", None)
    row = store.instance_row("1")
    assert row and row.duplicates == 1 and row.path == Path("/spool/1.dcm") == store.instance_path("1")
    assert store.instance_path("nope") is None and store.instance_row("nope") is None
    assert [s.study_uid for s in store.recent_studies(5)] == ["1.2.3"]
    (case,) = store.case_overview(5)
    assert (case.patient_key, case.n_studies, case.modalities, case.fingerprint) == (p.key, 1, "MG", "fp")
    (rej,) = store.rejections_for(sop_uid="2")
    assert rej.calling_ae == "PACS" and rej.quarantine_path == "/q/2.dcm"
    assert store.recent_rejections(5) == [rej] and store.rejections_for(calling_ae="OTHER") == []
    assert store.rejection_recorded_since("PACS", rej.reason, rej.at - 1)
    assert not store.rejection_recorded_since("PACS", rej.reason, rej.at)


def test_case_refresh_queues_once_per_interval(store, tmp_path):
    from cds.scheduling.stability import refresh_cases

    settings = Settings(data_dir=tmp_path, case_refresh_interval_s=3600)
    store.record_instance(rec("9", study="7.7"), PatientRef(patient_id="P9"))
    assert refresh_cases(settings, store) == 1
    refresh_cases(settings, store)  # same interval: no second job
    assert [j.kind for j in store.jobs()] == ["case"]
