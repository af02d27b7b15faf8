"""Fit a model's training domain and operating points, and write them into its card (training side).

* :func:`fit_density`: a Ledoit-Wolf shrinkage Gaussian of the standardised embeddings of the
  TRAINING split, kept in PCA form (top ``k`` axes plus the mean variance of the rest) so that the
  file beside the weights stays small; the runtime (:mod:`models.domain`) scores the Mahalanobis
  distance under it;
* :func:`fit_ranges`: acquisition ranges (training min/max widened by a margin, or set explicitly
  where the runtime's preprocessing makes a wider range equivalent);
* the threshold is the 99th percentile of the distance on the CALIBRATION split (held out, never
  used for fitting); the TEST split's false-flag rate is scored once and recorded;
* :func:`operating_points`: Youden, 90 % sensitivity and 90 % specificity thresholds on the
  calibration split with the sensitivity/specificity they reach on the test split.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

from cds.contracts.cards import ModelCard
from models.domain import DOMAIN_FILE, EmbeddingDensity
from models.training import calibration as cal
from models.training.files import sha256_file

QUANTILE = 99.0


def fit_density(features: np.ndarray, k: int = 32, transform: str = "none") -> EmbeddingDensity:
    """Shrinkage Gaussian of ``features`` (n, D), top ``k`` principal axes kept."""
    x = EmbeddingDensity(np.zeros(1), np.ones(1), np.zeros((0, 1)), np.zeros(0), 1.0, transform).prepare(features)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6 * max(float(scale.max()), 1e-12), scale, max(float(scale.max()), 1e-6))
    z = (x - mean) / scale
    cov = LedoitWolf(assume_centered=True).fit(z).covariance_
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    w, v = w[order], v[:, order]
    k = int(min(k, x.shape[1] - 1))
    tail = float(np.mean(w[k:])) if w[k:].size else float(w[-1])
    return EmbeddingDensity(mean=mean, scale=scale, components=v[:, :k].T, variances=np.maximum(w[:k], 1e-9),
                            tail_variance=max(tail, 1e-9), transform=transform)


def cv_false_flags(features: np.ndarray, calibration: np.ndarray, k: int, transform: str,
                   folds: int = 4) -> float:
    """Mean flag rate on held-out folds of the FIT set (threshold from the calibration split):
    chooses ``k`` and the transform without looking at the test split."""
    x = np.asarray(features)
    fold = np.arange(len(x)) % folds
    rates = []
    for f in range(folds):
        dens = fit_density(x[fold != f], k=k, transform=transform)
        thr = flag_threshold(dens.distance(calibration))
        rates.append(float(np.mean(dens.distance(x[fold == f]) > thr)))
    return float(np.mean(rates))


def flag_threshold(distances: np.ndarray, quantile: float = QUANTILE) -> float:
    return float(np.percentile(np.asarray(distances, np.float64), quantile))


def fit_ranges(values: list[dict[str, float | None]], units: dict[str, str], margin: float = 0.1,
               fixed: dict[str, tuple[float, float, str]] | None = None,
               labels: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per value: training min/max widened by ``margin`` of the range (or a fixed, explained range)."""
    fixed = fixed or {}
    out: dict[str, dict[str, Any]] = {}
    for name, unit in units.items():
        seen = np.array([v[name] for v in values if v.get(name) is not None], np.float64)
        if seen.size == 0:
            continue
        lo, hi = float(seen.min()), float(seen.max())
        entry: dict[str, Any] = {"unit": unit, "training": [round(lo, 6), round(hi, 6)]}
        if labels and name in labels:
            entry["label"] = labels[name]
        if name in fixed:
            entry["min"], entry["max"], entry["why"] = fixed[name]
        else:
            pad = margin * max(hi - lo, abs(hi), 1e-6)  # constant in training: a relative band
            entry["min"], entry["max"] = round(lo - pad, 6), round(hi + pad, 6)
        out[name] = entry
    return out


def threshold_at_specificity(probs: np.ndarray, labels: np.ndarray, target: float = 0.9) -> float:
    """The lowest threshold whose specificity on these data is at least ``target``."""
    p = np.asarray(probs, np.float64)
    neg = np.sort(p[np.asarray(labels).astype(int) == 0])
    if neg.size == 0:
        raise ValueError("threshold at specificity needs negative examples")
    k = int(np.ceil(target * neg.size)) - 1
    return float(np.clip(np.nextafter(neg[max(k, 0)], np.inf), 0.0, 1.0))


