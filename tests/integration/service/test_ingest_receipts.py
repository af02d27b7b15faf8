"""BALP receipt records of the DICOM listener: one per study per association, never after the ack.

A real `cds serve` process and a pynetdicom SCU that sends instance by instance, so the test can
look at the audit trail between two C-STOREs of one open association, and kill the process there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from cds.audit.chain import verify
from cds.store import Store
from tests.integration.service.spine_support import MG_FOR_PRESENTATION, ServeProcess, mg_dataset

RECEIPT = "110104"  # DICOM Instances Transferred


def receipts(data_dir: Path) -> list[dict]:
    path = data_dir / "audit" / "audit.jsonl"
    if not path.exists():
        return []
    events = [json.loads(line)["event"] for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("type", {}).get("code") == RECEIPT]


def named(events: list[dict]) -> list[str]:
    """SOP Instance UIDs the receipt records name, in order (the study and patient entities aside)."""
    return [e["what"]["display"] for ev in events for e in ev["entity"] if e.get("description") == "SOP Instance UID"]


def study_of(event: dict) -> str:
    return next(e["what"]["identifier"]["value"] for e in event["entity"]
                if e["what"].get("identifier", {}).get("type", {}).get("coding", [{}])[0].get("code") == "110180")


def associate(port: int):
    ae = AE(ae_title="RECEIPTS")
    ae.add_requested_context(MG_FOR_PRESENTATION, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="CDS")
    assert assoc.is_established
    return assoc


def test_one_record_per_study_written_before_the_first_ack(tmp_path):
    studies = ["2.25.1001", "2.25.1002"]
    sent = {s: [mg_dataset(s, seed=i, patient_id=f"RCPT-{s[-1]}") for i in range(5)] for s in studies}
    with ServeProcess(tmp_path / "data", CDS_STABLE_AGE_S="3600") as srv:
        assoc = associate(srv.port)
        try:
            first = sent[studies[0]][0]
            assert assoc.send_c_store(first).Status == 0
            # acknowledged, association still open: the study's receipt is already in the trail
            now = receipts(srv.data_dir)
            assert [named([e]) for e in now] == [[first.SOPInstanceUID]]
            for ds in sent[studies[0]][1:] + sent[studies[1]]:
                assert assoc.send_c_store(ds).Status == 0
            during = receipts(srv.data_dir)
            assert len(during) == 2  # the first of each study; the rest wait for the release
        finally:
            assoc.release()
        store = Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")
        for _ in range(50):
            after = receipts(srv.data_dir)
            if len(named(after)) == 10:
                break
            time.sleep(0.1)
    assert len(after) == 4, [named([e]) for e in after]  # per study: first instance, then the rest
    for s in studies:
        mine = [e for e in after if study_of(e) == s]
        assert sorted(named(mine)) == sorted(ds.SOPInstanceUID for ds in sent[s])
        counts = [int(e["entity"][1]["detail"][0]["valueString"]) for e in mine]
        assert counts == [1, 4]  # NumberOfInstances matches the instances named
        assert len(store.study_instances(s)) == 5
    assert sorted(named(after)) == sorted(ds.SOPInstanceUID for v in sent.values() for ds in v)  # each once
    assert all(e["agent"][0]["who"]["display"] == "RECEIPTS" for e in after)
    assert verify(srv.data_dir / "audit" / "audit.jsonl").ok


def test_killed_mid_association_keeps_the_study_record(tmp_path):
    """What the batching costs when the process dies: the study's first instance is in the trail
    (written before its ack); later ones may be missing from it, but every acknowledged instance
    is in the index."""
    study = "2.25.2001"
    sent = [mg_dataset(study, seed=i, patient_id="RCPT-KILL") for i in range(4)]
    srv = ServeProcess(tmp_path / "data", CDS_STABLE_AGE_S="3600").start()
    try:
        assoc = associate(srv.port)
        for ds in sent:
            assert assoc.send_c_store(ds).Status == 0
        srv.kill()
        assoc.abort()
    finally:
        srv.kill()
    left = receipts(srv.data_dir)
    assert named(left)[:1] == [sent[0].SOPInstanceUID]
    assert set(named(left)) <= {ds.SOPInstanceUID for ds in sent}
    store = Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")
    assert {r.sop_instance_uid for r in store.study_instances(study)} == {ds.SOPInstanceUID for ds in sent}
    assert verify(srv.data_dir / "audit" / "audit.jsonl").ok
