"""A tiny end-to-end training run (phantoms -> tile CNNs -> MIL -> ONNX -> calibration -> card) works."""

from __future__ import annotations

import json

from models.slides.onnx_nets import WEIGHT_FILES
from models.slides.training.train import train_synthetic


def test_tiny_training_run(tmp_path):
    card = train_synthetic(tmp_path, seed=3, n_slides=8, progress=False, train_size=1024, eval_size=1024, epochs=1, mil_epochs=2)
    for name in WEIGHT_FILES:
        assert (tmp_path / name).stat().st_size > 1000
    saved = json.loads((tmp_path / "card.json").read_text())
    assert saved["name"] == card.name and "not for clinical use" in saved["notice"]
    assert saved["metrics"]["onnx_parity_max_abs_diff"] < 1e-4
    assert saved["metrics"]["test"]["n_slides"] == 2
    assert 0.0 <= saved["thresholds"]["youden"] <= 1.0
    assert saved["calibration"]["method"] in ("platt", "isotonic")
    assert saved["metrics"]["training"]["train_tiles"] > 0