def rates(probs: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    p, y = np.asarray(probs, np.float64), np.asarray(labels).astype(int)
    pred = p >= threshold
    return float(pred[y == 1].mean()), float((~pred[y == 0]).mean())


def operating_points(cal_p: np.ndarray, cal_y: np.ndarray, test_p: np.ndarray, test_y: np.ndarray,
                     card_thresholds: dict[str, float], unit: str) -> dict[str, dict[str, Any]]:
    """Youden / 90 % sensitivity / 90 % specificity on the calibration split, with expected rates
    on the test split. Youden keeps the card's threshold (the model's own operating point, fitted
    on the same split when it was trained); the target points are fitted here on the
    probabilities the runtime computes, and must reach their target on calibration."""
    fitted = {"youden": cal.youden_threshold(cal_p, cal_y),
              "sensitivity_0.90": cal.threshold_at_sensitivity(cal_p, cal_y, 0.9),
              "specificity_0.90": threshold_at_specificity(cal_p, cal_y, 0.9)}
    aliases = {"youden": "youden", "sensitivity_0.90": "sensitivity_0.9", "specificity_0.90": "specificity_0.9"}
    out = {}
    for name, thr in fitted.items():
        if name == "youden":
            thr = float(card_thresholds.get(aliases[name], thr))
        sens, spec = rates(test_p, test_y, thr)
        cs, cp = rates(cal_p, cal_y, thr)
        if (name == "sensitivity_0.90" and cs < 0.9) or (name == "specificity_0.90" and cp < 0.9):
            raise ValueError(f"operating point {name} misses its target on calibration "
                             f"(sensitivity {cs:.3f}, specificity {cp:.3f} at {thr:.4f})")
        out[name] = {"threshold": thr, "expected_sensitivity": round(sens, 4),
                     "expected_specificity": round(spec, 4),
                     "calibration_sensitivity": round(cs, 4), "calibration_specificity": round(cp, 4),
                     "n_test": int(len(test_y)), "n_test_positive": int(np.sum(test_y)), "unit": unit}
    return out


def write_domain(folder: Path, card_name: str, density: EmbeddingDensity, summary: dict[str, Any],
                 points: dict[str, dict[str, Any]], extra_files: tuple[str, ...] = ()) -> ModelCard:
    """Write ``domain.json`` beside the weights and the domain/operating points into the card.

    ``weights_sha256`` gets the domain file and any ``extra_files`` that changed (re-hashed).
    """
    folder = Path(folder)
    (folder / DOMAIN_FILE).write_text(json.dumps({"embedding": density.to_dict()}) + "\n")
    card = ModelCard.read(folder / card_name)
    card.extra["domain"] = {"file": DOMAIN_FILE, **summary}
    card.extra["operating_points"] = points
    for name, key in (("sensitivity_0.90", "sensitivity_0.9"), ("specificity_0.90", "specificity_0.9")):
        card.thresholds[key] = float(points[name]["threshold"])  # the threshold the point reports
    for name in (DOMAIN_FILE, *extra_files):
        card.weights_sha256[name] = sha256_file(folder / name)
    card.write(folder / card_name)
    return card


def split_summary(density: EmbeddingDensity, fit_d: np.ndarray, cal_d: np.ndarray, test_d: np.ndarray,
                  threshold: float, acquisition: dict[str, Any], unit: str, fitted_on: str) -> dict[str, Any]:
    """The card's description of the domain and how often the flag fires on each phantom split."""
    return {
        "threshold": threshold,
        "score": (f"Mahalanobis distance of the standardised embedding under a Ledoit-Wolf shrinkage "
                  f"Gaussian ({density.components.shape[0]} principal axes + isotropic tail)"),
        "fitted_on": fitted_on,
        "threshold_rule": f"{QUANTILE:g}th percentile of the calibration split's distances",
        "unit": unit,
        "acquisition": acquisition,
        "flag_rate": {"fit_split": round(float(np.mean(fit_d > threshold)), 4),
                      "calibration_split": round(float(np.mean(cal_d > threshold)), 4),
                      "test_split": round(float(np.mean(test_d > threshold)), 4),
                      "n": {"fit": int(len(fit_d)), "calibration": int(len(cal_d)), "test": int(len(test_d))}},
    }
