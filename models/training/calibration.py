"""Fitting of calibration maps and operating thresholds on held-out data (scikit-learn).

Clinicians act on probabilities and on a yes/no at a threshold, so both are fitted on data the
network did not train on and stored in the model card; :mod:`models.calibration` applies them.

* multi-class: temperature scaling (one scalar ``T``, minimises held-out NLL);
* binary: Platt scaling (logistic on the score) or isotonic regression (stored as breakpoints so
  the card stays JSON). Both optionally use Platt's (1999) regularised targets,
  ``(N+ + 1) / (N+ + 2)`` for positives and ``1 / (N- + 2)`` for negatives, instead of 1 and 0:
  when a calibration set is perfectly separable the unregularised fit runs off to an infinite slope
  and reports probabilities of exactly 0 or 1 that a set of that size cannot justify; the
  regularised targets are what a uniform prior on each class's error rate supports, so the
  probabilities stay finite and shrink towards certainty only as the calibration set grows;
* ECE: equal-width bins, binary (probability of the positive class) or top-label for multi-class;
* thresholds: Youden's J on the ROC curve, and the highest threshold reaching a target sensitivity.

The ``apply_*`` functions are re-exported from :mod:`models.calibration` for training code.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_softmax
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

from models.calibration import apply_isotonic, apply_platt, apply_temperature

__all__ = [
    "apply_isotonic", "apply_platt", "apply_temperature", "expected_calibration_error", "fit_isotonic",
    "fit_platt", "fit_temperature", "platt_targets", "threshold_at_sensitivity", "youden_threshold",
]


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


def platt_targets(labels: np.ndarray) -> np.ndarray:
    """Platt's regularised targets: ``(N+ + 1)/(N+ + 2)`` for positives, ``1/(N- + 2)`` for negatives."""
    y = _as_labels(labels)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    return np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


def fit_platt(
    scores: np.ndarray, labels: np.ndarray, *, regularised: bool = False, max_slope: float | None = None
) -> tuple[float, float]:
    """Platt scaling: ``p = sigmoid(a * score + b)``.

    By default an (almost unregularised) logistic NLL fit, as before. ``regularised=True`` fits
    cross-entropy against :func:`platt_targets` instead (finite even on separable data), and
    ``max_slope`` bounds ``|a|`` as a last guard against a degenerate score distribution.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = _as_labels(labels)
    if len(np.unique(y)) < 2:
        raise ValueError("Platt scaling needs both classes in the calibration labels")
    if not regularised and max_slope is None:
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(s.reshape(-1, 1), y)
        return float(lr.coef_[0, 0]), float(lr.intercept_[0])
    t = platt_targets(y) if regularised else y.astype(np.float64)
    centre, spread = float(s.mean()), float(s.std()) or 1.0
    z = (s - centre) / spread  # a well-conditioned problem; undone below

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        u = ab[0] * z + ab[1]
        # cross-entropy with soft targets, written stably: log(1 + e^u) - t * u
        val = np.logaddexp(0.0, u) - t * u
        g = expit(u) - t
        return float(val.mean()), np.array([float((g * z).mean()), float(g.mean())])

    bound = None if max_slope is None else float(max_slope) * spread
    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(-bound, bound) if bound is not None else (None, None), (None, None)])
    a_z, b_z = float(res.x[0]), float(res.x[1])
    return a_z / spread, b_z - a_z * centre / spread


def fit_isotonic(scores: np.ndarray, labels: np.ndarray, *, regularised: bool = False) -> dict:
    """Isotonic regression as a JSON-friendly table ``{"x": [...], "y": [...]}`` (interpolated).

    ``regularised=True`` regresses on :func:`platt_targets`, so the table never reaches 0 or 1.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = _as_labels(labels)
    target = platt_targets(y) if regularised else y
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, target)
    return {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]}


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
