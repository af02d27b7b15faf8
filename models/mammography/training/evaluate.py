"""Held-out evaluation of the mammography model: segmentation scores, lesion gate, AUC, ECE.

Everything is scored on the test split; the temperature, the decision thresholds, the mask
threshold and the lesion gate are fitted on the calibration split only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from cds.contracts.domain import MAMMO_CLASSES
from models.mammography.training.config import MIN_LESION_PIXELS, SEG_THRESHOLD, EvalResult
from models.mammography.training.data import MammoArrays
from models.mammography.training.loop import predict
from models.mammography.training.net import MammoNet
from models.training import calibration as cal


def clean_mask(prob: np.ndarray, threshold: float = SEG_THRESHOLD, min_pixels: int = MIN_LESION_PIXELS) -> np.ndarray:
    """Threshold a probability map and drop connected components below ``min_pixels``."""
    from skimage.measure import label as cc_label

    m = prob >= threshold
    lab = cc_label(m)
    if lab.max() == 0:
        return m
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[lab]


def detection_rates(prob: np.ndarray, mask: np.ndarray, threshold: float, p_normal: np.ndarray,
                    max_p_normal: float = 1.0) -> dict[str, float]:
    """Lesion marks as the reader sees them: an image's components are reported only when its
    calibrated P(normal) is at most ``max_p_normal`` (the model does not outline a lesion on an
    image it calls normal).

    Returns the share of lesion images with a reported component on their lesion, the share of
    normal images with any reported component, and the mean IoU of the reported masks (missed
    lesions count 0).
    """
    hit, fp, ious = [], [], []
    for p, m, pn in zip(prob, mask, p_normal):
        g = clean_mask(p, threshold) if pn <= max_p_normal else np.zeros(p.shape, bool)
        if m.any():
            hit.append(bool((g & m).any()))
            ious.append(float((g & m).sum() / (g | m).sum()))
        else:
            fp.append(bool(g.any()))
    return {"lesion_detection_rate": float(np.mean(hit)) if hit else float("nan"),
            "normal_image_false_mark_rate": float(np.mean(fp)) if fp else float("nan"),
            "iou_reported": float(np.mean(ious)) if ious else float("nan")}


def fit_lesion_gate(prob: np.ndarray, mask: np.ndarray, threshold: float, p_normal: np.ndarray) -> float:
    """The largest P(normal) at which an image's lesions are still reported, maximising detection
    rate minus false-mark rate (Youden's index over images) on calibration data.

    Gating images by P(normal) separates true lesions from blobs on normal breasts better than
    gating components by their own peak probability: the maps saturate, so peaks hardly differ
    (the measurements are in CHANGELOG.md, 0.4.0).
    """
    best, best_j = 1.0, -np.inf
    for t in [1.0] + [round(t, 2) for t in np.arange(0.95, 0.25, -0.05)]:
        r = detection_rates(prob, mask, threshold, p_normal, t)
        j = r["lesion_detection_rate"] - r["normal_image_false_mark_rate"]
        if np.isfinite(j) and j > best_j + 1e-9:
            best, best_j = t, j
    return float(best)


def seg_scores(prob: np.ndarray, mask: np.ndarray, threshold: float = SEG_THRESHOLD) -> tuple[float, float]:
    """Mean IoU and Dice over images with a non-empty ground-truth mask."""
    ious, dices = [], []
    for p, m in zip(prob, mask):
        if not m.any():
            continue
        pm = clean_mask(p, threshold)
        inter = np.logical_and(pm, m).sum()
        union = np.logical_or(pm, m).sum()
        ious.append(inter / union)
        dices.append(2 * inter / (pm.sum() + m.sum()))
    return (float(np.mean(ious)) if ious else float("nan"), float(np.mean(dices)) if dices else float("nan"))


def seg_scores_by_type(prob: np.ndarray, mask: np.ndarray, kinds: np.ndarray,
                       threshold: float) -> dict[str, dict[str, float]]:
    """:func:`seg_scores` per lesion type (images whose ``kinds`` entry is empty are skipped)."""
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({str(k) for k in kinds if k}):
        sel = kinds == kind
        iou, dice = seg_scores(prob[sel], mask[sel], threshold)
        out[kind] = {"iou": iou, "dice": dice, "n": int(sel.sum())}
    return out


def malignancy(probs: np.ndarray) -> np.ndarray:
    return probs[:, MAMMO_CLASSES.index("in_situ")] + probs[:, MAMMO_CLASSES.index("invasive")]


def _is_malignant(y: np.ndarray) -> np.ndarray:
    return (y >= MAMMO_CLASSES.index("in_situ")).astype(int)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def evaluate(net: MammoNet, calib: MammoArrays, test: MammoArrays) -> EvalResult:
    """Held-out metrics; temperature and thresholds fitted on ``calib`` only."""
    from scipy.special import softmax

    lc, sc, _ = predict(net, calib.x)
    lt, st, gt = predict(net, test.x)
    # the mask threshold is an operating point like the decision threshold: fitted on calibration data
    cal_masks = np.where(calib.has_mask[:, None, None], calib.mask, 0).astype(bool)
    grid = [round(t, 2) for t in np.arange(0.2, 0.86, 0.05)]
    cal_iou = {t: seg_scores(sc, cal_masks, t)[0] for t in grid}
    finite = {t: v for t, v in cal_iou.items() if np.isfinite(v)}
    seg_t = max(finite, key=finite.get) if finite else SEG_THRESHOLD
    T = cal.fit_temperature(lc, calib.y)
    p_before = softmax(lt, axis=1)
    p_after = cal.apply_temperature(lt, T)
    pc_after = cal.apply_temperature(lc, T)
    ym_test, ym_cal = _is_malignant(test.y), _is_malignant(calib.y)
    mal_after = malignancy(p_after)
    mal_cal = malignancy(pc_after)
    normal = MAMMO_CLASSES.index("normal")
    lesion_gate = fit_lesion_gate(sc, cal_masks, seg_t, pc_after[:, normal])
    test_masks = np.where(test.has_mask[:, None, None], test.mask, 0).astype(bool)
    iou, dice = seg_scores(st, test_masks, seg_t)
    iou_05, _ = seg_scores(st, test_masks, SEG_THRESHOLD)
    grade_pred = gt.argmax(axis=1)
    thresholds = {
        "youden": cal.youden_threshold(mal_cal, ym_cal),
        "sensitivity_0.9": cal.threshold_at_sensitivity(mal_cal, ym_cal, 0.9),
    }
    pred_pos = mal_after >= thresholds["youden"]
    metrics = {
        "n_test_images": int(len(test)),
        "n_calibration_images": int(len(calib)),
        "malignant_auc": _auc(ym_test, mal_after),
        "accuracy_4class": float((p_after.argmax(1) == test.y).mean()),
        "iou": iou,
        "dice": dice,
        "iou_at_0.5": iou_05,
        "iou_per_lesion_type": seg_scores_by_type(st, test_masks, test.lesion_type, seg_t),
        "lesion_mask_threshold": seg_t,
        "lesion_report_max_p_normal": lesion_gate,
        "lesion_marks_ungated": detection_rates(st, test_masks, seg_t, p_after[:, normal]),
        "lesion_marks_reported": detection_rates(st, test_masks, seg_t, p_after[:, normal], lesion_gate),
        "froc": lesion_froc((sc, cal_masks, calib.lesion_type, pc_after[:, normal]),
                            (st, test_masks, test.lesion_type, p_after[:, normal]), seg_t, lesion_gate),
        "grade_qwk": float(cohen_kappa_score(test.grade, grade_pred, weights="quadratic")),
        "ece_top_label_before": cal.expected_calibration_error(p_before, test.y),
        "ece_top_label_after": cal.expected_calibration_error(p_after, test.y),
        "ece_malignancy_before": cal.expected_calibration_error(malignancy(p_before), ym_test),
        "ece_malignancy_after": cal.expected_calibration_error(mal_after, ym_test),
        "sensitivity_at_youden": float(pred_pos[ym_test == 1].mean()) if ym_test.any() else float("nan"),
        "specificity_at_youden": float((~pred_pos[ym_test == 0]).mean()) if (ym_test == 0).any() else float("nan"),
        "per_class_recall": {c: float((p_after.argmax(1)[test.y == i] == i).mean())
                             for i, c in enumerate(MAMMO_CLASSES) if (test.y == i).any()},
    }
    return EvalResult(metrics=metrics, temperature=T, thresholds=thresholds, seg_threshold=float(seg_t),
                      lesion_gate=lesion_gate)


FROC_PROTOCOL = (
    "Lesion-level detection (models/mammography/training/froc.py): marks are 8-connected components "
    "of the map at lesion_mask_threshold with at least min_component_pixels pixels; a mark's score is "
    "its peak or mean probability (mark_score, chosen on the calibration split); a mark hits when its "
    "centroid lies inside the lesion mask (DDSM/INbreast CAD practice; several hits on one lesion count "
    "once and are not false marks, as in LUNA16). Score thresholds for 0.25/0.5/1 false marks per image "
    "are fitted on the calibration split and the test split is scored once with them "
    "(at_calibration_thresholds); test_sweep_sensitivity is the test split's own FROC. Dice is over the "
    "detected lesions' hitting marks. 'map': every image's marks; 'as_reported': only images the "
    "P(normal) gate reports (lesion_report_max_p_normal).")


def lesion_froc(cal: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                test: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                seg_t: float, gate: float) -> dict:
    """FROC of the map and of the marks as reported, each ``(prob, masks, kinds, p_normal)``.

    The mark score rule and the score thresholds are chosen on ``cal``; ``test`` is scored once.
    """
    from models.mammography.training import froc

    out: dict = {"protocol": FROC_PROTOCOL, "component_threshold": float(seg_t),
                 "min_component_pixels": MIN_LESION_PIXELS}
    for name, gated in (("map", False), ("as_reported", True)):
        marks = [{rule: froc.find_marks(p, m, k, seg_t, MIN_LESION_PIXELS, rule, keep=(pn <= gate) if gated else None)
                  for rule in froc.SCORE_RULES} for p, m, k, pn in (cal, test)]
        out[name] = froc.froc_report(marks[0], marks[1])
    return out


def _onnx_split(session: object, exams: list[int], seed: int, rows: int, columns: int, workers: int) -> dict:
    """Render ``exams`` exactly as training did (:func:`data._render_exam`) and run the ONNX at alpha 0."""
    from models.mammography.pairing import bilateral_input
    from models.mammography.training.data import _render_exam

    jobs = [(i, seed, rows, columns) for i in exams]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            rendered = list(pool.map(_render_exam, jobs, chunksize=4))
    else:
        rendered = [_render_exam(j) for j in jobs]
    logits, probs, masks, kinds = [], [], [], []
    for views in rendered:
        imgs = np.stack([v[0] for v in views]).astype(np.float32)
        x = bilateral_input(imgs, imgs[[v[7] for v in views]])
        lg, lp = session.run(["class_logits", "lesion_prob"],
                             {"image": np.ascontiguousarray(x, np.float32), "tta_alpha": np.zeros(1, np.float32)})
        logits.append(lg)
        probs.append(lp[:, 0])
        masks += [v[1].astype(bool) for v in views]
        kinds += [v[6] for v in views]
    return {"logits": np.concatenate(logits), "prob": np.concatenate(probs), "mask": np.stack(masks),
            "kind": np.asarray(kinds)}


def froc_for_shipped(folder: Path, seed: int = 0, n_exams: int | None = None, rows: int = 512, columns: int = 416,
                     workers: int = 2, write: bool = True) -> dict:
    """Add the FROC block to the card of already-trained weights in ``folder`` (no retraining).

    Re-renders the calibration and test exams of the training data set, runs the shipped ONNX,
    reuses the card's temperature, mask threshold and P(normal) gate (all fitted on calibration
    data at training time), and writes ``metrics.froc``; the weight files are only read. Returns
    the block plus the test IoU recomputed from the ONNX (a check that the splits match the card's).
    """
    import onnxruntime as ort

    from cds.contracts.cards import ModelCard
    from models.mammography.training.config import CARD_NAME, N_EXAMS, ONNX_NAME

    folder = Path(folder)
    n_exams = N_EXAMS if n_exams is None else n_exams
    card = ModelCard.read(folder / CARD_NAME)
    session = ort.InferenceSession(str(folder / ONNX_NAME), providers=["CPUExecutionProvider"])
    split = {name: _onnx_split(session, [i for i in range(n_exams) if i % 5 == k], seed, rows, columns, workers)
             for name, k in (("calibration", 3), ("test", 4))}
    temperature = float(card.calibration["temperature"])
    seg_t = float(card.metrics["lesion_mask_threshold"])
    gate = float(card.metrics["lesion_report_max_p_normal"])
    normal = MAMMO_CLASSES.index("normal")
    parts = [(s["prob"], s["mask"], s["kind"], cal.apply_temperature(s["logits"], temperature)[:, normal])
             for s in (split["calibration"], split["test"])]
    block = lesion_froc(parts[0], parts[1], seg_t, gate)
    block["scored"] = (f"shipped ONNX on re-rendered calibration/test splits ({n_exams} exams, seed {seed}), "
                       "added without retraining (issue 18)")
    if write:
        card.metrics["froc"] = block
        card.write(folder / CARD_NAME)
    return {"froc": block, "test_iou_recomputed": seg_scores(split["test"]["prob"], split["test"]["mask"], seg_t)[0]}
