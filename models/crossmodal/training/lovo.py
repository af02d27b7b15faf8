"""Leave-one-vendor-out experiments: does alignment, MixStyle, IRM or TTA help on an unseen vendor?

For each held-out vendor the model trains on the other three vendors' TRAIN patients; it is scored
on the held-out vendor's patients outside the calibration split (train and test splits: none of
them is seen by a LOVO model, and the calibration split was spent on choosing hyper-parameters,
see :mod:`models.crossmodal.training.select`). Arms: baseline / MixStyle / IRM / MixStyle+IRM, each
with the alignment term (lambda > 0) and without (lambda = 0), same seeds, epochs and data order;
each scored with and without test-time adaptation (normalization statistics blended with the
held-out vendor's batch at ``TTA_ALPHA``). Metrics: AUC of P(in situ) + P(invasive) for malignant
vs not, binary 15-bin ECE of the same probability, and the intra-pair / non-pair cosines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from models.crossmodal.training.data import Arrays, subset
from models.crossmodal.training.loop import ArmConfig, malignancy_scores, pair_cosines, train_arm
from models.crossmodal.training.net import CrossModalNet

VENDOR_NAMES = ("alpha", "bravo", "charlie", "delta")
TTA_ALPHA = 1.0  # chosen on calibration (0.5 vs 1.0, see CHANGELOG): full AdaBN
IRM_WEIGHT = 0.1  # chosen on calibration from 0.1, 1, 10 (see CHANGELOG)
ARMS: dict[str, dict] = {
    "baseline": {"mixstyle": False, "irm_weight": 0.0},
    "mixstyle": {"mixstyle": True, "irm_weight": 0.0},
    "irm": {"mixstyle": False, "irm_weight": IRM_WEIGHT},
    "mixstyle+irm": {"mixstyle": True, "irm_weight": IRM_WEIGHT},
}
EVAL_SPLITS = ("train", "test")


def score_arm(net: CrossModalNet, evaluation: Arrays, tta_alpha: float = TTA_ALPHA) -> dict:
    """Plain and TTA malignancy scores plus cosines of one trained network on one vendor's set."""
    return {"plain": malignancy_scores(net, evaluation), "tta": malignancy_scores(net, evaluation, tta_alpha),
            "cosine": pair_cosines(net, evaluation)}


def lovo_rows(data: Arrays, base: ArmConfig, seeds: tuple[int, ...] = (0,),
              vendors: tuple[str, ...] = VENDOR_NAMES, arms: dict[str, dict] | None = None,
              eval_splits: tuple[str, ...] = EVAL_SPLITS,
              progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (held-out vendor, arm, alignment on/off, seed, TTA on/off)."""
    rows: list[dict] = []
    for vendor in vendors:
        others = tuple(v for v in VENDOR_NAMES if v != vendor)
        train, held = subset(data, ("train",), others), subset(data, eval_splits, (vendor,))
        for arm, over in (arms or ARMS).items():
            for aligned in (False, True):
                for seed in seeds:
                    cfg = replace(base, align=base.align if aligned else 0.0, seed=seed, **over)
                    t0 = time.monotonic()
                    net, _ = train_arm(train, cfg)
                    s = score_arm(net, held)
                    for tta in ("plain", "tta"):
                        rows.append({"vendor": vendor, "arm": arm, "aligned": aligned, "seed": seed,
                                     "tta": tta == "tta", **s[tta],
                                     "intra_pair_cosine": s["cosine"]["intra_pair_cosine"],
                                     "non_pair_cosine": s["cosine"]["non_pair_cosine"]})
                    if progress:
                        progress(f"lovo {vendor} {arm} aligned={aligned} seed={seed}: auc "
                                 f"{s['plain']['auc']:.3f} / tta {s['tta']['auc']:.3f} "
                                 f"({time.monotonic() - t0:.0f} s)")
    return rows


def _mean_sd(values: list[float]) -> dict:
    a = np.asarray(values, float)
    return {"mean": round(float(np.nanmean(a)), 4), "sd": round(float(np.nanstd(a, ddof=1)), 4) if len(a) > 1 else None,
            "n": int(len(a))}


def summarize(rows: list[dict]) -> dict:
    """Table: arm -> "aligned"/"unaligned" -> "plain"/"tta" -> per-vendor AUC/ECE (mean over seeds)
    and "mean" over vendors (with the seed-to-seed sd of the vendor-mean when seeds > 1)."""
    table: dict = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        for aligned in (False, True):
            for tta in (False, True):
                sel = [r for r in rows if r["arm"] == arm and r["aligned"] == aligned and r["tta"] == tta]
                if not sel:
                    continue
                cell: dict = {}
                vendors = list(dict.fromkeys(r["vendor"] for r in sel))
                for v in vendors:
                    cell[v] = {m: round(float(np.mean([r[m] for r in sel if r["vendor"] == v])), 4)
                               for m in ("auc", "ece")}
                seeds = sorted({r["seed"] for r in sel})
                cell["mean"] = {m: _mean_sd([float(np.mean([r[m] for r in sel if r["seed"] == s]))
                                             for s in seeds]) for m in ("auc", "ece")}
                cell["intra_pair_cosine"] = round(float(np.mean([r["intra_pair_cosine"] for r in sel])), 4)
                cell["non_pair_cosine"] = round(float(np.mean([r["non_pair_cosine"] for r in sel])), 4)
                table.setdefault(arm, {}).setdefault("aligned" if aligned else "unaligned", {})[
                    "tta" if tta else "plain"] = cell
    return table


def markdown(table: dict) -> str:
    """The summary as a Markdown table (for the CHANGELOG and the report)."""
    vendors = [k for k in next(iter(next(iter(table.values())).values()))["plain"] if k in VENDOR_NAMES]
    head = "| arm | align | TTA | " + " | ".join(f"{v} AUC / ECE" for v in vendors) + " | mean AUC | mean ECE |"
    lines = [head, "|" + "---|" * (len(vendors) + 5)]
    for arm, by_align in table.items():
        for aligned, by_tta in by_align.items():
            for tta, cell in by_tta.items():
                per = " | ".join(f"{cell[v]['auc']:.3f} / {cell[v]['ece']:.3f}" for v in vendors)
                m = cell["mean"]
                sd = lambda d: f" ± {d['sd']:.3f}" if d["sd"] is not None else ""  # noqa: E731
                lines.append(f"| {arm} | {'yes' if aligned == 'aligned' else 'no'} | {'yes' if tta == 'tta' else 'no'} "
                             f"| {per} | {m['auc']['mean']:.3f}{sd(m['auc'])} | {m['ece']['mean']:.3f}{sd(m['ece'])} |")
    return "\n".join(lines)
