"""The mammography phantom generator: valid DICOM, reproducible, labelled by its documented rule."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cds.contracts.domain import PatientRef
from synthetic.phantoms.mammography import (
    LABEL_FOR_LESION,
    LESION_TYPES,
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    generate_exam,
    generate_fast_image,
    synthesize_exam,
)

PATIENT = PatientRef(patient_id="PH-1", issuer="TEST", name="Phantom^Jane", birth_date="19600101", sex="F")


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_exam_is_valid_mg_dicom(tmp_path: Path) -> None:
    truth = generate_exam(tmp_path, seed=3, patient=PATIENT, rows=512, columns=416,
                          force_label="invasive", for_processing=True)
    assert len(truth.images) == 4
    assert {(i.laterality, i.view) for i in truth.images} == {("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")}
    for img in truth.images:
        for path, sop_class in ((img.path, MG_FOR_PRESENTATION), (img.for_processing_path, MG_FOR_PROCESSING)):
            assert _dciodvfy_errors(path) == [], path
            ds = pydicom.dcmread(path)
            assert ds.SOPClassUID == sop_class
            assert ds.Modality == "MG" and ds.ImageLaterality == img.laterality
            assert ds.ViewPosition == img.view and ds.BitsStored in (12, 14)
            assert ds.ViewCodeSequence[0].CodeValue in ("399162004", "399368009")
            assert ds.pixel_array.shape == (512, 416) and ds.pixel_array.dtype == np.uint16
            assert int(ds.pixel_array.max()) < (1 << ds.BitsStored)
            assert ds.StudyInstanceUID == truth.study_instance_uid


def test_same_seed_same_exam_and_uids(tmp_path: Path) -> None:
    a = generate_exam(tmp_path / "a", seed=11, patient=PATIENT, rows=256, columns=208)
    b = generate_exam(tmp_path / "b", seed=11, patient=PATIENT, rows=256, columns=208)
    c = generate_exam(tmp_path / "c", seed=12, patient=PATIENT, rows=256, columns=208)
    assert a.study_instance_uid == b.study_instance_uid != c.study_instance_uid
    for ia, ib in zip(a.images, b.images):
        assert ia.path.read_bytes() == ib.path.read_bytes()
        assert (ia.label, ia.grade, ia.lesion_type) == (ib.label, ib.grade, ib.lesion_type)
    pa = pydicom.dcmread(a.images[0].path).pixel_array
    pc = pydicom.dcmread(c.images[0].path).pixel_array
    assert not np.array_equal(pa, pc)


@pytest.mark.parametrize("lesion", LESION_TYPES)
def test_labels_follow_documented_rule(lesion: str) -> None:
    exam = synthesize_exam(seed=100 + LESION_TYPES.index(lesion), rows=256, columns=208, force_lesion=lesion)
    label = LABEL_FOR_LESION[lesion]
    assert exam.exam_label == label
    for v in exam.views:
        if v.laterality == exam.lesion_laterality:
            assert v.label == label and v.lesion_type == lesion
            assert v.mask.any(), "the lesion must have a ground-truth mask in both of its views"
            assert (v.grade == 0) == (label in ("normal", "benign"))
            assert 0 <= v.grade <= 3
        else:
            assert v.label == "normal" and v.grade == 0 and not v.mask.any()


def test_normal_exam_has_no_masks(tmp_path: Path) -> None:
    truth = generate_exam(tmp_path, seed=1, patient=PATIENT, rows=256, columns=208, force_label="normal")
    assert all(i.label == "normal" and i.mask_path is None for i in truth.images)


def test_bad_label_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="force_label"):
        generate_exam(tmp_path, seed=1, patient=PATIENT, force_label="malignant")


def test_fast_image_is_valid(tmp_path: Path) -> None:
    path = generate_fast_image(tmp_path / "fast.dcm", seed=2, rows=1024, columns=832)
    assert _dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.pixel_array.shape == (1024, 832) and ds.BitsAllocated == 16


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_left_and_right_breasts_look_alike() -> None:
    """v3: the two images of a view share anatomy, so they correlate far more than two exams do."""
    a = synthesize_exam(seed=21, rows=256, columns=208, force_label="normal")
    b = synthesize_exam(seed=22, rows=256, columns=208, force_label="normal")
    canon = {(e, v.laterality, v.view): (v.pixels[:, ::-1] if v.laterality == "R" else v.pixels)
             for e, ex in (("a", a), ("b", b)) for v in ex.views}
    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # both breasts, not the background
        return (x > np.percentile(x, 40)) & (y > np.percentile(y, 40))

    x = canon[("a", "L", "CC")]
    same_y, other_y = canon[("a", "R", "CC")], canon[("b", "R", "CC")]
    same = _corr(x[inside(x, same_y)], same_y[inside(x, same_y)])
    other = _corr(x[inside(x, other_y)], other_y[inside(x, other_y)])
    assert same > 0.7, same
    assert same > other + 0.05, (same, other)
    assert not np.array_equal(canon[("a", "L", "CC")], canon[("a", "R", "CC")])


def test_distortion_mask_spans_its_lines() -> None:
    """v3: the distortion's mask is the convex hull of its drawn lines, not a disc of its own."""
    from synthetic.phantoms.mammography import LesionSpec, _add_lesion

    rows, cols = 512, 416
    r = np.full((rows, cols), 0.5, np.float32)
    pectoral = np.zeros((rows, cols), bool)
    spec = LesionSpec(kind="architectural_distortion", aggressiveness=0.7, depth=0.5, size=0.05, seed=3)
    att = np.zeros((rows, cols), np.float32)
    mask = _add_lesion(np.random.default_rng(3), spec, att, r, pectoral, 0.8, 0.5).astype(bool)
    strong = att > 0.5 * att.max()  # the strong part of the drawn lines (and the central density)
    drawn = att > 0.2 * att.max()
    assert mask.any() and strong.any()
    assert not (strong & ~mask).any(), "the lines lie inside the mask"
    ys, xs = np.nonzero(drawn)
    my, mx = np.nonzero(mask)
    assert xs.min() <= mx.min() and mx.max() <= xs.max(), "the mask ends where the lines end"
    assert ys.min() <= my.min() and my.max() <= ys.max()
    # and it is the lines' polygon, not v2's disc: an equal-area disc on its centroid differs
    cy, cx = np.nonzero(mask)[0].mean(), np.nonzero(mask)[1].mean()
    yy, xx = np.mgrid[0:rows, 0:cols]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < mask.sum() / np.pi
    assert (mask & disc).sum() / (mask | disc).sum() < 0.95
