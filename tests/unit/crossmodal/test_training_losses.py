"""The cross-modal losses against hand computations (numbers written out, not re-derived in code)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.crossmodal.training.net import info_nce, irm_penalty  # noqa: E402


def test_info_nce_3x3_matches_hand_computation() -> None:
    # z_a = identity, z_b rows (1,0,0), (0,1,0), (1,0,0), tau = 1 -> logits = z_a z_b^T =
    #   [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    # rows (a -> b), targets 0, 1, 2:
    #   row 0: -log(e / (2e + 1)) = log(2 + 1/e) = 0.861953
    #   row 1: -log(e / (e + 2))  = log(1 + 2/e) = 0.551445
    #   row 2: -log(1 / 3)        = 1.098612           -> mean 0.837337
    # columns (b -> a) = rows of the transpose [[1, 0, 0], [0, 1, 0], [1, 0, 0]]:
    #   0.551445, 0.551445, -log(1 / (e + 2)) = 1.551445 -> mean 0.884778
    # symmetric loss = (0.837337 + 0.884778) / 2 = 0.861057
    za = torch.eye(3)
    zb = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(info_nce(za, zb, tau=1.0)) == pytest.approx(0.861057, abs=1e-5)
    # perfectly matched pairs at a low temperature: the loss goes to zero
    assert float(info_nce(za, za, tau=0.01)) < 1e-6
    # the temperature matters: same vectors, tau = 0.5 -> logits doubled -> different loss
    assert float(info_nce(za, zb, tau=0.5)) == pytest.approx(0.802569, abs=1e-5)


def test_irm_penalty_matches_hand_computation() -> None:
    # d/dw CE(w * l, y) at w = 1 is sum_k (p_k - [k = y]) * l_k.
    # env 0: logits (1, 0), y = 0: p = (e/(1+e), 1/(1+e)) -> grad = -1/(1+e) = -0.268941, squared 0.072329
    # env 1: logits (0, 2), y = 0: p1 = e^2/(1+e^2) = 0.880797 -> grad = 2 * 0.880797 = 1.761594,
    #        squared 3.103214
    # IRMv1 sums over environments: 3.175543
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0])
    assert float(irm_penalty(logits, y, torch.tensor([0, 1])).detach()) == pytest.approx(3.175543, abs=1e-5)
    # one environment holding both samples: mean gradient (-0.268941 + 1.761594) / 2 = 0.746327,
    # squared 0.557004 (not the sum of the per-sample squares: the penalty is per environment)
    assert float(irm_penalty(logits, y, torch.tensor([0, 0])).detach()) == pytest.approx(0.557004, abs=1e-5)


def test_irm_penalty_is_differentiable() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    pen = irm_penalty(logits, torch.tensor([0, 0]), torch.tensor([0, 1]))
    (g,) = torch.autograd.grad(pen, logits)
    assert float(g.abs().sum()) > 0.0
