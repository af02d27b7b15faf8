"""The SHIPPED encoder and reference bank, run by onnxruntime (no torch), on freshly rendered
held-out phantoms: a seed never used in training (shipped data use seed 0, patients 0-959)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from synthetic.phantoms.paired import LABELS, patient  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[3] / "models" / "crossmodal" / "weights"
FRESH_SEED = 90_210  # never used by training, selection or the other tests
MARGIN = 0.4  # required top-1 class-match rate above chance (measured 0.958 vs 0.333 at 0.1.0)


def _shipped() -> tuple[object, dict, dict]:
    for name in ("mammo_encoder.onnx", "reference_bank.npz", "card.json"):
        assert (WEIGHTS / name).is_file(), f"shipped {name} missing: run models.crossmodal.training.train"
    sess = ort.InferenceSession(str(WEIGHTS / "mammo_encoder.onnx"), providers=["CPUExecutionProvider"])
    with np.load(WEIGHTS / "reference_bank.npz", allow_pickle=False) as z:
        bank = {k: z[k] for k in z.files}
    return sess, bank, json.loads((WEIGHTS / "card.json").read_text())


def test_shipped_bank_retrieves_the_matching_class_on_unseen_phantoms() -> None:
    sess, bank, _ = _shipped()
    # patients 16..63 of a data set are benign, in situ, invasive (16 each; 0..15 are normal)
    pats = [patient(i, FRESH_SEED, n_patches=1) for i in range(16, 64)]
    crops = np.stack([p.crop for p in pats])[:, None].astype(np.float32)
    truth = np.array([LABELS.index(p.factors.label) - 1 for p in pats])  # index into PATCH_CLASSES
    emb, logits = sess.run(["embedding", "class_logits"], {"crop": crops})
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    top1 = bank["labels"][np.argmax(emb @ bank["embeddings"].T, axis=1)]
    rate = float((top1 == truth).mean())
    chance = float(np.mean([(bank["labels"] == c).mean() for c in truth]))
    assert rate > chance + MARGIN, (rate, chance)


def test_shipped_files_match_the_card_and_the_fixed_format() -> None:
    sess, bank, card = _shipped()
    assert card["name"] == "crossmodal-alignment" and card["synthetic_trained"] is True
    assert "not for clinical use" in card["notice"].lower()
    for name, digest in card["weights_sha256"].items():
        assert hashlib.sha256((WEIGHTS / name).read_bytes()).hexdigest() == digest, name
    d = bank["embeddings"].shape[1]
    assert [o.shape[1] for o in sess.get_outputs()] == [d, 4]
    assert bank["embeddings"].dtype == np.float32 and bank["labels"].dtype == np.int64
    assert np.allclose(np.linalg.norm(bank["embeddings"], axis=1), 1.0, atol=1e-4)
    assert list(bank["class_names"]) == ["benign", "dcis", "invasive"]
    assert bank["patches"].dtype == np.uint8 and bank["patches"].shape[1:] == (48, 48, 3)
    assert len(set(bank["ids"].tolist())) == len(bank["ids"]) and bank["description"].shape == ()
    assert card["extra"]["onnx_parity_max_abs_diff"]["embedding"] < 1e-4
    for name in ("mammo_encoder.onnx", "reference_bank.npz", "card.json"):
        assert (WEIGHTS / name).stat().st_size < 20 * 2**20
