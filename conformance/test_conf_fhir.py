"""FHIR R4 server conformance: the interactions the plugin relies on, against any server by URL.

The plugin finds the Patient by identifier, reads Observations and the ultrasound DiagnosticReport
by patient and code, and writes RiskAssessment / DiagnosticReport / Provenance with conditional
create (If-None-Exist) so that a retried write never duplicates. It treats 4xx as final (dead
letter) and 5xx as retryable, so the server must reject invalid resources with 4xx +
OperationOutcome. Expected statuses that differ by server come from FHIR_EXPECTATIONS.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.peers

SYSTEM = "urn:oid:1.2.3.4.5.cds.conformance"


def _patient(value: str) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": value}],
        "name": [{"family": "Conformance", "given": ["Synthetic"]}],
        "gender": "female",
        "birthDate": "1970-01-01",
    }


def _observation(patient_id: str, code: str, value: float) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-01-10T09:00:00Z",
        "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
    }


def _risk(patient_id: str, ident: str, p: float = 0.42) -> dict:
    return {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": SYSTEM + ".risk", "value": ident}],
        "status": "final",
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": "2026-01-11T10:00:00Z",
        "method": {"text": "conformance model 0.0.0"},
        "prediction": [
            {
                "outcome": {"text": "recurrence"},
                "probabilityDecimal": p,
                "qualitativeRisk": {"text": "high"},
                "whenRange": {"high": {"value": 5, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}},
            }
        ],
    }


def _assert_outcome(r: httpx.Response, expected: set[int], what: str) -> None:
    assert r.status_code in expected, (
        f"{what}: expected HTTP {sorted(expected)}, got {r.status_code}: {r.text[:400]}"
    )
    if r.status_code >= 400:
        body = r.json()
        assert body.get("resourceType") == "OperationOutcome", (
            f"{what}: a {r.status_code} must carry an OperationOutcome, got {r.text[:300]}"
        )
        assert body.get("issue"), f"{what}: OperationOutcome without issue: {body}"


@pytest.fixture(scope="module")
def fhir(fhir_peer):
    with fhir_peer.client() as c:
        yield c


@pytest.fixture(scope="module")
def patient_id(fhir) -> str:
    value = f"conf-{uuid.uuid4()}"
    r = fhir.post("/Patient", json=_patient(value))
    assert r.status_code == 201, f"create Patient: {r.status_code} {r.text[:300]}"
    return r.json()["id"]


def test_metadata_is_r4_capability_statement(fhir):
    r = fhir.get("/metadata")
    assert r.status_code == 200, r.text[:300]
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"].startswith("4.0"), f"not an R4 server: fhirVersion={cs['fhirVersion']}"
    types = {res["type"] for rest in cs.get("rest", []) for res in rest.get("resource", [])}
    missing = {"Patient", "Observation", "DiagnosticReport", "RiskAssessment", "Provenance"} - types
    assert not missing, f"CapabilityStatement lacks resource types the plugin uses: {sorted(missing)}"


def test_create_read_and_search_patient_by_identifier(fhir, fhir_peer):
    value = f"conf-{uuid.uuid4()}"
    r = fhir.post("/Patient", json=_patient(value))
    _assert_outcome(r, fhir_peer.expectations["create"], "create Patient")
    created = r.json()
    assert created["id"] and created["meta"]["versionId"], f"created resource lacks id/versionId: {created}"
    read = fhir.get(f"/Patient/{created['id']}")
    assert read.status_code == 200 and read.json()["identifier"][0]["value"] == value
    found = fhir.get("/Patient", params={"identifier": f"{SYSTEM}|{value}"})
    assert found.status_code == 200
    bundle = found.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
    assert ids == [created["id"]], f"search by identifier {SYSTEM}|{value} returned {ids}"
    none = fhir.get("/Patient", params={"identifier": f"{SYSTEM}|absent-{uuid.uuid4()}"}).json()
    assert not none.get("entry"), "search by an unknown identifier must return no entry"


def test_read_missing_resource(fhir, fhir_peer):
    r = fhir.get(f"/Patient/missing-{uuid.uuid4().hex[:12]}")
    _assert_outcome(r, fhir_peer.expectations["read_missing"], "read a missing Patient")


def test_observations_by_patient_and_code(fhir, fhir_peer, patient_id):
    for code, value in (("16112-5", 80.0), ("29593-1", 20.0)):
        r = fhir.post("/Observation", json=_observation(patient_id, code, value))
        _assert_outcome(r, fhir_peer.expectations["create"], f"create Observation {code}")
    by_subject = fhir.get("/Observation", params={"subject": f"Patient/{patient_id}"}).json()
    assert len(by_subject.get("entry", [])) == 2, by_subject
    by_code = fhir.get(
        "/Observation", params={"subject": f"Patient/{patient_id}", "code": "http://loinc.org|29593-1"}
    ).json()
    values = [e["resource"]["valueQuantity"]["value"] for e in by_code.get("entry", [])]
    assert values == [20.0], f"search Observation by subject+code returned values {values}"
    if fhir_peer.expectations["bare_patient_search_param"]:
        bare = fhir.get("/Observation", params={"patient": patient_id}).json()
        assert len(bare.get("entry", [])) == 2, f"?patient=<bare id> found {len(bare.get('entry', []))}"


def test_conditional_create_201_then_200(fhir, fhir_peer, patient_id):
    ident = f"risk-{uuid.uuid4()}"
    headers = {"If-None-Exist": f"identifier={SYSTEM}.risk|{ident}"}
    first = fhir.post("/RiskAssessment", json=_risk(patient_id, ident), headers=headers)
    _assert_outcome(first, fhir_peer.expectations["create"], "conditional create (new)")
    second = fhir.post("/RiskAssessment", json=_risk(patient_id, ident), headers=headers)
    _assert_outcome(second, fhir_peer.expectations["conditional_create_existing"], "conditional create (exists)")
    assert second.json().get("id") in (None, first.json()["id"]), (
        f"conditional create made a second resource {second.json().get('id')} != {first.json()['id']}"
    )
    found = fhir.get("/RiskAssessment", params={"identifier": f"{SYSTEM}.risk|{ident}"}).json()
    assert len(found.get("entry", [])) == 1, "conditional create must not duplicate"
    by_subject = fhir.get("/RiskAssessment", params={"subject": f"Patient/{patient_id}"}).json()
    assert any(e["resource"]["id"] == first.json()["id"] for e in by_subject.get("entry", []))


def test_conditional_create_with_multiple_matches_is_refused(fhir, fhir_peer, patient_id):
    ident = f"dup-{uuid.uuid4()}"
    for _ in range(2):  # plain creates: two resources share the identifier
        assert fhir.post("/RiskAssessment", json=_risk(patient_id, ident)).status_code == 201
    r = fhir.post(
        "/RiskAssessment",
        json=_risk(patient_id, ident),
        headers={"If-None-Exist": f"identifier={SYSTEM}.risk|{ident}"},
    )
    _assert_outcome(r, fhir_peer.expectations["conditional_create_multiple"], "conditional create, 2 matches")


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("missing_required_element", {"resourceType": "Observation", "code": {"text": "x"}}),
        ("unknown_element", {"resourceType": "Patient", "notAnElement": True}),
        ("bad_date", {"resourceType": "Patient", "birthDate": "1999-13-45"}),
        ("code_outside_required_binding", {"resourceType": "Patient", "gender": "banana"}),
    ],
)
def test_invalid_resources(fhir, fhir_peer, case, body):
    r = fhir.post(f"/{body['resourceType']}", json=body)
    _assert_outcome(r, fhir_peer.expectations[case], f"POST invalid resource ({case})")


def test_risk_probability_out_of_range_is_rejected(fhir, fhir_peer, patient_id):
    """ras-2: probabilityDecimal must be <= 100; a writer bug must come back as 4xx, not be stored."""
    bad = _risk(patient_id, f"bad-{uuid.uuid4()}", p=250.0)
    r = fhir.post("/RiskAssessment", json=bad)
    expected = {400, 422} if fhir_peer.peer == "medplum" else {201, 400, 422}
    _assert_outcome(r, expected, "RiskAssessment violating ras-2")


def test_inline_attachment_over_1mb(fhir, fhir_peer, patient_id):
    """The plugin's clinician PDF travels inline in DiagnosticReport.presentedForm: servers differ."""
    import base64

    data = base64.b64encode(b"%PDF-1.4\n" + b"0" * 800_000).decode()
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "Breast CDS result"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "presentedForm": [{"contentType": "application/pdf", "data": data}],
    }
    assert len(data) > 1024 * 1024
    r = fhir.post("/DiagnosticReport", json=report)
    _assert_outcome(r, fhir_peer.expectations["attachment_over_1mb"], "DiagnosticReport with a 1 MB+ inline PDF")


