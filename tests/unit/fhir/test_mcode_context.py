"""Clinical context from mCODE-shaped bundles built from the official mCODE examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.contracts.domain import CaseInput, PatientRef
from cds.contracts.settings import Settings
from cds.fhir.context import clinical_context_from
from cds.fhir.offline import OfflineFhirSource

from .mcode_examples import MRN, MRN_SYSTEM, jenny_bundle, replace_observation, with_urn_uuids

PATIENT = PatientRef(patient_id=MRN)
SETTINGS = Settings(fhir_patient_identifier_system=MRN_SYSTEM)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def context(tmp_path: Path, bundle: dict, name: str = "b"):
    d = tmp_path / name
    d.mkdir()
    (d / "bundle.json").write_text(json.dumps(bundle))
    return clinical_context_from(OfflineFhirSource(d), SETTINGS, PATIENT)


@pytest.fixture(scope="module")
def model():
    from models.recurrence.runtime import load

    return load(Settings())


def risk(model, ctx, tmp_path):
    return model.analyze_case(CaseInput(patient=PATIENT, clinical=ctx, work_dir=tmp_path))


def test_every_variable_is_read_from_mcode_forms(tmp_path):
    ctx = context(tmp_path, jenny_bundle())
    v, m = ctx.values, ctx.measured
    assert v["er"] == "positive" and v["pr"] == "negative" and v["her2"] == "negative"
    assert v["tumour_size_mm"] == 25.0 and m["tumour_size_mm"].unit == "mm" and m["tumour_size_mm"].original == "2.5 cm"
    assert m["tumour_size_mm"].source.reference == "Observation/tumor-size-jenny-m"
    assert v["grade"] == 2.0
    assert v["nodes_examined"] == 3.0 and m["nodes_examined"].unit == "{count}"
    assert "IIB" in v["stage_group"]
    assert "breast" in v["primary_cancer"].lower()
    assert 50 < v["age_years"] < 70 and m["age_years"].unit == "a"
    assert ctx.fhir_patient_ref == "Patient/cancer-patient-jenny-m"


def test_urn_uuid_references_are_resolved(tmp_path, model):
    plain = context(tmp_path, jenny_bundle(), "plain")
    urn = context(tmp_path, with_urn_uuids(jenny_bundle()), "urn")
    assert urn.values == plain.values
    assert all(s.reference.startswith("urn:uuid:") for s in urn.sources.values())
    assert risk(model, urn, tmp_path).risk_group == risk(model, plain, tmp_path).risk_group


def test_resources_in_any_order(tmp_path):
    b = jenny_bundle()
    b["entry"].reverse()
    assert context(tmp_path, b).values == context(tmp_path, jenny_bundle(), "o").values


def _er(bundle: dict, value: float, unit: str, code: str) -> dict:
    b = replace_observation(bundle, "tumor-marker-test-er-jenny-m",
                            valueQuantity={"value": value, "unit": unit, "system": UCUM, "code": unit})
    for e in b["entry"]:
        if e["resource"].get("id") == "tumor-marker-test-er-jenny-m":
            e["resource"]["code"] = {"coding": [{"system": LOINC, "code": code}]}
    return b


def test_er_5_percent_is_positive_and_5_fmol_negative_with_different_risks(tmp_path, model):
    pct = context(tmp_path, _er(jenny_bundle(), 5, "%", "85329-1"), "pct")
    fmol = context(tmp_path, _er(jenny_bundle(), 5, "fmol/L", "14130-9"), "fmol")
    assert pct.values["er"] == "positive" and pct.measured["er"].unit == "%"
    assert "ASCO/CAP" in pct.measured["er"].note and "low positive" in pct.measured["er"].note
    assert fmol.values["er"] == 5.0 and fmol.measured["er"].unit == "fmol/L"
    r_pct, r_fmol = risk(model, pct, tmp_path), risk(model, fmol, tmp_path)
    print(f"ER 5 %: score {r_pct.risk_score:.4f} 5y {r_pct.absolute_risk[5]:.4f}; "
          f"ER 5 fmol/l: score {r_fmol.risk_score:.4f} 5y {r_fmol.absolute_risk[5]:.4f}")
    assert abs(r_pct.risk_score - r_fmol.risk_score) > 1e-3
    assert r_pct.risk_score < r_fmol.risk_score  # receptor-positive: lower hazard
    assert any("fed as 60 fmol/l" in line for line in r_pct.input_encoding)
    assert any("fed as 5 fmol/l" in line for line in r_fmol.input_encoding)
    assert r_pct.clinical_values and all(cv.source is not None for cv in r_pct.clinical_values)


def test_ki67_under_85330_9_is_read(tmp_path):
    b = jenny_bundle()
    b["entry"].append({"resource": {"resourceType": "Observation", "id": "ki67", "status": "final",
                                    "code": {"coding": [{"system": LOINC, "code": "85330-9"}]},
                                    "subject": {"reference": "Patient/cancer-patient-jenny-m"},
                                    "valueQuantity": {"value": 30, "unit": "%", "system": UCUM, "code": "%"}}})
    assert context(tmp_path, b).values["ki67"] == 30.0


@pytest.mark.parametrize("obs_id, change, variable, words", [
    ("tumor-size-jenny-m", {"component": [{"code": {"coding": [{"system": LOINC, "code": "33728-7"}]},
                                           "valueQuantity": {"value": 2.2, "system": UCUM, "code": "km"}}]},
     "tumour_size_mm", "'km' not accepted"),
    ("tumor-size-jenny-m", {"valueQuantity": {"value": 1e308, "system": UCUM, "code": "mm"}, "component": []},
     "tumour_size_mm", "outside the plausible range"),
    ("tumor-marker-test-er-jenny-m", {"valueQuantity": {"value": 5000, "system": UCUM, "code": "%"}},
     "er", "outside the plausible range"),
    ("tumor-marker-test-er-jenny-m", {"valueQuantity": {"value": 40}}, "er", "no unit"),
    ("tumor-marker-test-er-jenny-m", {"valueQuantity": {"value": "40", "code": "%"}}, "er",
     "valueQuantity.value is not a number"),
])
def test_unusable_values_are_not_used_with_a_reason(tmp_path, obs_id, change, variable, words):
    ctx = context(tmp_path, replace_observation(jenny_bundle(), obs_id, **change))
    assert variable not in ctx.values
    reasons = [n.reason for n in ctx.not_used if n.variable == variable]
    assert any(words in r and f"Observation/{obs_id}" in r for r in reasons), reasons


def test_conflicting_results_are_not_used(tmp_path):
    b = jenny_bundle()
    er = next(e["resource"] for e in b["entry"] if e["resource"].get("id") == "tumor-marker-test-er-jenny-m")
    b["entry"].append({"resource": {**er, "id": "er-pct", "code": {"coding": [{"system": LOINC, "code": "85329-1"}]},
                                    "valueQuantity": {"value": 0, "system": UCUM, "code": "%"}}})
    b["entry"][-1]["resource"].pop("valueCodeableConcept")
    ctx = context(tmp_path, b)
    assert "er" not in ctx.values
    assert any("conflicting" in n.reason and "er-pct" in n.reason for n in ctx.not_used)


def test_two_patients_with_the_identifier_use_nothing(tmp_path):
    b = jenny_bundle()
    pat = next(e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "Patient")
    b["entry"].append({"resource": {**pat, "id": "other"}})
    ctx = context(tmp_path, b)
    assert ctx.values == {}
    assert ctx.not_used[0].variable == "patient" and "ambiguous" in ctx.not_used[0].reason
    assert MRN not in ctx.not_used[0].reason


def test_malformed_entries_name_file_and_element(tmp_path):
    b = jenny_bundle()
    b["entry"].append("not a resource")
    b["entry"] = [e if not (isinstance(e, dict) and e["resource"].get("id") == "tumor-size-jenny-m")
                  else {**e, "resource": {**e["resource"], "component": [{"code": "x", "valueQuantity": "y"}],
                                          "valueQuantity": "2 cm"}} for e in b["entry"]]
    ctx = context(tmp_path, b)
    reasons = " | ".join(n.reason for n in ctx.not_used)
    assert "bundle.json: Bundle.entry[" in reasons
    assert "Observation/tumor-size-jenny-m value[x]: malformed (valueQuantity is not an object)" in reasons


def test_pdf_and_risk_assessment_show_units_and_inputs_not_used(tmp_path, model):
    from cds.writers import fhir_resources as fr
    from reports.pdf import report_context

    b = replace_observation(_er(jenny_bundle(), 5, "%", "85329-1"), "tumor-size-jenny-m",
                            valueQuantity={"value": 2.2, "system": UCUM, "code": "km"}, component=[])
    ctx = context(tmp_path, b)
    rec = risk(model, ctx, tmp_path)
    ra = fr.risk_assessment_recurrence(key="k", settings=SETTINGS, patient=PATIENT, rec=rec, clinical=ctx,
                                       extra_basis=[])
    notes = " | ".join(n["text"] for n in ra["note"])
    assert "Input not used: tumour_size_mm" in notes and "'km'" in notes and "fed as 60 fmol/l" in notes
    assert any("ER 5 %" in (ref.get("display") or "") for ref in ra["basis"])
    page = report_context(PATIENT, [], ctx, rec, {})
    assert any(i["name"] == "er" and i["value"].startswith("5 %") for i in page["inputs"])
    assert any(n["name"] == "tumour_size_mm" for n in page["not_used"]) and page["encoding"]
