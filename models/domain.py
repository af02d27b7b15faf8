"""Out-of-domain check at run time (numpy only): is an input inside the card's training domain?

A card that describes its training domain has ``extra["domain"]``, fitted by
:mod:`models.training.domain` on the model's own training split:

* ``acquisition``: ranges of simple acquisition values (pixel spacing, bits stored, field of view,
  intensity mean/std, ...), each ``{"min", "max", "unit", "training"}``; a value outside its range
  is a reason;
* ``file`` (``domain.json`` beside the weights, listed in ``weights_sha256``): the embedding's
  distribution, a shrinkage Gaussian in PCA form (mean, per-feature scale, the top ``k``
  principal axes with their variances, and the mean variance of the discarded axes), and
  ``threshold``: the 99th percentile of the Mahalanobis distance on the calibration split.

An input is in domain when no acquisition value is out of range and its embedding's distance is
at most the threshold. :class:`DomainCheck` carries the distance, the threshold and the reasons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cds.contracts.cards import ModelCard
from cds.contracts.domain import DomainCheck
from cds.contracts.errors import InvalidWeights

DOMAIN_FILE = "domain.json"


@dataclass(frozen=True)
class EmbeddingDensity:
    """A Gaussian over standardised embeddings: top-``k`` PCA axes plus an isotropic tail."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,) per-feature standard deviation used to standardise
    components: np.ndarray  # (k, D) orthonormal principal axes
    variances: np.ndarray  # (k,) variance along each axis (shrinkage covariance eigenvalues)
    tail_variance: float  # mean variance of the D - k discarded axes
    transform: str = "none"  # "sqrt": features are square-rooted first (non-negative, skewed pools)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddingDensity:
        return cls(mean=np.asarray(d["mean"], np.float64), scale=np.asarray(d["scale"], np.float64),
                   components=np.asarray(d["components"], np.float64),
                   variances=np.asarray(d["variances"], np.float64), tail_variance=float(d["tail_variance"]),
                   transform=str(d.get("transform", "none")))

    def to_dict(self) -> dict[str, Any]:
        def r(a: np.ndarray) -> list:
            return np.round(np.asarray(a, np.float64), 7).tolist()

        return {"mean": r(self.mean), "scale": r(self.scale), "components": r(self.components),
                "variances": r(self.variances), "tail_variance": float(self.tail_variance),
                "transform": self.transform}

    def prepare(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, np.float64))
        return np.sqrt(np.maximum(x, 0.0)) if self.transform == "sqrt" else x

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (n, D) under the shrinkage Gaussian."""
        z = (self.prepare(features) - self.mean) / self.scale
        if z.shape[1] != self.mean.shape[0]:
            raise ValueError(f"embedding has {z.shape[1]} features, the domain model {self.mean.shape[0]}")
        proj = z @ self.components.T
        resid = np.sum(z * z, axis=1) - np.sum(proj * proj, axis=1)
        d2 = np.sum(proj * proj / self.variances, axis=1) + np.maximum(resid, 0.0) / self.tail_variance
        return np.sqrt(d2)


@dataclass(frozen=True)
class DomainModel:
    """The card's training domain: acquisition ranges and the embedding density with its threshold."""

    acquisition: dict[str, dict[str, Any]]
    density: EmbeddingDensity | None
    threshold: float | None

    def check(self, values: dict[str, float | None], features: np.ndarray | None) -> DomainCheck:
        """One input's :class:`DomainCheck` from its acquisition ``values`` and embedding."""
        reasons = acquisition_reasons(self.acquisition, values)
        score = None
        if self.density is not None and features is not None and self.threshold is not None:
            score = float(self.density.distance(features)[0])
            if not np.isfinite(score) or score > self.threshold:
                reasons.append(f"embedding distance {score:.1f} above the training-domain threshold "
                               f"{self.threshold:.1f} (99th percentile of held-out phantoms)")
        return DomainCheck(in_domain=not reasons, score=score, threshold=self.threshold, reasons=reasons)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def acquisition_reasons(ranges: dict[str, dict[str, Any]], values: dict[str, float | None]) -> list[str]:
    """A sentence per acquisition value outside its training range (unknown values are skipped)."""
    out = []
    for name, spec in ranges.items():
        v = values.get(name)
        if v is None:
            continue
        lo, hi = float(spec["min"]), float(spec["max"])
        if not np.isfinite(v) or v < lo or v > hi:
            unit = f" {spec['unit']}" if spec.get("unit") else ""
            label = spec.get("label", name.replace("_", " "))
            out.append(f"{label} {_fmt(float(v))}{unit} outside the training domain "
                       f"{_fmt(lo)}-{_fmt(hi)}{unit}")
    return out


def load_domain(card: ModelCard, folder: Path) -> DomainModel | None:
    """The card's training domain, or None for a card that does not describe one."""
    spec = card.extra.get("domain")
    if not spec:
        return None
    density, threshold = None, None
    name = spec.get("file")
    if name:
        if name not in card.weights_sha256:
            raise InvalidWeights(f"{card.name} card: domain file {name} is not listed in weights_sha256")
        try:
            data = json.loads((Path(folder) / name).read_text())
            density = EmbeddingDensity.from_dict(data["embedding"])
            threshold = float(spec["threshold"])
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InvalidWeights(f"{card.name} domain file {Path(folder) / name} is unusable: {exc}") from exc
    return DomainModel(acquisition=dict(spec.get("acquisition", {})), density=density, threshold=threshold)


def intensity_stats(pixels: np.ndarray, full_scale: float) -> tuple[float, float]:
    """Mean and standard deviation of ``pixels / full_scale`` on a strided sample (cheap on 4k images)."""
    a = np.asarray(pixels)
    step = max(1, int(np.sqrt(a.shape[0] * a.shape[1] / 262_144.0))) if a.ndim >= 2 else 1
    sample = a[::step, ::step].astype(np.float64) / max(float(full_scale), 1.0)
    return float(sample.mean()), float(sample.std())


def combine(checks: list[DomainCheck | None]) -> DomainCheck | None:
    """One check for several inputs (an exam's images): out of domain when any input is."""
    known = [c for c in checks if c is not None]
    if not known:
        return None
    worst = max((c.score for c in known if c.score is not None), default=None)
    reasons = [r for c in known for r in c.reasons]
    return DomainCheck(in_domain=all(c.in_domain for c in known), score=worst,
                       threshold=known[0].threshold, reasons=list(dict.fromkeys(reasons)))
