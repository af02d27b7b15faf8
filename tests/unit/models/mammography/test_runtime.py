"""Runtime: the shipped ONNX model analyses a generated exam with onnxruntime only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cds.contracts.domain import MAMMO_CLASSES, PatientRef, StudyInput
from cds.contracts.model import ModelUnavailable
from cds.contracts.settings import Settings
from synthetic.phantoms.mammography import generate_exam
from tests.unit.models.mammography.study_input import study_input

PATIENT = PatientRef(patient_id="RT-1", name="Runtime^Test", sex="F")


def _study(truth) -> StudyInput:
    return study_input(truth, PATIENT)


def test_missing_weights_raise_model_unavailable(tmp_path: Path) -> None:
    from models.mammography.runtime import load

    with pytest.raises(ModelUnavailable, match="mammography.onnx"):
        load(Settings(models_dir=tmp_path))


def test_analyze_generated_exam(tmp_path: Path) -> None:
    from models.mammography.runtime import load

    model = load(Settings())
    assert model.modalities == frozenset({"MG"})
    assert "not for clinical use" in model.card.notice.lower()
    truth = generate_exam(tmp_path / "exam", seed=21, patient=PATIENT, force_lesion="spiculated_mass")
    work = tmp_path / "work"
    result = model.analyze(_study(truth), work)
    mg = result.mammography
    assert mg is not None and len(mg.images) == 4 and not mg.tta_applied
    by_uid = {i.sop_instance_uid: i for i in truth.images}
    for f in mg.images:
        t = by_uid[f.sop_instance_uid]
        assert (f.laterality, f.view) == (t.laterality, t.view)
        assert set(f.class_probabilities) == set(MAMMO_CLASSES)
        assert sum(f.class_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert len(f.grade_probabilities) == 4 and sum(f.grade_probabilities) == pytest.approx(1.0, abs=1e-5)
        assert f.heatmap is not None and f.heatmap.load(work).dtype == np.float32
        for les in f.lesions:
            mask = les.mask.load(work)
            assert mask.shape == (t.rows, t.columns) and mask.dtype == np.uint8
            x0, y0, x1, y1 = les.box
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
            assert les.polygon[0] == les.polygon[-1]
    assert mg.exam_malignancy.probability == max(f.malignancy.probability for f in mg.images)
    # the lesion breast's images hold the exam's lesions: the model must find the spiculated mass
    lesion_imgs = [f for f in mg.images if by_uid[f.sop_instance_uid].mask_path is not None]
    found = 0
    for f in lesion_imgs:
        gt = np.load(by_uid[f.sop_instance_uid].mask_path).astype(bool)
        pred = np.zeros_like(gt)
        for les in f.lesions:
            pred |= les.mask.load(work).astype(bool)
        found += int((pred & gt).sum() / max((pred | gt).sum(), 1) > 0.3)
    assert found >= 1


def test_runtime_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, json; from cds.contracts.settings import Settings; from models.mammography.runtime import load;"
        "load(Settings()); print(json.dumps('torch' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[4])
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_exam_input_pairs_contralateral_views(tmp_path: Path) -> None:
    from models.mammography.preprocess import read_mg
    from models.mammography.runtime import exam_input

    truth = generate_exam(tmp_path, seed=4, patient=PATIENT, rows=256, columns=208, force_label="normal")
    images = [read_mg(i.path) for i in truth.images]
    x = exam_input(images)
    assert x.shape == (4, 2, 256, 208)
    for k, im in enumerate(images):
        other = next(j for j, o in enumerate(images) if o.view == im.view and o.laterality != im.laterality)
        assert np.array_equal(x[k, 1], x[other, 0])
    # a unilateral study: each image is its own contralateral
    x1 = exam_input([im for im in images if im.laterality == "L"])
    assert np.array_equal(x1[:, 0], x1[:, 1])


def test_lesions_are_not_outlined_on_images_called_normal(tmp_path: Path) -> None:
    """Components are reported only on images whose calibrated P(normal) is at most the card's gate."""
    from models.mammography.runtime import load

    model = load(Settings())
    assert 0.0 < model.max_p_normal <= 1.0
    truth = generate_exam(tmp_path / "exam", seed=21, patient=PATIENT, rows=512, columns=416,
                          force_lesion="circumscribed_mass")
    study = _study(truth)
    model.max_p_normal = 1.0
    images = model.analyze(study, tmp_path / "a").mammography.images
    assert sum(len(f.lesions) for f in images) >= 1
    cut = min(f.class_probabilities["normal"] for f in images if f.lesions)
    model.max_p_normal = cut - 1e-6
    gated = model.analyze(study, tmp_path / "b").mammography.images
    for f, g in zip(images, gated):
        assert len(g.lesions) == (len(f.lesions) if f.class_probabilities["normal"] <= cut - 1e-6 else 0)
    assert sum(len(g.lesions) for g in gated) < sum(len(f.lesions) for f in images)
