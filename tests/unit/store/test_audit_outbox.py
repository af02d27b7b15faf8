"""The transactional audit outbox, on SQLite and on a real PostgreSQL server (see conftest.py).

What each test proves:
- a record staged in a committed transaction reaches the chain exactly once, and leaves the store;
- a record staged in a transaction that rolls back never reaches the chain;
- a drain that died between its append and its delete is repaired without a duplicate;
- two drainers at once (threads, own connections) append each record once and the chain verifies;
- the delivery of an output and its disclosure record commit together (and the job's finish with
  its records); migration 3 is recorded.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cds.audit import drain as drain_mod
from cds.audit.chain import locked, verify
from cds.audit.drain import drain
from cds.audit.trail import audit_path
from cds.contracts.handoffs import NewOutput, OutboxMeta, StudyJobPayload
from cds.contracts.settings import Settings
from cds.store import Store, audit_outbox


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _event(n: int) -> dict[str, object]:
    return {"resourceType": "AuditEvent", "id": f"ev-{n}", "n": n}


def _chain_ids(settings: Settings) -> list[str]:
    path = audit_path(settings)
    if not path.exists():
        return []
    return [json.loads(line)["event"]["id"] for line in path.read_text().splitlines()]


def test_migration_3_is_recorded(store: Store) -> None:
    rows = store._query("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows][-1] == 3
    assert audit_outbox.backlog(store) == (0, None)


def test_committed_record_reaches_the_chain_once(store: Store, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    with store.tx() as con:
        audit_outbox.stage(con, [_event(1), _event(2)])
    assert audit_outbox.backlog(store)[0] == 2
    assert drain(s, store) == 2
    assert drain(s, store) == 0  # nothing twice
    assert _chain_ids(s) == ["ev-1", "ev-2"]  # in id order
    assert audit_outbox.backlog(store) == (0, None)
    assert verify(audit_path(s)).ok


def test_rolled_back_record_never_reaches_the_chain(store: Store, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    with pytest.raises(RuntimeError), store.tx() as con:
        audit_outbox.stage(con, [_event(1)])
        raise RuntimeError("the state change failed")
    assert audit_outbox.backlog(store)[0] == 0
    assert drain(s, store) == 0
    assert _chain_ids(s) == []


def test_crash_between_append_and_delete_is_not_duplicated(store: Store, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings(tmp_path)
    with store.tx() as con:
        audit_outbox.stage(con, [_event(1), _event(2)])

    def die(db: object, ids: object) -> int:
        raise SystemExit("killed after the append, before the delete")

    monkeypatch.setattr(drain_mod.audit_outbox, "delete", die)
    with pytest.raises(SystemExit):
        drain(s, store)
    monkeypatch.undo()
    assert _chain_ids(s) == ["ev-1", "ev-2"] and audit_outbox.backlog(store)[0] == 2
    with locked(audit_path(s)) as chain:  # another process's direct record after the crash
        chain.append(_event(99))
    with store.tx() as con:  # and a record staged after the crash
        audit_outbox.stage(con, [_event(3)])
    assert drain(s, store) == 1
    assert _chain_ids(s) == ["ev-1", "ev-2", "ev-99", "ev-3"]
    assert audit_outbox.backlog(store)[0] == 0
    assert verify(audit_path(s)).ok


def test_two_drainers_at_once_append_each_record_once(store_url: str, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    writer = Store(store_url)
    n_tx, per_tx = 40, 3
    errors: list[BaseException] = []

    def stage_all() -> None:
        for i in range(n_tx):
            with writer.tx() as con:
                audit_outbox.stage(con, [_event(i * per_tx + j) for j in range(per_tx)])

    def drain_until(stop: threading.Event) -> None:
        store = Store(store_url)  # each drainer its own connections, as separate processes have
        try:
            while not stop.is_set():
                drain(s, store)
            drain(s, store)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    stop = threading.Event()
    drainers = [threading.Thread(target=drain_until, args=(stop,)) for _ in range(2)]
    for t in drainers:
        t.start()
    stage_all()
    stop.set()
    for t in drainers:
        t.join(60)
    writer.close()
    assert not errors
    ids = _chain_ids(s)
    assert len(ids) == n_tx * per_tx and len(set(ids)) == len(ids)
    assert verify(audit_path(s)).ok and verify(audit_path(s)).records == n_tx * per_tx


def _queued_item(store: Store) -> int:
    job = store.enqueue("study", "study:1", StudyJobPayload(study_uid="1.2.3", modality="MG", patient_key="p1"))
    store.outbox_add(NewOutput(kind="pdf", destination="folder", key="k/report.pdf",
                               payload_path=Path("/nonexistent/report.pdf"),
                               meta=OutboxMeta(description="report", job_id=job)))
    item = store.outbox_claim("w1", 60.0)
    assert item is not None
    return item.id


def test_delivered_state_and_disclosure_commit_together(store: Store, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    item_id = _queued_item(store)
    assert store.outbox_delivered(item_id, "written", worker="w1", audit=[_event(1)])
    assert store.outbox_items("delivered")[0].id == item_id
    assert audit_outbox.backlog(store)[0] == 1
    # delivered again by a deliverer that lost its lease: the state stays, the disclosure is recorded
    assert not store.outbox_delivered(item_id, "again", worker="w2", audit=[_event(2)])
    assert drain(s, store) == 2 and _chain_ids(s) == ["ev-1", "ev-2"]


def test_a_failed_delivery_transaction_stages_nothing(store: Store, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    item_id = _queued_item(store)

    def broken(con: object, events: object) -> int:
        raise RuntimeError("the store failed mid-transaction")

    monkeypatch.setattr("cds.store.outbox.stage", broken)  # the name outbox_delivered calls
    with pytest.raises(RuntimeError):
        store.outbox_delivered(item_id, "written", worker="w1", audit=[_event(1)])
    assert store.outbox_items("delivering")[0].id == item_id  # the state rolled back with it
    monkeypatch.undo()
    assert audit_outbox.backlog(store)[0] == 0


def test_job_finish_and_its_records_commit_together(store: Store, tmp_path: Path) -> None:
    s = _settings(tmp_path)
    store.enqueue("study", "study:2", StudyJobPayload(study_uid="1.2.3", modality="MG", patient_key="p1"))
    job = store.claim_job("w1", 60.0)
    assert job is not None
    assert store.finish_job(job.id, "ok", worker="w1", audit=[_event(1)])
    finished = store.job(job.id)
    assert finished is not None and finished.state == "done"
    assert drain(s, store) == 1 and _chain_ids(s) == ["ev-1"]
