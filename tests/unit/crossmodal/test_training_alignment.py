"""A few alignment steps make same-patient pairs rank first; the exported encoder matches torch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from models.crossmodal.training.data import crops_to_input, subset  # noqa: E402
from models.crossmodal.training.export import export_onnx, onnx_parity  # noqa: E402
from models.crossmodal.training.loop import ArmConfig, pair_cosines, retrieval, train_arm  # noqa: E402
from models.crossmodal.training.net import CrossModalNet  # noqa: E402
from synthetic.phantoms.paired import paired_arrays  # noqa: E402


@pytest.fixture(scope="module")
def tiny() -> dict:
    torch.set_num_threads(1)
    d = paired_arrays(64, seed=123, n_patches=2)
    return subset(d, ("train", "calibration", "test"))


def test_same_patient_pairs_rank_above_other_pairs_after_training(tiny: dict) -> None:
    lesion = {k: v[tiny["patch_labels"] >= 0] for k, v in tiny.items()}  # 48 patients with pathology
    n = len(lesion["labels"])
    before = pair_cosines(CrossModalNet().eval(), lesion)
    cfg = ArmConfig(align=1.0, tau=0.1, epochs=30, batch=16, lr=3e-3, seed=0)
    net, _ = train_arm(lesion, cfg)
    after = pair_cosines(net, lesion)
    # chance: the own patient at mean rank (n + 1) / 2 = 24.5, top-1 in 1 / n = 2 %
    assert after["mean_patient_rank"] < 0.3 * n, after
    assert after["top1_patient_rate"] > 5.0 / n, after  # measured 0.25 at seed 0
    assert after["mean_patient_rank"] < before["mean_patient_rank"] - 5, (before, after)
    assert after["intra_pair_cosine"] > after["non_pair_cosine"] + 0.1, after
    # lambda = 0 (same seed, same steps): no pull between the modalities
    unaligned, _ = train_arm(lesion, replace(cfg, align=0.0))
    assert after["intra_pair_cosine"] > pair_cosines(unaligned, lesion)["intra_pair_cosine"]


def test_retrieval_counts_class_matches_against_prevalence() -> None:
    q = np.eye(2, dtype=np.float32)
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    bank_cls = np.array([0, 1, 1, 1])
    r = retrieval(q, np.array([0, 1]), bank, bank_cls)
    assert r["top1"] == 1.0  # query 0 -> item 0 (class 0); query 1 -> item 2 (class 1)
    assert r["top3"] == pytest.approx((1 / 3 + 1) / 2)  # query 0's top 3: classes 0, 1, 1
    assert r["chance"] == pytest.approx((0.25 + 0.75) / 2)


def test_onnx_export_matches_torch(tmp_path, tiny: dict) -> None:
    torch.manual_seed(0)
    net = CrossModalNet(widths=(8, 16, 16), dim=16)
    net.train()
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from batch mode
        for _ in range(3):
            net(torch.from_numpy(crops_to_input(tiny["crops"][:16])), "mammo")
    path = export_onnx(net, tmp_path / "enc.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["crop"]
    assert [o.name for o in sess.get_outputs()] == ["embedding", "class_logits"]
    x = crops_to_input(tiny["crops"][:5])
    emb, logits = sess.run(None, {"crop": x})
    assert emb.shape == (5, 16) and logits.shape == (5, 4)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    parity = onnx_parity(net, path, x)
    assert max(parity.values()) < 1e-4, parity
