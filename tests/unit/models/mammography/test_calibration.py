"""Calibration and thresholds: fitted on held-out data, they must actually improve calibration."""

from __future__ import annotations

import numpy as np
import pytest

from models.training import calibration as cal


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true probabilities are softmax(z); reported logits are 3x too sharp."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 4))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    return 3.0 * z, y


def test_temperature_lowers_ece_on_held_out() -> None:
    z_cal, y_cal = _overconfident(3000, 0)
    z_test, y_test = _overconfident(3000, 1)
    T = cal.fit_temperature(z_cal, y_cal)
    assert 2.4 < T < 3.6
    before = cal.expected_calibration_error(cal.apply_temperature(z_test, 1.0), y_test)
    after = cal.expected_calibration_error(cal.apply_temperature(z_test, T), y_test)
    assert after < before / 2 and after < 0.03


def test_binary_temperature_platt_isotonic() -> None:
    rng = np.random.default_rng(2)
    s = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-s))).astype(int)
    raw = 1 / (1 + np.exp(-4 * s))  # over-confident
    ece_raw = cal.expected_calibration_error(raw, y)
    a, b = cal.fit_platt(4 * s[:2000], y[:2000])
    platt = cal.apply_platt(4 * s[2000:], a, b)
    table = cal.fit_isotonic(raw[:2000], y[:2000])
    iso = cal.apply_isotonic(raw[2000:], table)
    T = cal.fit_temperature(4 * s[:2000], y[:2000])
    temp = cal.apply_temperature(4 * s[2000:], T)
    for p in (platt, iso, temp):
        assert cal.expected_calibration_error(p, y[2000:]) < ece_raw / 2
    assert all(isinstance(v, float) for v in table["x"] + table["y"])


def test_thresholds() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(500), np.ones(500)].astype(int)
    p = np.clip(np.r_[rng.normal(0.3, 0.1, 500), rng.normal(0.7, 0.1, 500)], 0, 1)
    t = cal.youden_threshold(p, y)
    assert 0.4 < t < 0.6
    t90 = cal.threshold_at_sensitivity(p, y, 0.9)
    assert (p[y == 1] >= t90).mean() >= 0.9
    assert (p[y == 1] > t90).mean() < 0.9  # the highest such threshold
    with pytest.raises(ValueError):
        cal.youden_threshold(p, np.ones_like(y))


def test_ece_known_value() -> None:
    probs = np.array([0.9, 0.9, 0.9, 0.9])
    labels = np.array([1, 1, 0, 0])
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.4)
