"""On the real FHIR peer: whatever order the studies arrive in, and however many evaluations
that causes, the EHR ends with one current DiagnosticReport and one current RiskAssessment per
question, the earlier answer superseded in place (its earlier version in the history; still
preliminary, as no clinician has reviewed it); the new case SR names the SR it
replaces (Predecessor Documents Sequence)."""

from __future__ import annotations

from collections import Counter

import httpx
import pydicom
import pytest

from tests.integration.fhir_outputs.support import ingest, load_clinical, make_service, ours, run, study_files


@pytest.mark.parametrize("order", [("MG", "SM"), ("SM", "MG")])
def test_one_current_report_and_risk_per_question(fhir_peer, tmp_path, order):
    fhir_peer.reset()
    service = make_service(tmp_path, fhir_peer.base_url)
    load_clinical(fhir_peer.base_url, service.settings)
    files = study_files(tmp_path)
    for modality in order:  # one case evaluation per arrival
        ingest(service, files[modality])
        run(service)
    cases = [j for j in service.store.jobs(limit=100) if j.kind == "case" and j.state == "done"]
    assert len(cases) == 2, [j.last_error for j in service.store.jobs(limit=100)]
    assert {o.state for o in service.store.outbox_items(limit=500)} == {"delivered"}

    reports = ours(fhir_peer.base_url, "DiagnosticReport")
    risks = ours(fhir_peer.base_url, "RiskAssessment")
    assert len(reports) == 1, [r["identifier"] for r in reports]
    per_question = Counter(i["value"] for r in risks for i in r["identifier"])
    assert set(per_question.values()) == {1} and len(risks) == 3  # MG, slide, recurrence
    recurrence = next(r for r in risks if r["identifier"][0]["value"].endswith("/recurrence"))
    assert recurrence["status"] == "preliminary"  # superseded in place; no clinician reviewed either
    history = httpx.get(f"{fhir_peer.base_url}/RiskAssessment/{recurrence['id']}/_history", timeout=10).json()
    assert len(history.get("entry", [])) == 2  # the first evaluation's answer is its earlier version
    assert recurrence["method"]["coding"][0]["code"].startswith("fixture-recurrence-multimodal|")
    report = reports[0]
    assert "beside the multimodal model (primary)" in report["conclusion"]
    linked = {e["valueReference"]["identifier"]["value"] for e in report.get("extension", [])}
    assert linked == set(per_question)  # the report names every current RiskAssessment

    srs = sorted((tmp_path / "out").rglob("*.dcm"))
    case_srs = [pydicom.dcmread(p) for p in srs]
    case_srs = [d for d in case_srs if d.Modality == "SR" and "PredecessorDocumentsSequence" in d]
    if order[0] == "SM":  # both evaluations had the slide: two case SRs, the second names the first
        assert len(case_srs) == 1
        ref = case_srs[0].PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID != case_srs[0].SOPInstanceUID
        assert any(pydicom.dcmread(p).SOPInstanceUID == ref.ReferencedSOPInstanceUID for p in srs)
