"""The slide calibration map lowers ECE on held-out scores; thresholds sit between classes."""

from __future__ import annotations

import numpy as np
import pytest

from models.slides.calibrate import apply_map
from models.slides.training.calibrate import fit_map, fit_thresholds
from models.training import calibration as cal


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


def test_separable_calibration_set_gives_finite_probabilities_and_sane_thresholds():
    """A perfectly separable calibration set must not yield 0/1 probabilities or a 0.99997 threshold."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-3, 1.5, 30), rng.normal(20, 6, 30)])  # separable, as on phantoms
    y = np.array([0] * 30 + [1] * 30)
    a, b = cal.fit_platt(x, y)  # the unregularised fit runs away
    a_r, b_r = cal.fit_platt(x, y, regularised=True)
    assert a_r < a and np.isfinite([a_r, b_r]).all()
    p_r = cal.apply_platt(np.array([-3.0, 20.0]), a_r, b_r)  # the class centres
    assert 0.01 < p_r[0] < 0.2 and 0.8 < p_r[1] < 0.99
    iso = cal.fit_isotonic(x, y, regularised=True)
    assert min(iso["y"]) == pytest.approx(1 / 32) and max(iso["y"]) == pytest.approx(31 / 32)
    calmap = fit_map(x, y)
    assert calmap["targets"] == "platt-regularised"
    p = apply_map(calmap, x)
    assert 1e-3 < p.min() and p.max() < 1 - 1e-3
    thr = fit_thresholds(x, y, calmap)
    for name in ("youden", "sensitivity_0.9"):
        assert 1e-3 < thr[name] < 1 - 1e-3, (name, thr[name])
    assert ((p >= thr["youden"]) == (y == 1)).all()


def test_bounded_platt_slope():
    x = np.array([-1.0, -0.5, 0.4, 0.5, 1.0, 2.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    a, _ = cal.fit_platt(x, y, max_slope=2.0)
    assert abs(a) <= 2.0 + 1e-9


def test_shipped_card_thresholds_are_inside_the_unit_interval():
    import json
    from pathlib import Path

    card = json.loads((Path(__file__).resolve().parents[4] / "models/slides/weights/card.json").read_text())
    for name in ("youden", "sensitivity_0.9"):
        assert 1e-3 < card["thresholds"][name] < 1 - 1e-3, (name, card["thresholds"][name])
    rows = card["extra"]["test_slides"]
    p = apply_map(card["calibration"], np.array([r["logit"] for r in rows]))
    assert p.max() < 1 - 1e-3 and p.min() > 1e-3  # no "100.0 %" in the report
