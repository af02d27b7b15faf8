"""A job that runs longer than its lease is not taken over while its worker is alive, and is
taken over one lease after its worker stops beating."""

from __future__ import annotations

import threading
import time

from cds.contracts.handoffs import CaseJobPayload
from cds.contracts.settings import Settings
from cds.scheduling.workers import WorkerPool
from cds.store import Store


def test_long_job_keeps_its_lease_and_runs_once(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    settings = Settings(data_dir=tmp_path, job_lease_s=0.3)
    runs: list[str] = []
    release = threading.Event()

    def slow(job) -> str:
        runs.append(job.worker or "")
        release.wait(5)
        return "ok"

    store.enqueue("case", "k1", CaseJobPayload(patient_key="p"), 3)
    pool = WorkerPool(settings, store, {"case": slow})
    t = threading.Thread(target=pool.run_one, args=("w-a",))
    t.start()
    time.sleep(1.2)  # four leases long
    assert store.claim_job("w-b", 0.3) is None, "a second worker took over a job whose worker is alive"
    release.set()
    t.join(5)
    assert len(runs) == 1
    assert store.job(1).state == "done"


def test_dead_worker_job_is_taken_over_after_one_lease(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.enqueue("case", "k1", CaseJobPayload(patient_key="p"), 3)
    claimed = store.claim_job("w-dead", 0.3)  # claimed, then nobody beats
    assert claimed is not None
    assert store.claim_job("w-b", 0.3) is None
    time.sleep(0.4)
    taken = store.claim_job("w-b", 0.3)
    assert taken is not None and taken.worker == "w-b"
    assert not store.extend_job_lease(claimed.id, "w-dead", 0.3), "the old worker must not get it back"
