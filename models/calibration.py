"""Post-hoc calibration and operating thresholds, fitted on held-out data.

A network's softmax outputs are usually over-confident; clinicians act on probabilities and on a
yes/no at a threshold, so both must be fitted on data the network did not train on and stored in
the model card. Everything here is plain numpy/scipy/scikit-learn (no torch) so that runtimes and
card tooling can import it.

* multi-class: temperature scaling (one scalar ``T``, minimises held-out NLL);
* binary: Platt scaling (logistic on the score) or isotonic regression (stored as breakpoints so
  the card stays JSON);
* ECE: equal-width bins, binary (probability of the positive class) or top-label for multi-class;
* thresholds: Youden's J on the ROC curve, and the highest threshold reaching a target sensitivity.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve


def _as_labels(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels).astype(int).ravel()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature ``T`` > 0 minimising the negative log-likelihood of ``softmax(logits / T)``.

    ``logits`` is (n, k) for k classes, or (n,) binary logits (then a sigmoid is used).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = _as_labels(labels)
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"logits ({z.shape[0]}) and labels ({y.shape[0]}) differ in length")

    if z.ndim == 1:
        def nll(log_t: float) -> float:
            p = np.clip(expit(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    else:
        def nll(log_t: float) -> float:
            return float(-np.mean(log_softmax(z / np.exp(log_t), axis=1)[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def apply_temperature(logits: np.ndarray, T: float) -> np.ndarray:
    """Calibrated probabilities: softmax over the last axis, or a sigmoid for 1-D logits."""
    z = np.asarray(logits, dtype=np.float64) / float(T)
    return expit(z) if z.ndim == 1 else softmax(z, axis=-1)


def fit_platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``p = sigmoid(a * score + b)`` fitted by (almost unregularised) logistic NLL."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    y = _as_labels(labels)
    if len(np.unique(y)) < 2:
        raise ValueError("Platt scaling needs both classes in the calibration labels")
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(s, y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def apply_platt(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    return expit(a * np.asarray(scores, dtype=np.float64) + b)


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Isotonic regression as a JSON-friendly table ``{"x": [...], "y": [...]}`` (interpolated)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = _as_labels(labels)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


def apply_isotonic(scores: np.ndarray, table: dict) -> np.ndarray:
    x, y = np.asarray(table["x"], float), np.asarray(table["y"], float)
    if x.size == 0:
        raise ValueError("isotonic table is empty")
    return np.interp(np.asarray(scores, dtype=np.float64), x, y)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width bins.

    1-D ``probs`` are P(positive) of a binary problem (ECE over the positive-class probability);
    (n, k) ``probs`` use the top-label confidence against top-label correctness.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = _as_labels(labels)
    if p.ndim == 1:
        conf, hit = p, y.astype(float)
    else:
        conf = p.max(axis=1)
        hit = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(conf[sel].mean() - hit[sel].mean())
    return float(ece)


def youden_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 on the ROC curve."""
    y = _as_labels(labels)
    if len(np.unique(y)) < 2:
        raise ValueError("Youden's threshold needs both classes")
    fpr, tpr, thr = roc_curve(y, np.asarray(probs, dtype=np.float64))
    j = tpr - fpr
    best = int(np.argmax(j[1:]) + 1)  # skip the artificial +inf threshold
    return float(np.clip(thr[best], 0.0, 1.0))


def threshold_at_sensitivity(probs: np.ndarray, labels: np.ndarray, target: float = 0.9) -> float:
    """The highest threshold whose sensitivity on these data is at least ``target``."""
    y = _as_labels(labels)
    p = np.asarray(probs, dtype=np.float64)
    pos = np.sort(p[y == 1])[::-1]
    if pos.size == 0:
        raise ValueError("threshold at sensitivity needs positive examples")
    k = int(np.ceil(target * pos.size)) - 1
    return float(np.clip(pos[max(k, 0)], 0.0, 1.0))
