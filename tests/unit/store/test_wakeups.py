"""Idle workers and deliverers wake when work commits, not at their next poll.

In one process (both backends) through :mod:`cds.store.wakeup`; across processes on PostgreSQL
through LISTEN/NOTIFY (:mod:`cds.store.pg_notify`), here two Store objects on one database with
their own connections, as two processes have. A rolled-back transaction wakes nobody.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cds.contracts.handoffs import NewOutput, OutboxMeta, StudyJobPayload
from cds.store import Store


def _payload(n: int) -> StudyJobPayload:
    return StudyJobPayload(study_uid=f"1.2.{n}", modality="MG", patient_key="p1")


def _output(tmp_path: Path, n: int) -> NewOutput:
    return NewOutput(kind="dicom", destination="pacs", key=f"out-{n}", payload_path=tmp_path / f"{n}.dcm",
                     meta=OutboxMeta(description="x", job_id=1))


def test_a_commit_wakes_waiters_of_the_same_store(store: Store, tmp_path: Path) -> None:
    seen_jobs, seen_out = store.jobs_ready.generation, store.outputs_ready.generation
    assert not store.jobs_ready.wait(seen_jobs, 0.05)  # nothing committed: the wait times out
    store.enqueue("study", "study:1", _payload(1))
    assert store.jobs_ready.wait(seen_jobs, 0.0)
    assert not store.outputs_ready.wait(seen_out, 0.0)  # a job is not an output
    store.outbox_add(_output(tmp_path, 1))
    assert store.outputs_ready.wait(seen_out, 0.0)


@pytest.mark.peers
def test_postgres_commit_in_one_process_wakes_another(postgres_server: object, tmp_path: Path) -> None:
    url = postgres_server.create_database("wakeups")  # type: ignore[attr-defined]
    writer, reader = Store(url), Store(url)
    relay = reader.relay_notifications()
    assert relay is not None
    try:
        time.sleep(0.5)  # the relay's LISTEN is in place
        seen = reader.jobs_ready.generation
        started = time.monotonic()
        writer.enqueue("study", "study:1", _payload(1))
        assert reader.jobs_ready.wait(seen, 3.0), "no wake-up from the other store's commit"
        assert time.monotonic() - started < 1.0
        seen_out = reader.outputs_ready.generation
        writer.outbox_add(_output(tmp_path, 1))
        assert reader.outputs_ready.wait(seen_out, 3.0)
        # a rolled-back enqueue announces nothing
        seen = reader.jobs_ready.generation
        with pytest.raises(RuntimeError):
            with writer.tx() as con:
                writer._announce(con, "cds_jobs")
                raise RuntimeError("rolled back")
        assert not reader.jobs_ready.wait(seen, 1.5)
    finally:
        relay.stop()
        writer.close()
        reader.close()
