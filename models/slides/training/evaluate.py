"""Evaluation of the slide model through the runtime path (ONNX), calibration and re-testing.

Calibration and test slides come from disjoint seed ranges and never touch training.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from cds.contracts.cards import ModelCard
from models.slides.analysis import SlideAnalysisRaw, StageParams, analyze_slide
from models.slides.calibrate import apply_map
from models.slides.onnx_nets import OnnxTileNets
from models.slides.reader import open_slide
from models.slides.training.calibrate import fit_map, fit_thresholds
from models.slides.training.data import _generate, _split_plan, _tile_tumour_fraction, split_sizes
from models.training import calibration as cal

TOP_K = 5


def evaluate_truths(truths: list, nets, params: StageParams, mode: str = "two_stage") -> list[dict]:
    """Run the slide analysis on generated slides; per slide: score, label, top-K hit rate, timing."""
    rows = []
    for tr in truths:
        t0 = time.perf_counter()
        with open_slide(tr.level_paths) as rd:
            raw: SlideAnalysisRaw = analyze_slide(rd, nets, params, mode=mode)  # type: ignore[arg-type]
            total_tiles = rd.grid[0] * rd.grid[1]
            tile = rd.base.tile_rows
        secs = time.perf_counter() - t0
        mask = np.load(tr.tumour_mask_path)
        frac = _tile_tumour_fraction(mask, tr.mask_downsample, tile, raw.stage2_tiles)
        top = np.argsort(-raw.attention)[:TOP_K]
        rows.append(
            {
                "seed": tr.seed,
                "label": int(tr.has_metastasis),
                "occult": bool(tr.occult),
                "raw_probability": raw.raw_probability,
                "logit": raw.slide_logit,
                "topk_in_tumour": float((frac[top] > 0).mean()) if tr.has_metastasis and len(top) else None,
                "stage2_in_tumour_any": bool((frac > 0).any()),
                "base_tiles_read": raw.base_tiles_read,
                "base_tiles_total": total_tiles,
                "seconds": secs,
                "timings": raw.timings,
            }
        )
    return rows


def _metrics(rows: list[dict], calmap: dict, thresholds: dict[str, float]) -> dict:
    y = np.array([r["label"] for r in rows])
    logit = np.array([r["logit"] for r in rows])
    raw = np.array([r["raw_probability"] for r in rows])
    calp = apply_map(calmap, logit)
    out: dict = {
        "n_slides": len(rows),
        "n_positive": int(y.sum()),
        "n_occult": int(sum(r["occult"] for r in rows)),
        "slide_auc": float(roc_auc_score(y, raw)) if len(set(y)) == 2 else None,
        "slide_auc_calibrated": float(roc_auc_score(y, calp)) if len(set(y)) == 2 else None,
        "ece_before": cal.expected_calibration_error(raw, y, n_bins=10),
        "ece_after": cal.expected_calibration_error(calp, y, n_bins=10),
    }
    hits = [r["topk_in_tumour"] for r in rows if r["topk_in_tumour"] is not None]
    out["topk_in_tumour_fraction"] = float(np.mean(hits)) if hits else None
    for name, thr in thresholds.items():
        pred = calp >= thr
        out[f"sensitivity@{name}"] = float(pred[y == 1].mean()) if (y == 1).any() else None
        out[f"specificity@{name}"] = float((~pred[y == 0]).mean()) if (y == 0).any() else None
        occ = np.array([r["occult"] for r in rows])
        out[f"occult_sensitivity@{name}"] = float(pred[occ].mean()) if occ.any() else None
    out["median_seconds_per_slide"] = float(np.median([r["seconds"] for r in rows]))
    out["median_base_tiles_read"] = float(np.median([r["base_tiles_read"] for r in rows]))
    out["median_base_tiles_total"] = float(np.median([r["base_tiles_total"] for r in rows]))
    return out


def _calibrate_and_test(onets, params: StageParams, seed: int, n_cal: int, n_test: int, cal_size: int,
                        eval_size: int, work: Path, progress: bool):
    """Fit the calibration map and thresholds on calibration phantoms; evaluate on test phantoms."""
    cal_truths = _generate(_split_plan(seed, n_cal, 10_000), work / "cal", cal_size, progress, "phantoms (calibration)")
    cal_rows = evaluate_truths(cal_truths, onets, params)
    y_cal = np.array([r["label"] for r in cal_rows])
    logit_cal = np.array([r["logit"] for r in cal_rows])
    calmap = fit_map(logit_cal, y_cal, seed)
    thresholds = fit_thresholds(logit_cal, y_cal, calmap)
    for tr in cal_truths:
        shutil.rmtree(tr.level_paths[0].parent, ignore_errors=True)
    test_truths = _generate(_split_plan(seed, n_test, 20_000), work / "test", eval_size, progress, "phantoms (test)")
    test_rows = evaluate_truths(test_truths, onets, params)
    return cal_rows, test_rows, calmap, thresholds


def recalibrate(out_dir: Path, seed: int = 0, n_slides: int = 200, progress: bool = True, *,
                cal_size: int = 2048, eval_size: int = 2048) -> ModelCard:
    """Refit calibration and thresholds of already-trained weights in ``out_dir`` and re-test them.

    Uses the same seeded calibration and test phantoms as :func:`train_synthetic`
    (:func:`split_sizes` of ``n_slides``); the training metrics in the card are kept.
    """
    out_dir = Path(out_dir)
    card = ModelCard.read(out_dir / "card.json")
    sp = card.extra.get("stage_params", {})
    params = StageParams(**sp) if sp else StageParams()
    _, n_cal, n_test = split_sizes(n_slides)
    onets = OnnxTileNets.load(out_dir)
    work = Path(tempfile.mkdtemp(prefix="slides-recal-"))
    try:
        cal_rows, test_rows, calmap, thresholds = _calibrate_and_test(onets, params, seed, n_cal, n_test, cal_size, eval_size, work, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    card.metrics["test"] = _metrics(test_rows, calmap, thresholds)
    card.metrics["calibration_set"] = _metrics(cal_rows, calmap, thresholds)
    card.calibration = calmap
    card.thresholds = thresholds
    card.extra["test_slides"] = test_rows
    card.write(out_dir / "card.json")
    return card
