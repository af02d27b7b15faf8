"""`train_from_folder` adapts the MIL head to a folder of DICOM slides with a labels CSV, resumably."""

from __future__ import annotations

import json

import pytest

from models.slides.training.train import train_from_folder
from synthetic.phantoms.slides import generate_slide
from tests.unit.models.conftest import PATIENT


@pytest.mark.slow
def test_train_from_folder_and_resume(tmp_path, monkeypatch):
    rows = ["series_instance_uid,label"]
    for i in range(8):
        tr = generate_slide(tmp_path / "dicom" / f"s{i}", 500 + i, PATIENT, metastasis=i % 2 == 0, size=1024)
        rows.append(f"{tr.series_instance_uid},{int(tr.has_metastasis)}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    card = train_from_folder(tmp_path / "dicom", labels, out, mil_epochs=3, progress=False)
    assert (out / "slide_mil.onnx").is_file() and (out / "card.json").is_file()
    assert card.metrics["holdout"]["n_slides"] == 4
    assert len(list((out / "cache").glob("*.npy"))) == 8
    # resume: cached features and the checkpoint are reused, so no slide is opened again
    import models.slides.training.train as train_mod

    def tripwire(*_a, **_k):
        raise AssertionError("a slide was re-read on resume")

    monkeypatch.setattr(train_mod, "open_slide", tripwire)
    card2 = train_from_folder(tmp_path / "dicom", labels, out, progress=False)
    assert card2.calibration == card.calibration
    saved = json.loads((out / "card.json").read_text())
    assert saved["calibration"]["method"] in ("platt", "isotonic")


def test_labels_csv_is_checked(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("slide,y\na,1\n")
    with pytest.raises(ValueError, match="expected columns series_instance_uid,label"):
        train_from_folder(tmp_path, bad, tmp_path / "out", progress=False)
