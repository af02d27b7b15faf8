"""A store that stops answering for a while (a PostgreSQL restart) must not end the dispatcher's
loop, nor leave a finished job 'running' until its lease runs out, nor strand what was held."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from cds.contracts.errors import TransientError
from cds.contracts.handoffs import CaseJobPayload, NewOutput, OutboxMeta
from cds.contracts.settings import Settings
from cds.dispatch.dispatcher import Dispatcher
from cds.scheduling.workers import WorkerPool
from cds.store import Store


class Flaky:
    """The real store, with named methods failing ``times`` times before they work again."""

    def __init__(self, store: Store, failing: dict[str, int]) -> None:
        self._store, self.failing = store, dict(failing)

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        if name not in self.failing:
            return attr

        def call(*args, **kwargs):
            if self.failing[name] > 0:
                self.failing[name] -= 1
                raise TransientError(f"store unavailable ({name})")
            return attr(*args, **kwargs)
        return call


def test_a_finished_job_is_recorded_once_the_store_answers_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    job_id = store.enqueue("case", "k", CaseJobPayload(patient_key="p"), 3)
    flaky = Flaky(store, {"finish_job": 2})
    pool = WorkerPool(Settings(data_dir=tmp_path, job_lease_s=10), flaky, {"case": lambda job: "ok"})
    assert pool.run_one("w-1")
    assert store.job(job_id).state == "done", "the outcome was lost when the store failed twice"
    assert flaky.failing["finish_job"] == 0


def test_a_job_held_through_a_failure_is_queued_again_by_its_worker(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    job_id = store.enqueue("case", "k", CaseJobPayload(patient_key="p"), 3)
    assert store.claim_job("w-1", 900) is not None  # claimed, then the worker lost track of it
    assert store.release_held_jobs("w-2") == 0, "another worker's job is not released"
    assert store.release_held_jobs("w-1") == 1
    job = store.job(job_id)
    assert job.state == "queued"
    assert store._query("SELECT lease_until FROM jobs WHERE id=?", (job_id,))[0][0] is None


def test_dispatcher_loop_survives_a_failed_round_and_releases_what_it_held(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, output_dir=tmp_path / "out")
    store = Store(settings.store_url)
    payload = tmp_path / "r.json"
    payload.write_text("{}")
    store.outbox_add(NewOutput(kind="fhir", destination="folder", key="o1", payload_path=payload,
                               payload=b"{}", meta=OutboxMeta(description="t")))
    dispatcher = Dispatcher(settings, Flaky(store, {"outbox_delivered": 1}))
    stop = threading.Event()
    t = threading.Thread(target=dispatcher.run_forever, args=(stop, 0.05), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and store.outbox_items()[0].state != "delivered":
        time.sleep(0.05)
    alive = t.is_alive()
    stop.set()
    t.join(5)
    item = store.outbox_items()[0]
    assert alive, "the dispatcher's loop ended on a store failure"
    assert item.state == "delivered", f"the held output was stranded: {item.state}"
