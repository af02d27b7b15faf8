"""Lesion-level detection scores of the localization map: FROC and Dice of the detected lesions.

Issue 18 retired "mask IoU >= 0.7" as the localization goal: detection work on mammograms reports
lesion-level sensitivity at a few false marks per image (FROC) instead, because a reader acts on
marks, not on pixel overlap. This module turns probability maps into marks and scores them; it
needs numpy and scikit-image only (no torch), so it scores the torch network during
``cds train synthetic`` and the shipped ONNX alike.

Definitions (fixed here so every card means the same thing):

* **marks**: 8-connected components of ``prob >= component_threshold`` (the card's mask threshold,
  fitted on the calibration split for IoU) with at least ``min_pixels`` pixels, as the runtime
  reports them; a mark's score is the ``max`` (peak) or ``mean`` probability inside it.
* **hit**: a mark hits the image's lesion when its centroid (rounded to the nearest pixel) lies
  inside the ground-truth lesion mask: the "mark inside the annotated outline" criterion of
  mammography CAD evaluation on DDSM/INbreast (e.g. Ribli et al., Sci Rep 2018;8:4165), the 2D
  analogue of LUNA16's "candidate within the nodule" (Setio et al., Med Image Anal 2017;42:1-13).
  Several hits on one lesion count once and are not false marks (the LUNA16 rule); a mark that
  hits nothing is a false mark. Each phantom image has at most one lesion.
* **FROC**: the score threshold is swept over all mark scores; sensitivity = detected lesions /
  lesions, false marks per image = false marks / all images (normal and lesion images).
* **Dice of a detected lesion**: 2|M n G| / (|M| + |G|), M the union of its hitting marks at the
  threshold, G its mask; false marks elsewhere on the image do not enter it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP_RATES = (0.25, 0.5, 1.0)  # false marks per image at which sensitivity is reported
SCORE_RULES = ("max", "mean")


@dataclass(frozen=True)
class Marks:
    """All marks of a set of images, with what the sweep needs about each and about the lesions.

    Per mark: ``image`` index, ``score``, ``hit``, ``area`` and ``overlap`` (pixels inside the
    lesion mask). Per image: ``lesion_area`` (0 for a normal image) and ``kind`` (lesion type).
    """

    image: np.ndarray
    score: np.ndarray
    hit: np.ndarray
    area: np.ndarray
    overlap: np.ndarray
    lesion_area: np.ndarray
    kind: np.ndarray

    @property
    def n_images(self) -> int:
        return int(len(self.lesion_area))


def find_marks(prob: np.ndarray, masks: np.ndarray, kinds: np.ndarray, component_threshold: float,
               min_pixels: int, score: str = "max", keep: np.ndarray | None = None) -> Marks:
    """Marks of ``prob`` (n, H, W) against the lesion ``masks`` (n, H, W, bool).

    ``keep[i]`` False drops image ``i``'s marks (the runtime's P(normal) gate), but the image still
    counts in the false-marks-per-image denominator and its lesion still counts as missed.
    """
    from skimage.measure import label, regionprops

    if score not in SCORE_RULES:
        raise ValueError(f"mark score {score!r}; expected one of {SCORE_RULES}")
    if prob.shape != masks.shape:
        raise ValueError(f"probability maps {prob.shape} and masks {masks.shape} differ in shape")
    rows: list[tuple[int, float, bool, int, int]] = []
    for i, (p, m) in enumerate(zip(prob, masks.astype(bool))):
        if keep is not None and not keep[i]:
            continue
        for region in regionprops(label(p >= component_threshold, connectivity=2), intensity_image=p):
            if region.area < min_pixels:
                continue
            r, c = (int(round(v)) for v in region.centroid)
            value = region.intensity_max if score == "max" else region.intensity_mean
            coords = region.coords
            rows.append((i, float(value), bool(m[r, c]), int(region.area), int(m[coords[:, 0], coords[:, 1]].sum())))
    cols = list(zip(*rows)) if rows else [[], [], [], [], []]
    return Marks(image=np.asarray(cols[0], np.int64), score=np.asarray(cols[1], float),
                 hit=np.asarray(cols[2], bool), area=np.asarray(cols[3], np.int64),
                 overlap=np.asarray(cols[4], np.int64),
                 lesion_area=masks.reshape(len(masks), -1).astype(bool).sum(axis=1),
                 kind=np.asarray([str(k) for k in kinds]))


def _best_hit(marks: Marks) -> np.ndarray:
    """Per lesion image, the highest score of a mark that hits its lesion (-inf when none)."""
    best = np.full(marks.n_images, -np.inf)
    np.maximum.at(best, marks.image[marks.hit], marks.score[marks.hit])
    return best[marks.lesion_area > 0]


def froc_curve(marks: Marks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, false marks per image, sensitivity), thresholds descending from +inf (no marks)."""
    thresholds = np.concatenate([[np.inf], np.unique(marks.score)[::-1]])
    false_scores = marks.score[~marks.hit]
    fp = np.array([(false_scores >= t).sum() for t in thresholds], float) / max(marks.n_images, 1)
    best = _best_hit(marks)
    sens = np.array([(best >= t).mean() if best.size else np.nan for t in thresholds])
    return thresholds, fp, sens


