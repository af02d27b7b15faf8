"""Training domain and operating point in every output: SR, FHIR RiskAssessment, PDF.

The session's fixture analyses (tests/conftest.py) are copied with a card operating point and a
domain check, in domain and out of it, and written again. Out of domain, no output may carry a
plain decision: the SR has no positive/negative decision or predicted class, the RiskAssessment
no qualitativeRisk, the PDF no "suspicious"/"not suspicious".
"""

from __future__ import annotations

import json
import subprocess

import pydicom
import pytest

from cds.contracts.domain import DomainCheck, OperatingPoint, StudyAnalysis
from cds.writers.outputs import case_outputs, study_outputs
from tests.peers import needs_tool

SENS = OperatingPoint(name="sensitivity_0.90", threshold=0.36, expected_sensitivity=0.8984,
                      expected_specificity=0.9089)
OOD = DomainCheck(in_domain=False, score=80.5, threshold=36.2,
                  reasons=["bits stored 8 outside the training domain 10-16",
                           "embedding distance 80.5 above the training-domain threshold 36.2"])
INSIDE = DomainCheck(in_domain=True, score=12.0, threshold=36.2)
POSITIVE, NEGATIVE = "10828004", "260385009"


def _with(analysis: StudyAnalysis, domain: DomainCheck) -> StudyAnalysis:
    """The analysis at :data:`SENS`, each finding with ``domain`` (grade labels set)."""
    if analysis.mammography is not None:
        m = analysis.mammography
        cal = m.exam_malignancy.model_copy(update={"threshold": SENS.threshold, "threshold_name": SENS.name,
                                                   "operating_point": SENS})
        images = [img.model_copy(update={
            "domain": domain, "grade_probabilities": img.grade_probabilities or [0.1, 0.2, 0.6, 0.1],
            "malignancy": img.malignancy.model_copy(update={"threshold": SENS.threshold, "threshold_name": SENS.name,
                                                            "operating_point": SENS})}) for img in m.images]
        m = m.model_copy(update={"images": images, "exam_malignancy": cal,
                                 "grade_labels": ["grade 0", "grade 1", "grade 2", "grade 3"]})
        return analysis.model_copy(update={"mammography": m})
    s = analysis.slide
    cal = s.metastasis.model_copy(update={"threshold": SENS.threshold, "threshold_name": SENS.name,
                                          "operating_point": SENS})
    return analysis.model_copy(update={"slide": s.model_copy(update={"metastasis": cal, "domain": domain})})


@pytest.fixture(scope="module", params=["inside", "outside"])
def written(request, outputs, tmp_path_factory):
    domain = INSIDE if request.param == "inside" else OOD
    root = tmp_path_factory.mktemp(f"quality-{request.param}")
    mammo, slide = _with(outputs.mammo, domain), _with(outputs.slide, domain)
    arts = (study_outputs(outputs.settings, mammo, root, sources=outputs.sources)
            + study_outputs(outputs.settings, slide, root, sources=outputs.sources))
    arts += case_outputs(outputs.settings, mammo.patient, [mammo, slide], outputs.clinical, outputs.recurrence,
                         root, sources=outputs.sources)
    return request.param, arts


def _codes(ds) -> list[tuple[str, str]]:
    """(concept name, value) code pairs of every CODE content item, depth first."""
    out = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "CODE":
            out.append((item.ConceptNameCodeSequence[0].CodeValue, item.ConceptCodeSequence[0].CodeValue))
        out += _codes(item)
    return out


def _texts(ds) -> list[str]:
    out = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "TEXT":
            out.append(str(item.TextValue))
        out += _texts(item)
    return out


def _by_type(arts, rtype):
    return [a for a in arts if a.resource_type == rtype]


