"""FHIR JSON outputs valid against fhir.resources R4B; the PDF renders and is not blank; the
clinical context is read from an offline Bundle, an NDJSON folder, and nothing."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import numpy as np
import pytest
from fhir.resources.R4B import get_fhir_model_class
from PIL import Image

from cds.contracts.domain import NOT_FOR_CLINICAL_USE
from cds.contracts.settings import Settings
from cds.fhir.context import fetch_clinical_context
from cds.writers.fhir_resources import FhirValidationError, validate
from synthetic.phantoms.clinical import DEFAULT_VALUES, synthetic_patient, write_ndjson
from tests.peers import missing


def _fhir(outputs, rtype):
    return [a for a in outputs.all if a.kind == "fhir" and a.resource_type == rtype]


def test_every_fhir_output_is_valid_r4(outputs):
    arts = [a for a in outputs.all if a.kind == "fhir"]
    assert sorted({a.resource_type for a in arts}) == ["DiagnosticReport", "Provenance", "RiskAssessment"]
    for a in arts:
        body = json.loads(a.path.read_text())
        get_fhir_model_class(body["resourceType"]).model_validate(body)


def test_risk_assessments_carry_the_model_outputs(outputs):
    ras = {a.key: json.loads(a.path.read_text()) for a in _fhir(outputs, "RiskAssessment")}
    mg = ras["2.25.1001/fixture-mammo/0.1.0-fixture/fhir-riskassessment"]
    exam = outputs.mammo.mammography.exam_malignancy
    assert mg["prediction"][0]["probabilityDecimal"] == pytest.approx(exam.probability, abs=1e-6)
    assert mg["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == ("high" if exam.positive else "low")
    assert mg["method"]["text"] == "fixture-mammo version 0.1.0-fixture"
    assert any(b.get("type") == "ImagingStudy" for b in mg["basis"])
    assert any("SR" in b.get("display", "") for b in mg["basis"])
    assert NOT_FOR_CLINICAL_USE in mg["note"][0]["text"]
    sm = ras["2.25.1002/fixture-slide/0.1.0-fixture/fhir-riskassessment"]
    assert sm["prediction"][0]["probabilityDecimal"] == pytest.approx(
        outputs.slide.slide.metastasis.probability, abs=1e-6)
    rec = next(v for k, v in ras.items() if k.endswith("/fhir-recurrence"))
    years = [p["whenRange"]["high"]["value"] for p in rec["prediction"]]
    assert years == [3, 5, 7]
    for p in rec["prediction"]:
        assert p["probabilityDecimal"] == pytest.approx(outputs.recurrence.absolute_risk[p["whenRange"]["high"]["value"]],
                                                        abs=1e-6)
    assert rec["subject"] == {"reference": "Patient/syn-patient-1"}
    assert {b.get("reference") for b in rec["basis"]} >= {f"Observation/syn-obs-{i}" for i in range(4)}


def test_invalid_resource_is_refused_before_sending():
    with pytest.raises(FhirValidationError, match="RiskAssessment"):
        validate({"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/1"},
                  "prediction": [{"probabilityDecimal": "high"}]})


def test_pdf_first_page_renders_and_is_not_blank(outputs, tmp_path):
    if shutil.which("pdftoppm") is None:
        missing("poppler-utils (pdftotext) not installed: run scripts/install_peers.sh")
    dr = json.loads(_fhir(outputs, "DiagnosticReport")[0].path.read_text())
    pdf = base64.b64decode(dr["presentedForm"][0]["data"])
    assert pdf.startswith(b"%PDF")
    (tmp_path / "r.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(tmp_path / "r.pdf"),
                    str(tmp_path / "page")], check=True)
    page = np.asarray(Image.open(next(tmp_path.glob("page*.png"))).convert("L"), dtype=np.float32)
    assert page.shape[0] > 300
    assert (page < 200).mean() > 0.03, "first page is (almost) blank"
    assert page.std() > 20
    text = subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True, text=True).stdout
    for needle in ("SYN-0001", "Recurrence risk", "3 years", "fixture-mammo", "not for clinical use"):
        assert needle.lower() in text.lower(), needle
    assert "Lymph node" in dr["conclusion"] or "Lymph-node" in dr["conclusion"]


def test_context_from_bundle_and_ndjson(outputs, tmp_path):
    bundle_ctx = outputs.clinical
    assert bundle_ctx.fhir_patient_ref == "Patient/syn-patient-1"
    for k, v in DEFAULT_VALUES.items():
        assert bundle_ctx.values[k] == (pytest.approx(v) if not isinstance(v, str) else v), k
        assert bundle_ctx.sources[k].kind == "Observation"
    assert 55 < bundle_ctx.values["age_years"] < 80
    assert "hypoechoic" in bundle_ctx.ultrasound_report_text
    write_ndjson(tmp_path / "bulk")
    nd = fetch_clinical_context(Settings(fhir_offline_dir=tmp_path / "bulk"), synthetic_patient())
    assert nd.values == bundle_ctx.values


def test_context_empty_without_source_and_unknown_patient(tmp_path):
    assert fetch_clinical_context(Settings(), synthetic_patient()).values == {}
    write_ndjson(tmp_path / "bulk")
    other = synthetic_patient().model_copy(update={"patient_id": "NOPE"})
    assert fetch_clinical_context(Settings(fhir_offline_dir=tmp_path / "bulk"), other).values == {}


def test_bad_offline_file_names_the_file(tmp_path):
    (tmp_path / "Observation.ndjson").write_text('{"resourceType": "Observation"}\n{broken\n')
    with pytest.raises(ValueError, match=r"Observation.ndjson line 2"):
        fetch_clinical_context(Settings(fhir_offline_dir=tmp_path), synthetic_patient())
