"""The slide calibration map lowers ECE on held-out scores; thresholds sit between classes."""

from __future__ import annotations

import numpy as np
import pytest

from models import calibration as cal
from models.slides.calibrate import apply_map, fit_map, fit_thresholds


def _scores(rng, n):
    y = rng.integers(0, 2, n)
    true_logit = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, n)
    return 4.0 * true_logit + 2.0, y  # over-confident and shifted, like an uncalibrated network


def test_calibration_lowers_ece_on_held_out_scores():
    rng = np.random.default_rng(0)
    x_cal, y_cal = _scores(rng, 400)
    x_test, y_test = _scores(rng, 2000)
    calmap = fit_map(x_cal, y_cal)
    assert calmap["method"] in ("platt", "isotonic") and set(calmap["cv_brier"]) == {"platt", "isotonic"}
    before = cal.expected_calibration_error(1 / (1 + np.exp(-x_test)), y_test)
    after = cal.expected_calibration_error(apply_map(calmap, x_test), y_test)
    assert after < 0.5 * before and after < 0.05


def test_separable_thresholds_have_a_margin():
    x = np.array([-5.0, -3.0, -1.0, 0.5, 10.0, 12.0, 15.0, 30.0])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    calmap = fit_map(x, y, folds=2)
    thr = fit_thresholds(x, y, calmap)
    p = apply_map(calmap, x)
    assert ((p >= thr["youden"]) == (y == 1)).all()
    # a positive scoring between the classes (below the lowest calibration positive) is still found
    assert apply_map(calmap, np.array([8.0]))[0] >= thr["youden"]
    assert apply_map(calmap, np.array([2.0]))[0] < thr["youden"]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        apply_map({"method": "temperature"}, np.zeros(2))