def thresholds_at(marks: Marks, rates: tuple[float, ...] = FP_RATES) -> dict[float, float]:
    """Per rate, the lowest score threshold whose false marks per image stay at or below it."""
    thresholds, fp, _ = froc_curve(marks)
    return {r: float(thresholds[fp <= r + 1e-12].min()) for r in rates}


def at_threshold(marks: Marks, threshold: float) -> dict:
    """Sensitivity, false marks per image and Dice of the detected lesions at one score threshold,
    overall and per lesion type."""
    on = marks.score >= threshold
    lesion_rows = np.flatnonzero(marks.lesion_area > 0)
    detected = _best_hit(marks) >= threshold
    inter = np.bincount(marks.image[on & marks.hit], marks.overlap[on & marks.hit], marks.n_images)
    area = np.bincount(marks.image[on & marks.hit], marks.area[on & marks.hit], marks.n_images)
    dice = 2 * inter[lesion_rows] / (area[lesion_rows] + marks.lesion_area[lesion_rows])

    def summary(sel: np.ndarray) -> dict:
        return {"n_lesions": int(sel.sum()),
                "sensitivity": float(detected[sel].mean()) if sel.any() else None,
                "dice_detected": float(dice[sel & detected].mean()) if (sel & detected).any() else None}

    kinds = marks.kind[lesion_rows]
    return {"score_threshold": float(threshold) if np.isfinite(threshold) else None,  # inf: no marks
            "false_marks_per_image": float((on & ~marks.hit).sum() / max(marks.n_images, 1)),
            **summary(np.ones(len(lesion_rows), bool)),
            "per_lesion_type": {k: summary(kinds == k) for k in sorted(set(kinds.tolist()) - {""})}}


def sweep_sensitivity(marks: Marks, rates: tuple[float, ...] = FP_RATES) -> dict[float, float]:
    """The conventional FROC points: the best sensitivity with at most ``rate`` false marks per
    image, the threshold swept on the scored images themselves."""
    _, fp, sens = froc_curve(marks)
    return {r: float(sens[fp <= r + 1e-12].max()) for r in rates}


def froc_report(calibration: dict[str, Marks], test: dict[str, Marks], rates: tuple[float, ...] = FP_RATES) -> dict:
    """The card's FROC block: the mark score rule (``max`` or ``mean``, the keys of the dicts)
    and the score thresholds are chosen on ``calibration``; ``test`` is scored once with them.

    The rule is the one with the higher mean calibration sensitivity over ``rates`` (ties go to
    ``max``). Also given: the test split's own sweep, the figure FROC papers report.
    """
    choice = {rule: float(np.mean(list(sweep_sensitivity(m, rates).values()))) for rule, m in calibration.items()}
    rule = max(choice, key=lambda k: (choice[k], k == "max"))
    cuts = thresholds_at(calibration[rule], rates)
    return {"mark_score": rule,
            "calibration_mean_sensitivity_by_score": choice,
            "n_test_images": test[rule].n_images,
            "n_test_lesions": int((test[rule].lesion_area > 0).sum()),
            "at_calibration_thresholds": {f"{r:g}": at_threshold(test[rule], cuts[r]) for r in rates},
            "test_sweep_sensitivity": {f"{r:g}": v for r, v in sweep_sensitivity(test[rule], rates).items()}}
