"""Regenerate the shipped cross-modal model from paired phantoms (CPU, one thread), for ``cds train synthetic``.

:func:`train_synthetic` renders (or loads from ``out_dir/cache``) the paired phantoms, trains the
shipped arm on every vendor's TRAIN patients, and an otherwise identical lambda = 0 twin (the
"before alignment" network for the cosine comparison), exports the mammography branch to ONNX
with a torch/onnxruntime parity check, builds the reference bank from TRAIN patients' patches,
scores retrieval and malignancy on TEST patients (once), runs the leave-one-vendor-out grid
(:mod:`models.crossmodal.training.lovo`) and writes ``card.json``. Hyper-parameters were chosen on
the calibration split (:mod:`models.crossmodal.training.select`, numbers in the CHANGELOG).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from cds.contracts.cards import ModelCard
from cds.contracts.domain import NOT_FOR_CLINICAL_USE
from models.crossmodal.training.data import crops_to_input, load_or_render, subset
from models.crossmodal.training.export import (
    BANK_NAME,
    CARD_NAME,
    ONNX_NAME,
    build_bank,
    export_onnx,
    model_card,
    onnx_parity,
    write_bank,
)
from models.crossmodal.training.loop import (
    ArmConfig,
    embed,
    malignancy_scores,
    pair_cosines,
    retrieval,
    train_arm,
)
from models.crossmodal.training.lovo import ARMS, TTA_ALPHA, lovo_rows, markdown, summarize
from models.crossmodal.training.net import CrossModalNet

N_PATIENTS = 960  # 240 per vendor: 120 train, 60 calibration, 60 test; 1 in 4 normal
SHIPPED_ARM = "baseline"  # chosen on calibration (CHANGELOG)
SHIPPED = ArmConfig(align=1.0, tau=0.1)  # lambda, tau chosen on calibration (CHANGELOG)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[crossmodal] {msg}", flush=True)


def _test_figures(net: CrossModalNet, twin: CrossModalNet, bank: dict, test: dict) -> dict:
    """Everything scored on TEST patients: malignancy (plain/TTA), cosines before/after, retrieval."""
    les = test["patch_labels"] >= 0
    qz, _ = embed(net, crops_to_input(test["crops"][les]), "mammo")
    return {
        "test_malignancy": malignancy_scores(net, test),
        "test_malignancy_tta": malignancy_scores(net, test, TTA_ALPHA),
        "test_malignancy_unaligned_twin": malignancy_scores(twin, test),
        "cosine_after_alignment": pair_cosines(net, test),
        "cosine_before_alignment": pair_cosines(twin, test),
        "retrieval_test": retrieval(qz, test["patch_labels"][les], bank["embeddings"], bank["labels"]),
    }


def _onnx_retrieval(path: Path, bank: dict, test: dict) -> dict:
    """The same retrieval through onnxruntime (what the runtime will do)."""
    import onnxruntime as ort

    les = test["patch_labels"] >= 0
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = sess.run(["embedding"], {"crop": crops_to_input(test["crops"][les])})[0]
    return retrieval(z, test["patch_labels"][les], bank["embeddings"], bank["labels"])


def train_synthetic(out_dir: Path, seed: int = 0, progress: bool = True, n_patients: int = N_PATIENTS,
                    epochs: int | None = None, lovo: bool = True, lovo_seeds: tuple[int, ...] = (0,)) -> ModelCard:
    """Render, train, export, evaluate; ``out_dir`` gets mammo_encoder.onnx, reference_bank.npz, card.json."""
    torch.set_num_threads(1)
    t_start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_or_render(out_dir / "cache", n_patients, seed)
    _say(progress, f"{n_patients} paired phantoms ready ({time.monotonic() - t_start:.0f} s)")
    cfg = replace(SHIPPED, seed=seed, **ARMS[SHIPPED_ARM], **({"epochs": epochs} if epochs else {}))
    train, test = subset(data, ("train",)), subset(data, ("test",))
    net, info = train_arm(train, cfg)
    twin, twin_info = train_arm(train, replace(cfg, align=0.0))
    _say(progress, f"shipped arm trained in {info['seconds']:.0f} s (twin {twin_info['seconds']:.0f} s)")
    bank = build_bank(net, train, seed)
    write_bank(bank, out_dir / BANK_NAME)
    onnx_path = export_onnx(net, out_dir / ONNX_NAME)
    parity = onnx_parity(net, onnx_path, crops_to_input(test["crops"][:64]))
    figures = _test_figures(net, twin, bank, test)
    figures["retrieval_test_onnx"] = _onnx_retrieval(onnx_path, bank, test)
    _say(progress, f"test retrieval top-1 {figures['retrieval_test']['top1']:.3f} vs chance "
                   f"{figures['retrieval_test']['chance']:.3f}; parity {max(parity.values()):.2e}")
    t_lovo = time.monotonic()
    rows = lovo_rows(data, replace(SHIPPED, **({"epochs": epochs} if epochs else {})), seeds=lovo_seeds,
                     progress=(lambda m: _say(progress, m))) if lovo else []
    table = summarize(rows) if rows else {}
    extra = {"onnx_parity_max_abs_diff": parity, "tta_alpha_evaluated": TTA_ALPHA,
             "training": {"config": cfg.as_dict(), "arm": SHIPPED_ARM, **info, "seed": seed,
                          "n_patients": n_patients, "lovo_seconds": round(time.monotonic() - t_lovo, 1),
                          "total_seconds": round(time.monotonic() - t_start, 1)},
             "lovo_rows": rows, "lovo_markdown": markdown(table) if table else "",
             "bank": {"size": int(len(bank["labels"])), "class_counts": {
                 str(c): int((bank["labels"] == i).sum()) for i, c in enumerate(bank["class_names"])}}}
    desc = (f"{n_patients} synthetic paired patients (synthetic.phantoms.paired, seed {seed}; 4 simulated "
            "vendors; 1 in 4 normal, the rest benign / in situ / invasive with grade, cellularity and "
            "ER status shared by one mammography lesion crop and 4 H&E-like 48x48 patches), split "
            f"2:1:1 by patient into train / calibration / test. {NOT_FOR_CLINICAL_USE}")
    metrics = {**figures, "lovo": table,
               "lovo_protocol": "train: other vendors' train patients; score: held-out vendor's train+test "
                                "patients (calibration patients were used to choose hyper-parameters)"}
    card = model_card(out_dir, metrics, extra, desc, net.dim)
    card.write(out_dir / CARD_NAME)
    _say(progress, f"done in {time.monotonic() - t_start:.0f} s")
    return card


def extend_lovo(out_dir: Path, seeds: tuple[int, ...], progress: bool = True) -> ModelCard:
    """Add LOVO seeds to a written card (the shipped files are untouched): the grid for one seed
    takes ~10 minutes, so :func:`train_synthetic` runs one and this adds more, for mean +- sd."""
    out_dir = Path(out_dir)
    card = ModelCard.read(out_dir / CARD_NAME)
    n, seed = card.extra["training"]["n_patients"], card.extra["training"]["seed"]
    data = load_or_render(out_dir / "cache", n, seed)
    have = {r["seed"] for r in card.extra["lovo_rows"]}
    epochs = card.extra["training"]["config"]["epochs"]
    rows = card.extra["lovo_rows"] + lovo_rows(
        data, replace(SHIPPED, epochs=epochs), seeds=tuple(s for s in seeds if s not in have),
        progress=(lambda m: _say(progress, m)))
    table = summarize(rows)
    card.extra.update({"lovo_rows": rows, "lovo_markdown": markdown(table)})
    card.metrics["lovo"] = table
    card.write(out_dir / CARD_NAME)
    return card


def main() -> None:
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "weights"
    if len(sys.argv) > 2:  # e.g. "1,2": extra LOVO seeds for an existing card
        extend_lovo(out, tuple(int(s) for s in sys.argv[2].split(",")))
        return
    card = train_synthetic(out)
    print(card.metrics.get("retrieval_test"), np.round(card.extra["onnx_parity_max_abs_diff"]["embedding"], 8))


if __name__ == "__main__":
    main()
