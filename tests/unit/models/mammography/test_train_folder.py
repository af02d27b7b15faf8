"""`cds train mammography`: a user's DICOM folder + labels CSV trains, calibrates, exports, resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from cds.contracts.domain import PatientRef  # noqa: E402
from models.mammography.training.train import train_from_folder  # noqa: E402
from synthetic.phantoms.mammography import generate_exam  # noqa: E402


def test_train_from_folder(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    rows = []
    for k, (lesion, split) in enumerate((("spiculated_mass", "train"), ("calcifications", "train"),
                                          ("circumscribed_mass", "calibration"),
                                          ("calcifications", "calibration"),
                                          ("architectural_distortion", "test"))):
        truth = generate_exam(dicom / f"e{k}", seed=40 + k, patient=PatientRef(patient_id=f"F{k}"),
                              rows=256, columns=208, force_lesion=lesion)
        for im in truth.images:
            rows.append({"file": str(im.path.relative_to(dicom)), "label": im.label,
                         "grade": im.grade, "split": split,
                         "mask": str(im.mask_path) if im.mask_path else ""})
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    card = train_from_folder(dicom, labels, out, epochs=1, progress=False)
    assert (out / "mammography.onnx").is_file() and (out / "card.json").is_file()
    assert card.synthetic_trained is False
    assert card.metrics["n_test_images"] == 4 and card.metrics["n_calibration_images"] == 8
    assert max(card.extra["onnx_parity_max_abs_diff"].values()) < 1e-4
    assert card.metrics["lovo"] == {"skipped": "lovo_epochs=0"}
    # a second call finds the finished checkpoint and reproduces the same network
    again = train_from_folder(dicom, labels, out, epochs=1, progress=False)
    assert again.weights_sha256 == card.weights_sha256
    assert np.isclose(again.calibration["temperature"], card.calibration["temperature"])
