"""Records held for a job (``holding``) and the drain's failure path.

What each test proves:
- inside ``holding()`` a record is held, not written; outside, it is written at once as before;
- staged with the job's finish and drained, the held record is in the chain once;
- a drain that cannot write the chain logs the error (no patient data: the record ids only are
  known to it) and leaves the records staged for the next drain, which appends them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cds.audit import drain as drain_mod
from cds.audit.trail import audit_path, audit_query, holding
from cds.contracts.handoffs import StudyJobPayload
from cds.contracts.settings import Settings
from cds.store import Store, audit_outbox


def _lines(s: Settings) -> list[dict]:
    p = audit_path(s)
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_held_records_are_staged_with_the_job(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    store.enqueue("study", "study:1", StudyJobPayload(study_uid="1.2", modality="MG", patient_key="pk"))
    job = store.claim_job("w", 60.0)
    assert job is not None
    with holding() as held:
        audit_query(s, patient_key="pk", server="http://fhir", resource_types=["Patient"])
    assert len(held) == 1 and _lines(s) == []  # held, not written
    audit_query(s, patient_key="pk", server="http://fhir", resource_types=["Patient"])
    assert len(_lines(s)) == 1  # outside a job: written at once
    assert store.finish_job(job.id, "", worker="w", audit=held)
    assert drain_mod.drain(s, store) == 1
    assert [r["event"]["id"] for r in _lines(s)][-1] == held[0]["id"]


def test_a_failed_drain_is_logged_and_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(data_dir=tmp_path / "data")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    with store.tx() as con:
        audit_outbox.stage(con, [{"resourceType": "AuditEvent", "id": "e1"}])

    def full(path: Path) -> object:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(drain_mod, "locked", full)
    with caplog.at_level(logging.ERROR, logger="cds.audit.drain"):
        assert drain_mod.after_commit(s, store) == 0
    assert "No space left on device" in caplog.text
    assert audit_outbox.backlog(store)[0] == 1
    assert drain_mod.backlog_note(store).startswith("1 audit record(s) committed in the store")
    monkeypatch.undo()
    assert drain_mod.after_commit(s, store) == 1 and audit_outbox.backlog(store)[0] == 0
    assert drain_mod.backlog_note(store) == "no audit record waits in the store"
