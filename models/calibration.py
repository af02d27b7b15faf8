"""Calibration maps applied at run time: temperature, Platt and isotonic (numpy/scipy only).

A network's raw outputs are over-confident; the maps stored in a model card (fitted on held-out
data by :mod:`models.training.calibration`) turn them into the probabilities clinicians act on.

* multi-class: temperature scaling, ``softmax(logits / T)``;
* binary: Platt scaling ``sigmoid(a * score + b)``, or an isotonic table stored as breakpoints so
  the card stays JSON and interpolated here.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax


def apply_temperature(logits: np.ndarray, T: float) -> np.ndarray:
    """Calibrated probabilities: softmax over the last axis, or a sigmoid for 1-D logits."""
    z = np.asarray(logits, dtype=np.float64) / float(T)
    return expit(z) if z.ndim == 1 else softmax(z, axis=-1)


def apply_platt(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    return expit(a * np.asarray(scores, dtype=np.float64) + b)


def apply_isotonic(scores: np.ndarray, table: dict) -> np.ndarray:
    x, y = np.asarray(table["x"], float), np.asarray(table["y"], float)
    if x.size == 0:
        raise ValueError("isotonic table is empty")
    return np.interp(np.asarray(scores, dtype=np.float64), x, y)
