"""Calibration map of the slide score, as applied at run time (numpy only).

The MIL head's logit is mapped to a probability by the card's map: Platt scaling (with its output
clipped to ``[p_min, p_max]``, the certainty the calibration set can support) or an isotonic table.
The map is fitted by :mod:`models.slides.training.calibrate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import calibration as cal


def apply_map(calmap: dict[str, Any], logits: np.ndarray) -> np.ndarray:
    """Calibrated probabilities for slide logits, per the card's calibration map."""
    x = np.asarray(logits, np.float64)
    method = calmap.get("method")
    if method == "platt":
        p = cal.apply_platt(x, float(calmap["a"]), float(calmap["b"]))
        if "p_min" in calmap:  # a sigmoid's tails go past what the calibration set supports
            p = np.clip(p, float(calmap["p_min"]), float(calmap["p_max"]))
        return p
    if method == "isotonic":
        return cal.apply_isotonic(x, {"x": calmap["x"], "y": calmap["y"]})
    raise ValueError(f"calibration method {method!r} not supported (expected 'platt' or 'isotonic')")