def test_sr_operating_point_domain_and_grade(written):
    kind, arts = written
    srs = [pydicom.dcmread(a.path) for a in _by_type(arts, "SR")
           if "riskassessment" not in a.key and "case" not in a.key]
    assert len(srs) == 2
    for sr in srs:
        codes = _codes(sr)
        assert ("OPPOINT", "OP-SENS-0.90") in codes
        assert any("sensitivity_0.90" in t and "0.90" in t for t in _texts(sr))
        decisions = [v for n, v in codes if n == "DECISION"]
        assert decisions
        if kind == "inside":
            assert ("DOMAIN", "INDOMAIN") in codes
            assert set(decisions) <= {POSITIVE, NEGATIVE}
        else:
            assert ("DOMAIN", "OUTDOMAIN") in codes
            assert set(decisions) == {"NODECISION"}, "an out-of-domain input has no plain decision"
            assert not [v for n, v in codes if n in ("PREDCLS", "PREDGRADE")]
            assert any("OUT OF TRAINING DOMAIN" in t and "bits stored 8" in t for t in _texts(sr))
    mammo_sr = next(sr for sr in srs if sr.Modality == "SR" and any(n == "P-NORMAL" or n.startswith("P-GRADE")
                                                                      for n in _measurement_names(sr)))
    assert {"P-GRADE0", "P-GRADE3", "EXPSENS", "EXPSPEC"} <= set(_measurement_names(mammo_sr))


def _measurement_names(ds) -> list[str]:
    out = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "NUM":
            out.append(item.ConceptNameCodeSequence[0].CodeValue)
        out += _measurement_names(item)
    return out


@needs_tool("dciodvfy")
def test_sr_still_passes_dciodvfy_and_dcsrdump(written):
    _, arts = written
    for a in _by_type(arts, "SR"):
        res = subprocess.run(["dciodvfy", str(a.path)], capture_output=True, text=True)
        errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{a.path.name}: {errors}"
        dump = subprocess.run(["dcsrdump", str(a.path)], capture_output=True, text=True)
        assert "Error" not in dump.stdout + dump.stderr


def test_risk_assessment(written):
    from fhir.resources.R4B import get_fhir_model_class

    kind, arts = written
    ras = [json.loads(a.path.read_text()) for a in _by_type(arts, "RiskAssessment") if "recurrence" not in a.key]
    assert len(ras) == 2
    for ra in ras:
        get_fhir_model_class("RiskAssessment").model_validate(ra)
        pred = ra["prediction"][0]
        assert "operating point sensitivity_0.90" in pred["rationale"]
        assert "expected sensitivity 0.90" in pred["rationale"] and "expected specificity 0.91" in pred["rationale"]
        notes = " ".join(n["text"] for n in ra.get("note", []))
        if kind == "inside":
            assert pred["qualitativeRisk"]["coding"][0]["code"] in ("high", "low")
            assert "within the training domain" in notes
        else:
            assert "qualitativeRisk" not in pred, "no decision out of the training domain"
            assert pred["rationale"].startswith("UNRELIABLE")
            assert "OUT OF TRAINING DOMAIN" in notes and "bits stored 8" in notes


@needs_tool("pdftotext")
def test_pdf_shows_operating_point_grade_and_domain(written, tmp_path):
    kind, arts = written
    pdf = next(a for a in arts if a.resource_type == "DOC" or a.path.suffix == ".pdf")
    path = pdf.path
    if path.suffix != ".pdf":
        path = tmp_path / "report.pdf"
        path.write_bytes(pydicom.dcmread(pdf.path).EncapsulatedDocument.rstrip(b"\0"))
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True).stdout
    flat = " ".join(text.split())
    assert "sensitivity_0.90" in flat and "expected sensitivity 0.90" in flat
    assert "grade 2" in flat
    if kind == "inside":
        assert "within the training domain" in flat
        assert "OUT OF TRAINING DOMAIN" not in flat
    else:
        assert "OUT OF TRAINING DOMAIN" in flat and "No decision" in flat
        assert "not suspicious" not in flat and "suspicious" not in flat.replace("metastasis suspected", "")
        assert "metastasis suspected" not in flat and "not suspected" not in flat
