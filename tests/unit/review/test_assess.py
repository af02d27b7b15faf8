"""What one review writes: the assessment SR (read back with pydicom), the reviewed
RiskAssessment and its Provenance in the outbox, and the store row; a second review supersedes."""

from __future__ import annotations

import json
import subprocess

import pydicom

from cds.contracts.domain import StudyAnalysis
from cds.contracts.review import ReviewRequest
from cds.review import assess
from cds.writers.fhir_resources import REVIEW_STATUS, REVIEW_SYSTEM, UNREVIEWED_STATUS
from tests.unit.review.conftest import CLINICIAN


def _items(store, review_id):
    return {o.key: o for o in store.outbox_items(limit=200) if o.key.startswith(f"review:{review_id}:")}


def _payload(store, key):
    """A queued FHIR payload (listings leave payloads out: they can name the patient)."""
    return json.loads(store._query("SELECT payload FROM outbox WHERE key=?", (key,))[0]["payload"])


def _content(ds):
    """(concept meaning, item) for the root's children."""
    return [(i.ConceptNameCodeSequence[0].CodeMeaning, i) for i in ds.ContentSequence]


def test_status_mapping():
    assert UNREVIEWED_STATUS == "preliminary"
    assert REVIEW_STATUS == {"accepted": "final", "modified": "amended", "rejected": "entered-in-error"}


def test_ai_outputs_are_unreviewed(outputs):
    sr = next(a.path for a in outputs.study_arts if a.resource_type == "SR")
    assert pydicom.dcmread(sr).VerificationFlag == "UNVERIFIED"
    for art in outputs.all:
        if art.resource_type == "RiskAssessment":
            assert json.loads(art.path.read_text())["status"] == "preliminary", art.key


def test_accept_then_modify(reviewable):
    store, settings = reviewable.store, reviewable.settings
    job_items = store.outbox_of_job(reviewable.job_id)
    ai_sr = pydicom.dcmread(next(o.payload_path for o in job_items if o.key.endswith("/sr")))
    seg_uids = {str(pydicom.dcmread(o.payload_path, stop_before_pixels=True).SOPInstanceUID)
                for o in job_items if "/seg-" in o.key}
    original = json.loads(next(o.payload for o in job_items if o.meta.resource_type == "RiskAssessment"))

    first = assess(settings, store, reviewable.result_id, ReviewRequest(outcome="accepted"), CLINICIAN)
    items = _items(store, first.id)
    assert set(items) == {f"review:{first.id}:sr", f"review:{first.id}:riskassessment",
                          f"review:{first.id}:provenance"}
    assert items[f"review:{first.id}:sr"].destination == "pacs"
    sr = pydicom.dcmread(items[f"review:{first.id}:sr"].payload_path)
    assert str(sr.SOPInstanceUID) == first.sr_uid and sr.Modality == "SR"
    assert sr.StudyInstanceUID == ai_sr.StudyInstanceUID and sr.PatientID == ai_sr.PatientID
    assert sr.VerificationFlag == "VERIFIED" and sr.CompletionFlag == "COMPLETE"
    assert sr.VerifyingObserverSequence[0].VerifyingObserverName == "Smith^Jane"
    content = _content(sr)
    assert ("Person Observer Name", content[1][1]) == content[1] and content[1][1].PersonName == "Smith^Jane"
    kind = dict(content)["Assessment type"].ConceptCodeSequence[0]
    assert (kind.CodeValue, kind.CodingSchemeDesignator) == ("ACCEPTED", "99BCDS")
    refs = {(i.ReferencedSOPSequence[0].ReferencedSOPClassUID, str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
            for name, i in content if name == "Assessed AI result"}
    assert (ai_sr.SOPClassUID, str(ai_sr.SOPInstanceUID)) in refs
    assert {uid for _, uid in refs} == {str(ai_sr.SOPInstanceUID)} | seg_uids
    assert "PredecessorDocumentsSequence" not in sr

    ra = _payload(store, f"review:{first.id}:riskassessment")
    assert ra["status"] == "final" and ra["identifier"] == original["identifier"]
    assert {"system": REVIEW_SYSTEM, "code": f"{first.id:012d}", "display": "clinician review"} in ra["meta"]["tag"]
    assert ra["prediction"][0]["probabilityDecimal"] == original["prediction"][0]["probabilityDecimal"]
    prov = _payload(store, f"review:{first.id}:provenance")
    assert prov["agent"][0]["who"] == {"display": "Jane Smith"}
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "verifier"
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"
    assert prov["target"] == [{"type": "RiskAssessment", "identifier": original["identifier"][0]}]
    assert prov["entity"][0]["what"]["identifier"]["value"] == f"urn:oid:{first.sr_uid}"

    lesions = [le for img in StudyAnalysis.model_validate(store.review_target(reviewable.result_id).body)
               .mammography.images for le in img.lesions]
    second = assess(settings, store, reviewable.result_id,
                    ReviewRequest(outcome="modified", reason="calcification, not a mass", decision="benign",
                                  removed_lesions=[1]), CLINICIAN)
    items = _items(store, second.id)
    sr2 = pydicom.dcmread(items[f"review:{second.id}:sr"].payload_path)
    assert sr2.SOPInstanceUID != sr.SOPInstanceUID
    pred = sr2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert str(pred.ReferencedSOPInstanceUID) == first.sr_uid
    content = dict(_content(sr2))
    assert content["Assessment type"].ConceptCodeSequence[0].CodeValue == "MODIFIED"
    assert content["Reason for assessment"].TextValue == "calcification, not a mass"
    assert content["Clinician decision"].TextValue == "benign"
    removed = {i.ConceptNameCodeSequence[0].CodeValue: i for i in content["Removed finding"].ContentSequence}
    assert removed["112040"].UID == lesions[1].tracking_uid and removed["112039"].TextValue == lesions[1].tracking_id
    ra2 = _payload(store, f"review:{second.id}:riskassessment")
    assert ra2["status"] == "amended"
    assert ra2["prediction"][0]["rationale"].startswith("Clinician's decision: benign.")
    assert "reason: calcification, not a mass" in ra2["note"][-1]["text"]
    assert f"findings removed: lesion {lesions[1].tracking_id}" in ra2["note"][-1]["text"]

    assert [r.id for r in store.reviews_of(reviewable.result_id)] == [second.id, first.id]
    assert store.review_counts() == {(first.model, "modified"): 1}


def test_the_pdf_says_the_results_are_preliminary(outputs):
    from tests.peers import need

    pdf = next(a.path for a in outputs.case_arts if a.kind == "pdf")
    text = subprocess.run([need("pdftotext"), str(pdf), "-"], capture_output=True, text=True, timeout=60).stdout
    assert "Preliminary \u2014 AI result not yet reviewed by a clinician" in " ".join(text.split())


def test_person_names():
    from cds.writers.assessment_sr import person_name

    assert person_name("Jane Q Smith") == "Smith^Jane Q"
    assert person_name("Smith, Jane") == "Smith^Jane"
    assert person_name("jsmith") == "jsmith^"
    assert person_name("a^b=c\\d") == "d^a b c"
