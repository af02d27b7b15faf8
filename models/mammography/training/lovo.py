"""Leave-one-vendor-out (LOVO): MixStyle against none, at equal epochs, per held-out vendor."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from models.mammography.training.config import TrainConfig
from models.mammography.training.data import MammoArrays
from models.mammography.training.evaluate import _auc, _is_malignant, malignancy
from models.mammography.training.loop import _fit_job


def lovo_jobs(data: MammoArrays, cfg: TrainConfig, ckpt_dir: Path, progress: bool,
              resume: bool) -> tuple[list, list[tuple[str, bool, np.ndarray]]]:
    """Leave-one-vendor-out jobs: for each vendor, train on the OTHER vendors' training split
    with and without MixStyle (same epochs, same seed, same data order) and score the held-out
    vendor's calibration + test images. Returns the jobs and (vendor, mixstyle, eval mask) rows."""
    jobs, rows = [], []
    for v in sorted(set(data.vendor.tolist())):
        tr = (data.split == "train") & (data.vendor != v)
        te = (data.split != "train") & (data.vendor == v)
        if not tr.any() or not te.any():
            continue
        for ms in (True, False):
            c = TrainConfig(**{**asdict(cfg), "mixstyle": ms})
            tag = f"lovo_{v}_{'mixstyle' if ms else 'plain'}"
            jobs.append((tag, lambda tr=tr, te=te, c=c, tag=tag: _fit_job(
                data, tr, c, ckpt_dir / f"checkpoint_{_safe(tag)}.pt", resume, tag, progress, te)))
            rows.append((v, ms, te))
    return jobs, rows


def lovo_table(data: MammoArrays, rows: list[tuple[str, bool, np.ndarray]], results: list[dict],
               epochs: int) -> dict:
    """Malignant-vs-not AUC per held-out vendor, with and without MixStyle, and their means."""
    from scipy.special import softmax

    vendors = sorted(set(data.vendor.tolist()))
    res: dict = {"per_vendor": {v: {} for v in vendors}, "epochs": epochs,
                 "protocol": "train on the other vendors' training split, test on the held-out "
                             "vendor's calibration+test images; same epochs, seed and data order "
                             "with and without MixStyle; malignant-vs-not AUC"}
    for (v, ms, te), r in zip(rows, results):
        auc = _auc(_is_malignant(data.y[te]), malignancy(softmax(r["logits"], axis=1)))
        res["per_vendor"][v]["mixstyle" if ms else "no_mixstyle"] = auc
        res["per_vendor"][v]["n_images"] = int(te.sum())
    for k in ("mixstyle", "no_mixstyle"):
        vals = [r[k] for r in res["per_vendor"].values() if k in r and np.isfinite(r[k])]
        res[f"mean_auc_{k}"] = float(np.mean(vals)) if vals else float("nan")
    if len(vendors) < 2:
        res["skipped"] = "fewer than two vendors in the data"
    return res


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)
