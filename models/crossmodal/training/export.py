"""What ships: the mammography branch as ONNX, the reference pathology bank, and the model card.

The artifact format is fixed (the runtime is built against it): ``mammo_encoder.onnx`` takes
``crop`` float32 (N,1,48,48) and returns ``embedding`` (N,D, L2-normalised) and ``class_logits``
(N,4); ``reference_bank.npz`` holds the pathology-branch embeddings of training patients' patches
with their labels, class names, RGB thumbnails, ids and a description. The ONNX graph is the
plain-eval network (running statistics): the fixed format has no TTA input, so TTA is reported
as an evaluated option in the card, not shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cds.contracts.cards import ModelCard
from cds.contracts.domain import MAMMO_CLASSES, NOT_FOR_CLINICAL_USE
from models.crossmodal.crop import CROP
from models.crossmodal.training.data import Arrays, patches_to_input
from models.crossmodal.training.loop import embed
from models.crossmodal.training.net import CrossModalNet, MammoEncoder
from models.training.files import finite, sha256_file
from synthetic.phantoms.paired import PATCH_CLASSES

MODEL_NAME = "crossmodal-alignment"
MODEL_VERSION = "0.1.0"
ONNX_NAME, BANK_NAME, CARD_NAME = "mammo_encoder.onnx", "reference_bank.npz", "card.json"
OPSET = 17  # as the mammography export
BANK_SIZE = 480


def export_onnx(net: CrossModalNet, path: Path) -> Path:
    """Export the eval-mode mammography branch, dynamic batch, opset :data:`OPSET`."""
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        MammoEncoder(net).eval(), (torch.zeros(2, 1, CROP, CROP),), str(path), input_names=["crop"],
        output_names=["embedding", "class_logits"],
        dynamic_axes={"crop": {0: "n"}, "embedding": {0: "n"}, "class_logits": {0: "n"}},
        opset_version=OPSET, dynamo=False,
    )
    return path


def onnx_parity(net: CrossModalNet, path: Path, x: np.ndarray) -> dict:
    """Largest absolute difference torch vs onnxruntime per output on crops ``x`` (N,1,48,48)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = [t.numpy() for t in MammoEncoder(net).eval()(torch.from_numpy(x))]
    got = sess.run(None, {"crop": x})
    return {name: float(np.abs(r - g).max()) for name, r, g in zip(("embedding", "class_logits"), ref, got)}


def build_bank(net: CrossModalNet, train: Arrays, seed: int, size: int = BANK_SIZE) -> dict[str, np.ndarray]:
    """Up to ``size`` patches drawn at random from TRAIN lesion patients, embedded by the path branch."""
    rng = np.random.default_rng([seed, 7])
    pats = np.nonzero(train["patch_labels"] >= 0)[0]
    k = train["patches"].shape[1]
    pairs = np.array([(p, j) for p in pats for j in range(k)])
    pairs = pairs[np.sort(rng.choice(len(pairs), size=min(size, len(pairs)), replace=False))]
    patches = train["patches"][pairs[:, 0], pairs[:, 1]]
    z, _ = embed(net, patches_to_input(patches), "path")
    return {
        "embeddings": z.astype(np.float32),
        "labels": train["patch_labels"][pairs[:, 0]].astype(np.int64),
        "class_names": np.array(PATCH_CLASSES),
        "patches": patches.astype(np.uint8),
        "ids": np.array([f"bank-{i:04d}" for i in range(len(pairs))]),
        "description": np.array(f"{len(pairs)} patches of synthetic paired phantoms "
                                f"(synthetic.phantoms.paired, train split, seed {seed}); similar "
                                "examples, not this patient's pathology. " + NOT_FOR_CLINICAL_USE),
    }


def write_bank(bank: dict[str, np.ndarray], path: Path) -> Path:
    np.savez_compressed(path, **bank)
    return path


def model_card(out_dir: Path, metrics: dict, extra: dict, training_data: str, dim: int) -> ModelCard:
    """The card of the shipped files in ``out_dir`` (hashes computed from the files as written)."""
    onnx_path, bank_path = out_dir / ONNX_NAME, out_dir / BANK_NAME
    return ModelCard(
        name=MODEL_NAME,
        version=MODEL_VERSION,
        task="Mammography-pathology alignment: embeds a mammography lesion crop into a space shared "
             "with pathology patches, to show the most similar patches of a reference bank as "
             "supporting examples (never as this patient's pathology); a 4-class head on the crop "
             "is kept for evaluation.",
        intended_use="Research and integration testing of the breast-cancer decision-support plugin; "
                     "not a medical device. " + NOT_FOR_CLINICAL_USE,
        training_data=training_data,
        synthetic_trained=True,
        notice=NOT_FOR_CLINICAL_USE,
        architecture="Shared 3-block CNN backbone (convolutions shared, batch norm per modality), "
                     "modality stems (crop: 1 channel; H&E patch: RGB) and residual bottleneck "
                     f"adapters, shared projection head to a {dim}-d L2-normalised embedding, task "
                     "heads (4 mammography classes, 3 patch classes). Loss: task cross-entropies + "
                     "lambda * symmetric InfoNCE over same-patient (crop, patch) pairs (+ IRMv1 "
                     "across vendors and MixStyle in the arms that use them). Only the mammography "
                     "branch is exported.",
        inputs={"crop": {"shape": ["n", 1, CROP, CROP], "dtype": "float32",
                         "preprocessing": "models.crossmodal.crop.lesion_crop of "
                                          "models.mammography.preprocess.prepare_image, centred by "
                                          "models.crossmodal.crop.lesion_centre"}},
        outputs={"embedding": {"shape": ["n", dim], "l2_normalised": True},
                 "class_logits": {"classes": list(MAMMO_CLASSES)},
                 "reference_bank": {"file": BANK_NAME, "classes": list(PATCH_CLASSES),
                                    "similarity": "cosine (dot product of normalised embeddings)"}},
        metrics=finite(metrics),
        extra=finite(extra),
        weights_sha256={onnx_path.name: sha256_file(onnx_path), bank_path.name: sha256_file(bank_path)},
    )
