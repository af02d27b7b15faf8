"""Operating points per site (numpy-free): which decision threshold a model uses here.

A card lists its operating points in ``extra["operating_points"]`` (fitted on the calibration
split by :mod:`models.training.domain`, with the sensitivity and specificity they reached on the
held-out test split): ``youden``, ``sensitivity_0.90``, ``specificity_0.90``. A site picks one per
model in settings (``CDS_OPERATING_POINT__MAMMOGRAPHY=sensitivity_0.90``) or sets its own
threshold as a number in [0, 1]; the default is ``youden``. Anything else is a start-up error
(:class:`ModelUnavailable`) that names the setting.
"""

from __future__ import annotations

import re
from typing import Any

from cds.contracts.cards import ModelCard
from cds.contracts.domain import OperatingPoint
from cds.contracts.errors import ModelUnavailable
from cds.contracts.settings import Settings

DEFAULT = "youden"
_NAMED = re.compile(r"^(sensitivity|specificity)_(0?\.\d+|1(?:\.0*)?)$")


def canonical(name: str) -> str:
    """``sensitivity_0.9`` and ``sensitivity_0.90`` name the same point: ``sensitivity_0.90``."""
    key = name.strip().lower()
    m = _NAMED.match(key)
    return f"{m.group(1)}_{float(m.group(2)):.2f}" if m else key


def card_points(card: ModelCard) -> dict[str, dict[str, Any]]:
    """The card's operating points by canonical name (older cards: their ``thresholds``, no rates)."""
    points = {canonical(k): dict(v) for k, v in card.extra.get("operating_points", {}).items()}
    for name, thr in card.thresholds.items():
        points.setdefault(canonical(name), {"threshold": float(thr)})
    return points


def setting_value(settings: Settings, model: str) -> str:
    for key, value in settings.operating_point.items():
        if key.strip().lower() == model.lower():
            return str(value).strip()
    return DEFAULT


def resolve(card: ModelCard, settings: Settings, model: str) -> OperatingPoint:
    """The operating point ``settings`` choose for ``model`` (e.g. "mammography", "slides")."""
    value = setting_value(settings, model)
    env = f"CDS_OPERATING_POINT__{model.upper()}"
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        if not 0.0 <= number <= 1.0:
            raise ModelUnavailable(f"{env}={value!r}: a site threshold must be a number in [0, 1]")
        return OperatingPoint(name="site", threshold=number, source="site")
    points = card_points(card)
    point = points.get(canonical(value))
    if point is None or "threshold" not in point:
        raise ModelUnavailable(
            f"{env}={value!r}: {card.name} {card.version} has no such operating point "
            f"(card offers: {', '.join(sorted(points)) or 'none'}; or give a number in [0, 1])")
    return OperatingPoint(name=canonical(value), threshold=float(point["threshold"]),
                          expected_sensitivity=point.get("expected_sensitivity"),
                          expected_specificity=point.get("expected_specificity"), source="card")