def test_malformed_json_is_400(fhir, fhir_peer):
    r = fhir.post("/Patient", content=b'{"resourceType": "Patient", ')
    _assert_outcome(r, fhir_peer.expectations["malformed_json"], "POST malformed JSON")


def test_transaction_with_urn_uuid_references(fhir, patient_id):
    """The plugin may write DiagnosticReport + Provenance targeting it in one transaction."""
    report_urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": report_urn,
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "code": {"text": "Breast CDS result"},
                    "subject": {"reference": f"Patient/{patient_id}"},
                },
                "request": {"method": "POST", "url": "DiagnosticReport"},
            },
            {
                "resource": {
                    "resourceType": "Provenance",
                    "target": [{"reference": report_urn}],
                    "recorded": "2026-01-11T10:00:00Z",
                    "agent": [{"who": {"display": "breast-cds conformance"}}],
                },
                "request": {"method": "POST", "url": "Provenance"},
            },
        ],
    }
    r = fhir.post("", json=bundle)
    assert r.status_code == 200, f"transaction: {r.status_code} {r.text[:400]}"
    resp = r.json()
    assert resp["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in resp["entry"]]
    assert all(s.startswith("201") for s in statuses), statuses
    report_id = resp["entry"][0]["resource"]["id"] if "resource" in resp["entry"][0] else (
        resp["entry"][0]["response"]["location"].split("/")[1]
    )
    prov = fhir.get("/Provenance", params={"target": f"DiagnosticReport/{report_id}"}).json()
    assert len(prov.get("entry", [])) == 1, "Provenance.target must resolve urn:uuid to the new report"


def test_outage_hook_answers_503_then_recovers(fhir, fhir_peer):
    """Only on the local peer: the test hook used by the plugin's retry/dead-letter tests works."""
    if fhir_peer.local is None:
        pytest.skip("the 503 test hook exists only on the suite's local FHIR peer")
    fhir_peer.local.fail_next(count=2, status=503, methods=["GET"])
    assert fhir.get("/Patient").status_code == 503
    assert fhir.get("/Patient").status_code == 503
    assert fhir.get("/Patient").status_code == 200
