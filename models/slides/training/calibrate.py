"""Fitting the slide score's calibration map and operating thresholds (training only).

The map is Platt scaling or isotonic regression (:mod:`models.training.calibration`), whichever has
the lower cross-validated Brier score on the held-out calibration slides; it is stored in the card
as JSON and applied by :func:`models.slides.calibrate.apply_map`.

Both maps are fitted against Platt's regularised targets (``(N+ + 1)/(N+ + 2)`` and
``1/(N- + 2)``), not 0/1. Phantom calibration sets are often perfectly separable, and an
unregularised Platt fit then takes an unbounded slope and reports certainties the set cannot
support. With the regularised targets a calibration set of N slides can claim at most about
``1 - 1/(N + 2)`` certainty: the Platt map's output is clipped to
``[1/(N- + 2), (N+ + 1)/(N+ + 2)]`` (a sigmoid's tails would otherwise run past it for scores
beyond the calibration range) and its slope is bounded (:data:`MAX_SLOPE`) as a guard against a
degenerate score distribution.

Thresholds: on perfectly separable slides Youden's index (or the highest threshold reaching 90 %
sensitivity) lands exactly on the lowest positive score, so a positive scoring a hair lower would
be missed. Each threshold is therefore moved to the midpoint, in logit space, between that score
and the next lower calibration score, which keeps the same calibration-set sensitivity and
specificity with a margin on both sides.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.slides.calibrate import apply_map
from models.training import calibration as cal

MAX_SLOPE = 5.0  # bound on |a| of the Platt map, per unit of slide logit


def _fit(method: str, logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if method == "platt":
        a, b = cal.fit_platt(logits, y, regularised=True, max_slope=MAX_SLOPE)
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        return {"method": "platt", "input": "slide logit", "targets": "platt-regularised", "a": a, "b": b,
                "p_min": 1.0 / (n_neg + 2.0), "p_max": (n_pos + 1.0) / (n_pos + 2.0)}
    table = cal.fit_isotonic(logits, y, regularised=True)
    return {"method": "isotonic", "input": "slide logit", "targets": "platt-regularised", "x": table["x"], "y": table["y"]}


def fit_map(logits: np.ndarray, labels: np.ndarray, seed: int = 0, folds: int = 4) -> dict[str, Any]:
    """Choose Platt or isotonic by stratified k-fold Brier score, then refit it on all slides."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), int)
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % folds
    scores: dict[str, float] = {}
    for method in ("platt", "isotonic"):
        pred = np.zeros(len(y))
        ok = True
        for f in range(folds):
            tr, te = fold != f, fold == f
            if len(set(y[tr])) < 2 or not te.any():
                ok = False
                break
            pred[te] = apply_map(_fit(method, x[tr], y[tr]), x[te])
        if ok:
            scores[method] = float(np.mean((pred - y) ** 2))
    best = min(scores, key=scores.__getitem__) if scores else "platt"
    out = _fit(best, x, y)
    out["cv_brier"] = scores
    return out


def _midpoint(logits: np.ndarray, probs: np.ndarray, thr: float, calmap: dict[str, Any]) -> float:
    above = logits[probs >= thr]
    below = logits[probs < thr]
    if above.size == 0 or below.size == 0:
        return float(thr)
    mid = 0.5 * (float(above.min()) + float(below.max()))
    p_mid = float(np.clip(apply_map(calmap, np.array([mid]))[0], 0.0, 1.0))
    # a flat stretch of the map would let the midpoint flip calibration-set decisions: keep thr then
    if p_mid <= float(probs[probs < thr].max()) or p_mid > thr:
        return float(thr)
    return p_mid


def fit_thresholds(logits: np.ndarray, labels: np.ndarray, calmap: dict[str, Any]) -> dict[str, float]:
    """Youden and 90 %-sensitivity thresholds on calibrated probabilities (midpoint rule above)."""
    x = np.asarray(logits, np.float64)
    y = np.asarray(labels).astype(int)
    p = apply_map(calmap, x)
    return {
        "youden": _midpoint(x, p, cal.youden_threshold(p, y), calmap),
        "sensitivity_0.9": _midpoint(x, p, cal.threshold_at_sensitivity(p, y, 0.9), calmap),
    }
