"""The network: ordinal head monotone, MixStyle training-only, a tiny training run, ONNX parity."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.mammography.training.data import synthetic_arrays  # noqa: E402
from models.mammography.training.net import CumulativeLinkHead, MammoNet  # noqa: E402
from models.mammography.training.train import TrainConfig, export_onnx, fit, onnx_parity, predict  # noqa: E402


def test_cumulative_link_probabilities_are_monotone() -> None:
    torch.manual_seed(0)
    head = CumulativeLinkHead(8, 4)
    with torch.no_grad():
        head.deltas.copy_(torch.tensor([-3.0, 2.0]))  # even a negative raw increment stays ordered
        probs, cum = head(torch.randn(64, 8) * 5)
    assert torch.all(cum[:, 1:] >= cum[:, :-1])
    assert torch.all(probs >= 0)
    assert torch.allclose(probs.sum(1), torch.ones(64), atol=1e-6)
    assert torch.all(head.thresholds()[1:] > head.thresholds()[:-1])


def test_mixstyle_only_in_training() -> None:
    torch.manual_seed(0)
    net = MammoNet(mixstyle=True)
    x = torch.randn(4, 2, 256, 208)
    net.eval()
    with torch.no_grad():
        a = net(x, torch.zeros(1))[0]
        net.set_mixstyle(False)
        b = net(x, torch.zeros(1))[0]
    assert torch.equal(a, b)
    net.train()
    net.set_mixstyle(True)
    for m in net.mix:
        m.p = 1.0
    out = net.mix[0](torch.randn(4, 3, 8, 8) * torch.arange(1, 5).view(4, 1, 1, 1))
    assert out.shape == (4, 3, 8, 8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    data = synthetic_arrays(5, seed=7, rows=256, columns=208)
    out = tmp_path_factory.mktemp("tiny")
    net = fit(data, TrainConfig(epochs=2, batch_size=8, seed=0), progress=False,
              checkpoint=out / "ckpt.pt", resume=False)
    return data, net, out


def test_tiny_training_run_and_resume(tiny) -> None:
    data, net, out = tiny
    logits, seg, grades = predict(net, data.x[:4])
    assert logits.shape == (4, 4) and seg.shape == (4, 256, 208) and grades.shape == (4, 4)
    assert np.isfinite(logits).all() and (seg >= 0).all() and (seg <= 1).all()
    state = torch.load(out / "ckpt.pt", weights_only=False)
    assert state["epoch"] == 1
    # resuming a finished run trains nothing more and reproduces the same weights
    again = fit(data, TrainConfig(epochs=2, batch_size=8, seed=0), progress=False,
                checkpoint=out / "ckpt.pt", resume=True)
    for (k, v), (_, w) in zip(net.state_dict().items(), again.state_dict().items()):
        assert torch.equal(v, w), k
    # the card reports training time over all runs, not the resumed run's few seconds
    assert net.start_epoch == 0 and again.start_epoch == 2
    assert state["train_seconds"] > 0 and again.train_seconds == pytest.approx(state["train_seconds"])


def test_onnx_parity(tiny) -> None:
    data, net, out = tiny
    path = export_onnx(net, out / "m.onnx")
    diffs = onnx_parity(net, path, data.x[:4])
    assert max(diffs.values()) < 1e-4, diffs


def test_single_image_network_reads_the_first_channel(tiny) -> None:
    data, _, _ = tiny
    net = fit(data.subset(np.arange(8)), TrainConfig(epochs=1, batch_size=8, bilateral=False), progress=False)
    assert net.in_channels == 1
    logits, seg, _ = predict(net, data.x[:4])
    assert logits.shape == (4, 4) and seg.shape == (4, 256, 208)


def test_self_pairing_replaces_only_the_contralateral_channel() -> None:
    from models.mammography.training.train import _self_pair

    x = torch.stack([torch.zeros(6, 4, 4), torch.ones(6, 4, 4)], dim=1)
    out = _self_pair(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 1], x[:, 0]) and torch.equal(out[:, 0], x[:, 0])
    assert torch.equal(x[:, 1], torch.ones(6, 4, 4)), "the input batch must not be modified"
    assert torch.equal(_self_pair(x, 0.0, torch.Generator()), x)

