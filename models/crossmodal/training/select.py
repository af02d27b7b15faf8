"""Hyper-parameter choice on the CALIBRATION split only (the test split is scored once, by lovo/train).

Run as ``python -m models.crossmodal.training.select`` (minutes on one core); it prints JSON lines
that the CHANGELOG records. The chosen values are then fixed as the defaults of
:class:`~models.crossmodal.training.loop.ArmConfig` and in :mod:`~models.crossmodal.training.lovo`.

* alignment (lambda, tau): trained on every vendor's train patients, scored on calibration
  patients: top-1 class retrieval against a bank of the train patients' patches (what the shipped
  model is for), with malignancy AUC watched so the alignment does not cost the task;
* IRM weight and TTA alpha: leave-one-vendor-out on the held-out vendor's calibration patients,
  mean AUC over the four vendors.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from models.crossmodal.training.data import Arrays, crops_to_input, load_or_render, patches_to_input, subset
from models.crossmodal.training.loop import (
    ArmConfig,
    embed,
    malignancy_scores,
    pair_cosines,
    retrieval,
    train_arm,
)
from models.crossmodal.training.net import CrossModalNet

ALIGN_GRID = ((0.0, 0.1), (0.5, 0.1), (1.0, 0.1), (1.0, 0.05), (1.0, 0.2), (2.0, 0.1))
IRM_GRID = (0.1, 1.0, 10.0)
TTA_GRID = (0.5, 1.0)


def bank_retrieval(net: CrossModalNet, bank_data: Arrays, query: Arrays) -> dict:
    """Class retrieval of ``query`` lesion crops against all patches of ``bank_data``'s lesion patients."""
    les_b, les_q = bank_data["patch_labels"] >= 0, query["patch_labels"] >= 0
    p = bank_data["patches"][les_b]
    bz, _ = embed(net, patches_to_input(p.reshape(-1, *p.shape[2:])), "path")
    bc = np.repeat(bank_data["patch_labels"][les_b], p.shape[1])
    qz, _ = embed(net, crops_to_input(query["crops"][les_q]), "mammo")
    return retrieval(qz, query["patch_labels"][les_q], bz, bc)


def select_alignment(data: Arrays, base: ArmConfig) -> list[dict]:
    train, cal = subset(data, ("train",)), subset(data, ("calibration",))
    out = []
    for lam, tau in ALIGN_GRID:
        net, info = train_arm(train, replace(base, align=lam, tau=tau))
        row = {"stage": "align", "lambda": lam, "tau": tau, "seconds": info["seconds"],
               **{f"cal_{k}": v for k, v in malignancy_scores(net, cal).items()},
               **{f"retrieval_{k}": v for k, v in bank_retrieval(net, train, cal).items()},
               **pair_cosines(net, cal)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _lovo_cal(data: Arrays, base: ArmConfig, arms: dict) -> list[dict]:
    """LOVO on calibration patients, TTA scored at every alpha of TTA_GRID (one training each)."""
    from models.crossmodal.training.lovo import VENDOR_NAMES

    out = []
    for vendor in VENDOR_NAMES:
        others = tuple(v for v in VENDOR_NAMES if v != vendor)
        train, held = subset(data, ("train",), others), subset(data, ("calibration",), (vendor,))
        for arm, over in arms.items():
            net, info = train_arm(train, replace(base, align=0.0, **over))
            row = {"stage": "irm_tta", "arm": arm, "vendor": vendor, "seconds": info["seconds"],
                   "plain": malignancy_scores(net, held)}
            for alpha in TTA_GRID:
                row[f"tta{alpha:g}"] = malignancy_scores(net, held, alpha)
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    n = int(argv[1]) if len(argv) > 1 else 960
    data = load_or_render(Path(__file__).resolve().parents[1] / "weights" / "cache", n, 0)
    base = ArmConfig()
    stages = argv[2].split(",") if len(argv) > 2 else ["align", "irm"]
    if "align" in stages:
        select_alignment(data, base)
    if "irm" in stages:
        _lovo_cal(data, base, {f"irm{w:g}": {"mixstyle": False, "irm_weight": w} for w in (0.0, *IRM_GRID)})


if __name__ == "__main__":
    main(sys.argv)
