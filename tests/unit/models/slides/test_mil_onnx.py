"""Gated-attention MIL behaves as a MIL pooling should, and ONNX export matches torch to 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.slides.onnx_nets import OnnxTileNets
from models.slides.training.nets import FEATURE_DIM, GatedAttentionMIL, PatchCNN, TileEncoder, TorchTileNets
from models.slides.training.train import export_onnx, onnx_parity

SHIPPED = Path(__file__).resolve().parents[4] / "models" / "slides" / "weights"


@pytest.mark.parametrize("n", [1, 3, 40])
def test_attention_is_a_distribution_and_pooling_is_permutation_invariant(n):
    torch.manual_seed(n)
    mil = GatedAttentionMIL().eval()
    bag = torch.randn(n, FEATURE_DIM)
    with torch.no_grad():
        logit, att, emb = mil(bag)
        perm = torch.randperm(n)
        logit_p, att_p, _ = mil(bag[perm])
    assert att.shape == (n,) and emb.shape == (64,)
    assert float(att.sum()) == pytest.approx(1.0, abs=1e-6) and bool((att >= 0).all())
    assert float(logit) == pytest.approx(float(logit_p), abs=1e-5)
    assert torch.allclose(att[perm], att_p, atol=1e-6)


def test_attention_follows_the_instance_that_matters():
    """After a few steps on bags where one planted instance decides the label, it gets the attention."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny ops: threads only add synchronisation
    rng = np.random.default_rng(0)
    mil = GatedAttentionMIL()
    opt = torch.optim.Adam(mil.parameters(), lr=5e-3)
    key = np.zeros(FEATURE_DIM, np.float32)
    key[:8] = 3.0

    def bag(pos: bool) -> tuple[torch.Tensor, int]:
        b = rng.normal(0, 1, (12, FEATURE_DIM)).astype(np.float32)
        idx = int(rng.integers(12))
        if pos:
            b[idx] += key
        return torch.from_numpy(b), idx

    for step in range(150):
        b, _ = bag(step % 2 == 0)
        logit, _, _ = mil(b)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit.reshape(1), torch.tensor([float(step % 2 == 0)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    mil.eval()
    hits = 0
    with torch.no_grad():
        for _ in range(10):
            b, idx = bag(True)
            _, att, _ = mil(b)
            hits += int(int(att.argmax()) == idx)
    assert hits >= 8


def test_onnx_export_parity(tmp_path):
    torch.manual_seed(1)
    s1, enc, mil = PatchCNN().eval(), TileEncoder().eval(), GatedAttentionMIL().eval()
    # non-trivial batch-norm statistics, so eval-mode export is really exercised
    for bn in [m for m in (*s1.modules(), *enc.modules()) if isinstance(m, torch.nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    export_onnx(s1, enc, mil, tmp_path)
    diff = onnx_parity(TorchTileNets(s1, enc, mil), OnnxTileNets.load(tmp_path))
    assert diff < 1e-4


def test_shipped_weights_and_card():
    card = json.loads((SHIPPED / "card.json").read_text())
    assert "Trained on synthetic data, not for clinical use" in card["notice"]
    assert card["metrics"]["onnx_parity_max_abs_diff"] < 1e-4
    for name, digest in card["weights_sha256"].items():
        path = SHIPPED / name
        assert path.stat().st_size < 20 * 1024 * 1024
        import hashlib

        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert {"youden", "sensitivity_0.9"} <= set(card["thresholds"])
    nets = OnnxTileNets.load(SHIPPED)
    att = nets.mil(np.random.default_rng(0).normal(size=(9, FEATURE_DIM)).astype(np.float32))[1]
    assert float(np.sum(att)) == pytest.approx(1.0, abs=1e-5)
