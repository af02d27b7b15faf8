"""The shipped recurrence models through the runtime (onnxruntime only): risks, missing inputs, provenance."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from cds.contracts.domain import (
    NOT_FOR_CLINICAL_USE,
    ArrayFile,
    Calibrated,
    CaseInput,
    ClinicalContext,
    PathomicsFeatures,
    PatientRef,
    SlideResult,
    SourceRef,
    UltrasoundResult,
)
from cds.contracts.errors import InsufficientInput
from cds.contracts.model import CaseModel
from cds.contracts.settings import Settings
from models.recurrence.features import DEFAULT_MORPHOLOGY, DEFAULT_RADIOMICS, DEFAULT_TOPOLOGY
from models.recurrence.runtime import load

PATIENT = PatientRef(patient_id="REC-1", issuer="TEST")
REPORT = ("Irregular hypoechoic mass, not parallel, with spiculated margins, 21 x 15 mm, posterior "
          "acoustic shadowing. No calcifications. BI-RADS 5.")


def _clinical(**over) -> ClinicalContext:
    values = {"age_years": 48.0, "tumour_size_mm": 25.0, "positive_nodes": 3, "grade": 2, "er": "positive",
              "pr": 40.0, "her2": "negative", "ki67": 25.0, "menopausal_status": "pre"}
    values.update(over)
    sources = {k: SourceRef(kind="Observation", reference=f"Observation/{k}") for k in values}
    return ClinicalContext(values=values, sources=sources, ultrasound_report_text=REPORT,
                           ultrasound_report_ref=SourceRef(kind="DiagnosticReport", reference="DiagnosticReport/us1"))


def _slide(rng: np.random.Generator) -> SlideResult:
    return SlideResult(
        sop_instance_uids=["1.2.3.1"], series_instance_uid="1.2.3", base_sop_instance_uid="1.2.3.1",
        base_rows=1000, base_columns=1000, tile_rows=256, tile_columns=256,
        metastasis=Calibrated(probability=0.3, threshold=0.5),
        attention_map=ArrayFile(path="a.npy", shape=(4, 4), dtype="float32"),
        pathomics=PathomicsFeatures(n_nuclei=500, til_density_per_mm2=100.0,
                                    morphology={k: float(rng.normal()) for k in DEFAULT_MORPHOLOGY},
                                    topology={k: float(rng.normal()) for k in DEFAULT_TOPOLOGY}),
        embedding=rng.normal(size=64).tolist(),
    )


def _us(rng: np.random.Generator) -> UltrasoundResult:
    return UltrasoundResult(sop_instance_uid="1.2.4.1", series_instance_uid="1.2.4", lesion_box=(1, 2, 30, 40),
                            box_source="automatic", radiomics={k: float(rng.normal()) for k in DEFAULT_RADIOMICS},
                            deep_features=np.tanh(rng.normal(size=32)).tolist())


@pytest.fixture(scope="module")
def model():
    return load(Settings(data_dir=Path("/nonexistent-cds-data")))


def test_runtime_does_not_import_torch(model) -> None:
    import subprocess

    assert isinstance(model, CaseModel)
    code = (
        "import sys; from pathlib import Path\n"
        "from cds.contracts.settings import Settings\n"
        "from cds.contracts.domain import CaseInput, ClinicalContext, PatientRef\n"
        "from models.recurrence.runtime import load\n"
        "m = load(Settings(data_dir=Path('/nonexistent-cds-data')))\n"
        "r = m.analyze_case(CaseInput(patient=PatientRef(), work_dir=Path('.'), "
        "clinical=ClinicalContext(values={'age_years': 50, 'positive_nodes': 2})))\n"
        "assert 'torch' not in sys.modules, 'runtime imported torch'\n"
        "print(r.model.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[4])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "recurrence-clinical"


def test_full_case_uses_fusion_and_names_inputs(model, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    case = CaseInput(patient=PATIENT, clinical=_clinical(), slide=_slide(rng), ultrasound=_us(rng), work_dir=tmp_path)
    r = model.analyze_case(case)
    assert r.model.name == "recurrence-mrrp" and r.model.synthetic_trained
    assert r.model.notice == NOT_FOR_CLINICAL_USE
    assert {"clinical", "wsi", "ultrasound", "ultrasound_report"} <= set(r.modalities_present)
    refs = {s.reference for s in r.inputs}
    assert {"Observation/er", "1.2.3.1", "1.2.4.1", "DiagnosticReport/us1"} <= refs
    assert r.risk_group == ("high" if r.risk_score >= r.cutoff else "low")


@pytest.mark.parametrize("drop", ["slide", "ultrasound", "both"])
def test_missing_modality_runs_and_flags_itself(model, tmp_path: Path, drop: str) -> None:
    rng = np.random.default_rng(1)
    slide = None if drop in ("slide", "both") else _slide(rng)
    us = None if drop in ("ultrasound", "both") else _us(rng)
    r = model.analyze_case(CaseInput(patient=PATIENT, clinical=_clinical(), slide=slide, ultrasound=us,
                                     work_dir=tmp_path))
    if drop in ("slide", "both"):
        assert "wsi" in r.modalities_missing
    if drop in ("ultrasound", "both"):
        assert "ultrasound" in r.modalities_missing
    if drop == "both":
        assert r.model.name == "recurrence-clinical"  # trained and validated on real GBSG2
    assert np.isfinite(r.risk_score)


def test_absolute_risk_is_monotone_in_time_and_in_risk(model, tmp_path: Path) -> None:
    low = model.analyze_case(CaseInput(patient=PATIENT, work_dir=tmp_path, clinical=_clinical(
        positive_nodes=1, tumour_size_mm=12.0, grade=1, pr=300.0, er=300.0, age_years=60.0,
        menopausal_status="post")))
    high = model.analyze_case(CaseInput(patient=PATIENT, work_dir=tmp_path, clinical=_clinical(
        positive_nodes=20, tumour_size_mm=60.0, grade=3, pr=0.0, er="negative", age_years=35.0)))
    for r in (low, high):
        assert set(r.absolute_risk) == {3, 5, 7}
        assert 0.0 < r.absolute_risk[3] < r.absolute_risk[5] <= r.absolute_risk[7] < 1.0
    assert high.risk_score > low.risk_score
    assert high.absolute_risk[5] > low.absolute_risk[5]
    assert high.risk_group == "high" and low.risk_group == "low"


def test_case_without_any_input_is_refused(model, tmp_path: Path) -> None:
    with pytest.raises(InsufficientInput, match="no clinical values"):
        model.analyze_case(CaseInput(patient=PATIENT, clinical=ClinicalContext(), work_dir=tmp_path))
