"""ONNX export of the MRRP network gives the same risk scores as torch (with missing modalities)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.recurrence.features import INPUT_NAMES, FeatureSpec, fit_scalers, standardize
from models.recurrence.survival import BaselineHazard
from models.recurrence.training import cohort
from models.recurrence.training.train import Ensemble, FittedModel, TrainConfig, export_onnx, fit_network


@pytest.mark.parametrize("fusion,image_branches", [("attention", True), ("attention", False)])
def test_onnx_parity(tmp_path: Path, fusion: str, image_branches: bool) -> None:
    torch.set_num_threads(1)
    spec = FeatureSpec()
    batch, time, event, _ = cohort.semi_synthetic_arrays(spec, seed=3)
    idx = np.arange(120)
    b = cohort.subset(batch, idx)
    spec.scalers = fit_scalers(b)
    std = standardize(b, spec.scalers)
    cfg = TrainConfig(epochs=5, fusion=fusion, image_branches=image_branches)
    nets = [fit_network(spec, std, time[idx], event[idx], cfg, seed=k) for k in range(2)]
    model = FittedModel(config=cfg, spec=spec, shrinkage=0.8, cutoff=0.0, selection=[], nets=nets,
                        baseline=BaselineHazard.fit(np.zeros(120), time[idx], event[idx]))
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    # Missing modalities must be in the test batch: the semi-synthetic cohort has 25-50 % missing.
    assert (b["modality_mask"] == 0).any()
    with torch.no_grad():
        ref = Ensemble(nets, 0.8)(*[torch.from_numpy(np.ascontiguousarray(std[k])) for k in INPUT_NAMES]).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    (got,) = sess.run(None, {k: std[k] for k in INPUT_NAMES if k in names})
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.std(got) > 0  # not a constant output
