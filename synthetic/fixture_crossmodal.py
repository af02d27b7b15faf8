"""A tiny cross-modal fixture: encoder ONNX, reference bank and card in the shipped format.

It is NOT the alignment model (``models/crossmodal``, trained by ``cds train synthetic``): it
exists so the runtime, the mammography wiring and the writers can be tested against the artifact
format before and independently of the trained weights, with answers known in advance. The
encoder is deterministic: 4x4 average pooling of the 48x48 crop, a fixed seeded linear map to
``dim`` features, L2 normalisation (and a linear class head). :func:`reference_embedding` is the
same computation in numpy, so a test can put the embedding of a chosen crop in the bank and
knows which patch must come back first.

It lives beside :mod:`synthetic.fixture_model` (the writer fixtures) rather than in it: that
module is at the size limit, and this one needs torch to write the ONNX file (tests only; the
runtime never imports it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cds.contracts.cards import ModelCard

CROP = 48  # models.crossmodal.crop.CROP (synthetic does not import the model packages)
POOL = 4
FIXTURE_NAME = "crossmodal-alignment"
FIXTURE_VERSION = "0.0.1-fixture"
CLASS_NAMES = ("normal breast tissue", "benign lesion", "carcinoma in situ", "invasive carcinoma")


def projection(dim: int, seed: int = 0) -> np.ndarray:
    """The encoder's fixed (dim, POOL*POOL) projection."""
    return np.random.default_rng(seed).normal(0, 1, (dim, POOL * POOL)).astype(np.float32)


def reference_embedding(crops: np.ndarray, dim: int = 8, seed: int = 0) -> np.ndarray:
    """What the fixture encoder gives for crops (N, CROP, CROP) or (N, 1, CROP, CROP), in numpy."""
    x = np.asarray(crops, np.float64).reshape(-1, CROP, CROP)
    s = CROP // POOL
    pooled = x.reshape(len(x), POOL, s, POOL, s).mean(axis=(2, 4)).reshape(len(x), -1)
    e = pooled @ projection(dim, seed).astype(np.float64).T
    return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def write_encoder(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """The fixture encoder as ONNX: input ``crop`` (N,1,48,48), outputs ``embedding`` (N,dim)
    and ``class_logits`` (N,4), opset 17, dynamic batch."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AvgPool2d(CROP // POOL)
            self.proj = nn.Linear(POOL * POOL, dim, bias=False)
            self.head = nn.Linear(dim, 4)
            with torch.no_grad():
                self.proj.weight.copy_(torch.from_numpy(projection(dim, seed)))
                self.head.weight.copy_(torch.from_numpy(np.eye(4, dim, dtype=np.float32)))
                self.head.bias.zero_()

        def forward(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            e = nn.functional.normalize(self.proj(self.pool(crop).flatten(1)), dim=1, eps=1e-12)
            return e, self.head(e)

    path.parent.mkdir(parents=True, exist_ok=True)
    net = Encoder().eval()
    torch.onnx.export(net, (torch.zeros(2, 1, CROP, CROP),), str(path), input_names=["crop"],
                      output_names=["embedding", "class_logits"],
                      dynamic_axes={"crop": {0: "n"}, "embedding": {0: "n"}, "class_logits": {0: "n"}},
                      opset_version=17, dynamo=False)
    return path


def bank_arrays(embeddings: np.ndarray, labels: np.ndarray, *, patch: int = 16,
                description: str = "fixture bank") -> dict[str, np.ndarray]:
    """The bank's arrays for given embeddings and labels: each patch a flat colour that encodes
    its row (red = row), ids ``bank-0000``..."""
    emb = np.asarray(embeddings, np.float32)
    m = len(emb)
    patches = np.zeros((m, patch, patch, 3), np.uint8)
    patches[..., 0] = (np.arange(m) % 256)[:, None, None]
    patches[..., 1] = 120
    patches[..., 2] = 200
    return {"embeddings": emb, "labels": np.asarray(labels, np.int64), "class_names": np.array(CLASS_NAMES),
            "patches": patches, "ids": np.array([f"bank-{i:04d}" for i in range(m)]),
            "description": np.array(description)}


def write_bank(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_card(folder: Path) -> Path:
    """``card.json`` for the encoder and bank in ``folder``, with their current checksums."""
    files = ("mammo_encoder.onnx", "reference_bank.npz")
    sha = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in files if (folder / n).is_file()}
    card = ModelCard(name=FIXTURE_NAME, version=FIXTURE_VERSION, task="mammography-pathology alignment (fixture)",
                     intended_use="tests of the cross-modal runtime and writers only",
                     training_data="none: fixed projection, hand-made bank", synthetic_trained=True,
                     architecture="avg-pool 4x4 + fixed linear projection (fixture)",
                     inputs={"crop": {"shape": ["n", 1, CROP, CROP], "dtype": "float32"}},
                     outputs={"embedding": {"normalised": True}, "class_logits": {"classes": 4}},
                     weights_sha256=sha)
    card.write(folder / "card.json")
    return folder / "card.json"


def write_crossmodal_fixture(folder: Path, *, anchors: np.ndarray | None = None,
                             anchor_labels: list[int] | None = None, extra: int = 5, dim: int = 8,
                             seed: int = 0) -> dict:
    """Encoder, bank and card in ``folder``. The bank holds the embeddings of ``anchors`` (crops,
    rows 0..len-1, labelled ``anchor_labels``) followed by ``extra`` random unit vectors.

    Returns a summary: the folder, the bank's ids and labels, and ``dim``.
    """
    rng = np.random.default_rng(seed + 1)
    rows = [] if anchors is None else list(reference_embedding(anchors, dim, seed))
    labels = list(anchor_labels or [0] * len(rows))
    for _ in range(extra):
        v = rng.normal(0, 1, dim)
        rows.append((v / np.linalg.norm(v)).astype(np.float32))
        labels.append(int(rng.integers(0, len(CLASS_NAMES))))
    arrays = bank_arrays(np.stack(rows), np.array(labels), description=f"{len(rows)} fixture patches, seed {seed}")
    write_encoder(folder / "mammo_encoder.onnx", dim, seed)
    write_bank(folder / "reference_bank.npz", arrays)
    write_card(folder)
    return {"folder": folder, "ids": arrays["ids"].tolist(), "labels": labels, "dim": dim}


__all__ = ["write_crossmodal_fixture", "reference_embedding", "bank_arrays", "write_bank", "write_card",
           "write_encoder", "CLASS_NAMES"]
