"""FROC of the mammography localization map (models/mammography/training/froc.py) on hand-built maps.

Two 12x12 images. Image 0 has a 3x3 mass lesion (rows/cols 2-4) and two marks: an 11-pixel blob
(rows 3-5 x cols 3-5 plus row 2 cols 3-4; peak 0.9, centroid (3.64, 3.91) -> pixel (4, 4), inside
the lesion; 6 of its pixels on the lesion) and a 2x2 blob elsewhere (peak 0.6, a false mark).
Image 1 is normal, with one 2x2 false mark (peak 0.7) and a single 0.95 pixel (under 4 pixels: no
mark). With threshold 0.5 and min 4 pixels, by hand:

* score threshold 0.9: 1 hit, 0 false marks -> sensitivity 1.0 at 0 FP/image;
* 0.7: + the normal image's mark -> 0.5 FP/image; 0.6: + image 0's false mark -> 1.0 FP/image.
* Dice of the detected lesion = 2*6/(11+9) = 0.6.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.mammography.training import froc


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prob = np.zeros((2, 12, 12))
    masks = np.zeros((2, 12, 12), bool)
    masks[0, 2:5, 2:5] = True  # the lesion, 9 pixels
    prob[0, 3:6, 3:6] = [[0.9, 0.8, 0.8], [0.8, 0.8, 0.8], [0.8, 0.8, 0.5]]
    prob[0, 2, 3:5] = 0.75  # two more pixels on the lesion's top row -> 11-pixel mark, 6 on the lesion
    prob[0, 9:11, 9:11] = 0.6  # false mark on the lesion image
    prob[1, 0:2, 0:2] = 0.7  # false mark on the normal image
    prob[1, 6, 6] = 0.95  # a single pixel: under min_pixels, never a mark
    return prob, masks, np.asarray(["circumscribed_mass", ""])


def test_marks_match_the_hand_count() -> None:
    prob, masks, kinds = _case()
    m = froc.find_marks(prob, masks, kinds, 0.5, 4, "max")
    order = np.argsort(-m.score)
    assert m.image[order].tolist() == [0, 1, 0]
    assert m.score[order] == pytest.approx([0.9, 0.7, 0.6])
    assert m.hit[order].tolist() == [True, False, False]
    assert m.area[order].tolist() == [11, 4, 4]
    assert m.overlap[order].tolist() == [6, 0, 0]  # rows 2-4 x cols 3-4 of the mark inside the lesion
    mean = froc.find_marks(prob, masks, kinds, 0.5, 4, "mean")
    assert sorted(mean.score.tolist(), reverse=True)[0] == pytest.approx((0.9 + 7 * 0.8 + 0.5 + 2 * 0.75) / 11)


def test_curve_and_operating_points_against_hand_computation() -> None:
    prob, masks, kinds = _case()
    m = froc.find_marks(prob, masks, kinds, 0.5, 4, "max")
    thresholds, fp, sens = froc.froc_curve(m)
    assert thresholds.tolist() == pytest.approx([np.inf, 0.9, 0.7, 0.6])
    assert fp.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0])
    assert sens.tolist() == pytest.approx([0.0, 1.0, 1.0, 1.0])
    assert froc.thresholds_at(m, (0.25, 0.5, 1.0)) == pytest.approx({0.25: 0.9, 0.5: 0.7, 1.0: 0.6})
    point = froc.at_threshold(m, 0.7)
    assert point["false_marks_per_image"] == pytest.approx(0.5)
    assert point["sensitivity"] == pytest.approx(1.0)
    assert point["dice_detected"] == pytest.approx(2 * 6 / (11 + 9))
    assert point["per_lesion_type"] == {"circumscribed_mass": {"n_lesions": 1, "sensitivity": 1.0,
                                                               "dice_detected": pytest.approx(0.6)}}
    # above every score nothing is marked: the lesion is missed, no Dice
    none = froc.at_threshold(m, 0.95)
    assert none["sensitivity"] == 0.0 and none["dice_detected"] is None and none["false_marks_per_image"] == 0.0


def test_centroid_outside_the_lesion_is_a_false_mark_and_gate_drops_marks() -> None:
    prob, masks, kinds = _case()
    shifted = masks.copy()
    shifted[0] = False
    shifted[0, 0:2, 0:2] = True  # lesion moved away from the 0.9 blob
    m = froc.find_marks(prob, shifted, kinds, 0.5, 4, "max")
    assert not m.hit.any()
    assert froc.sweep_sensitivity(m) == {0.25: 0.0, 0.5: 0.0, 1.0: 0.0}
    gated = froc.find_marks(prob, masks, kinds, 0.5, 4, "max", keep=np.array([False, True]))
    assert gated.image.tolist() == [1] and gated.n_images == 2
    assert froc.sweep_sensitivity(gated)[1.0] == 0.0  # the lesion image still counts, as missed


def test_sensitivity_is_monotonic_in_false_mark_rate() -> None:
    rng = np.random.default_rng(3)
    prob = np.clip(rng.normal(0.2, 0.25, (10, 40, 40)), 0, 1)
    from scipy import ndimage

    prob = ndimage.gaussian_filter(prob, (0, 2, 2)) * 2.5
    masks = np.zeros(prob.shape, bool)
    for i in range(0, 10, 2):
        masks[i, 10 + i:20 + i, 12:22] = True
        prob[i, 12 + i:18 + i, 14:20] += rng.uniform(0.2, 0.6)
    kinds = np.asarray(["asymmetry" if i % 4 == 0 else ("calcifications" if i % 2 == 0 else "") for i in range(10)])
    m = froc.find_marks(prob, masks, kinds, 0.45, 4, "mean")
    assert m.hit.any() and (~m.hit).any()  # the case exercises both
    _, fp, sens = froc.froc_curve(m)
    assert np.all(np.diff(fp) >= 0) and np.all(np.diff(sens) >= 0)
    rates = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    swept = froc.sweep_sensitivity(m, rates)
    assert [swept[r] for r in rates] == sorted(swept[r] for r in rates)
    cuts = froc.thresholds_at(m, rates)
    at = [froc.at_threshold(m, cuts[r]) for r in rates]
    assert all(a["false_marks_per_image"] <= r + 1e-9 for a, r in zip(at, rates))
    assert [a["sensitivity"] for a in at] == sorted(a["sensitivity"] for a in at)


def test_report_chooses_the_score_rule_on_calibration_only() -> None:
    prob, masks, kinds = _case()
    cal = {r: froc.find_marks(prob, masks, kinds, 0.5, 4, r) for r in froc.SCORE_RULES}
    report = froc.froc_report(cal, cal)
    assert report["mark_score"] == "max"  # equal calibration sensitivity: ties go to the peak
    assert report["at_calibration_thresholds"]["0.5"]["score_threshold"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="mark score"):
        froc.find_marks(prob, masks, kinds, 0.5, 4, "median")
