"""Receipt records of one association (cds.audit.trail.AssociationReceipts): one per study, the
first written at once, the rest in batches and at the end; every instance named exactly once."""

from __future__ import annotations

import json

import pytest

from cds.audit import trail
from cds.audit.chain import verify
from cds.audit.trail import AssociationReceipts, audit_path
from cds.contracts.settings import Settings


def _events(s: Settings) -> list[dict]:
    path = audit_path(s)
    return [json.loads(x)["event"] for x in path.read_text().splitlines()] if path.exists() else []


def _sops(event: dict) -> list[str]:
    return [e["what"]["display"] for e in event["entity"] if e.get("description") == "SOP Instance UID"]


def _count(event: dict) -> int:
    study = next(e for e in event["entity"] if "detail" in e)
    return int(study["detail"][0]["valueString"])


def test_first_instance_at_once_rest_at_close(tmp_path):
    s = Settings(data_dir=tmp_path / "data")
    r = AssociationReceipts(s, "PACS", "10.0.0.7")
    r.received(patient_key="k1", study_uid="1.2.1", sop_uid="1.2.1.1")
    assert [_sops(e) for e in _events(s)] == [["1.2.1.1"]]  # before the caller acknowledges it
    for i in range(2, 6):
        r.received(patient_key="k1", study_uid="1.2.1", sop_uid=f"1.2.1.{i}")
    r.received(patient_key="k2", study_uid="1.2.2", sop_uid="1.2.2.1")
    assert len(_events(s)) == 2  # the first of the second study; the other four wait
    r.close()
    r.close()  # nothing pending: no empty record
    events = _events(s)
    assert [_sops(e) for e in events] == [["1.2.1.1"], ["1.2.2.1"], [f"1.2.1.{i}" for i in range(2, 6)]]
    assert [_count(e) for e in events] == [1, 1, 4]
    assert all(e["type"]["code"] == "110104" and e["agent"][0]["who"]["display"] == "PACS" for e in events)
    assert events[0]["agent"][0]["network"]["address"] == "10.0.0.7"
    assert events[2]["entity"][0]["what"]["identifier"]["value"] == "k1"  # the study's own patient
    assert verify(audit_path(s)).ok


def test_batches_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(trail, "RECEIPT_BATCH_INSTANCES", 3)
    s = Settings(data_dir=tmp_path / "data")
    r = AssociationReceipts(s, "PACS")
    for i in range(1, 9):
        r.received(patient_key="k1", study_uid="1.2.1", sop_uid=f"1.2.1.{i}")
    assert [len(_sops(e)) for e in _events(s)] == [1, 3, 3]
    r.close()
    assert [len(_sops(e)) for e in _events(s)] == [1, 3, 3, 1]


@pytest.mark.parametrize("age", [0.0, 3600.0])
def test_batches_by_age(tmp_path, monkeypatch, age):
    monkeypatch.setattr(trail, "RECEIPT_BATCH_AGE_S", age)
    s = Settings(data_dir=tmp_path / "data")
    r = AssociationReceipts(s, "PACS")
    for i in range(1, 4):
        r.received(patient_key="k1", study_uid="1.2.1", sop_uid=f"1.2.1.{i}")
    expected = [1, 1, 1] if age == 0.0 else [1]
    assert [len(_sops(e)) for e in _events(s)] == expected


def test_single_receipt_keeps_its_shape(tmp_path):
    s = Settings(data_dir=tmp_path / "data")
    trail.audit_receipt(s, patient_key="k1", study_uid="1.2.3", sop_uid="1.2.3.4", calling_ae="STOW:x")
    (event,) = _events(s)
    assert _sops(event) == ["1.2.3.4"] and _count(event) == 1
