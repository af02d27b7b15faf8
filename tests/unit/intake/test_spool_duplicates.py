"""Duplicates found without a query before spooling: the same SOP Instance UID sent again, under
the same or under other Study/Series UIDs, is acknowledged once, keeps the first copy, leaves no
second file in the spool and writes no second receipt."""

from __future__ import annotations

import json

from pydicom import dcmread
from pydicom.uid import generate_uid

from cds.contracts.settings import Settings
from cds.intake.spool import spool_instance
from cds.store import Store
from tests.unit.intake.mutations import valid_file


def _receipts(s: Settings) -> int:
    path = s.data_dir / "audit" / "audit.jsonl"
    return sum(json.loads(x)["event"]["type"]["code"] == "110104" for x in path.read_text().splitlines())


def _send(s: Settings, store: Store, src, name: str):
    tmp = s.incoming_dir / name
    tmp.write_bytes(src.read_bytes())
    ds = dcmread(src, stop_before_pixels=True)
    return spool_instance(s, store, tmp, "PACS", command_sop_class=ds.SOPClassUID,
                          command_sop_instance=ds.SOPInstanceUID), tmp


def test_duplicate_same_and_other_study(tmp_path):
    s = Settings(data_dir=tmp_path / "data")
    s.ensure_dirs()
    store = Store(s.store_url)
    _, first = valid_file("MG", tmp_path / "a.dcm")
    ok, tmp = _send(s, store, first, "1.dcm")
    assert ok.ok and not ok.duplicate and not tmp.exists()
    sop = ok.meta.sop_instance_uid
    stored = store.instance_path(sop)
    again, tmp = _send(s, store, first, "2.dcm")
    assert again.ok and again.duplicate and not tmp.exists()
    moved = dcmread(first)
    moved.StudyInstanceUID, moved.SeriesInstanceUID = generate_uid(), generate_uid()
    moved.save_as(tmp_path / "b.dcm")
    other, tmp = _send(s, store, tmp_path / "b.dcm", "3.dcm")
    assert other.ok and other.duplicate and not tmp.exists()
    assert store.instance_path(sop) == stored and stored.read_bytes() == first.read_bytes()
    assert sorted(p.name for p in s.spool_dir.rglob("*.dcm")) == [f"{sop}.dcm"]  # no orphan copy
    assert store.instance_row(sop).duplicates == 2
    assert _receipts(s) == 1
