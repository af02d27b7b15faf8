"""Mammography runtime: the shipped ONNX model run by onnxruntime (no torch).

``load(settings)`` finds ``mammography.onnx`` and ``card.json`` (``settings.models_dir`` /
``mammography`` or ``settings.models_dir`` itself, else the shipped ``weights`` folder), checks the
weights against the card (:func:`models.weights.load_weights`), and returns a :class:`MammographyModel`. ``analyze`` decodes each
MG instance of the study, pairs each image with its contralateral image of the same view (the
network's second channel), runs the 4 views as one batch (so test-time adaptation, when
``settings.tta`` is on, adapts normalization statistics to this exam), applies the card's
temperature and operating threshold, and turns the lesion probability map into masks at SOURCE
resolution, polygons and boxes in source pixel coordinates. Unless switched off, the cross-modal
alignment model (:mod:`models.crossmodal.runtime`) adds the most similar reference pathology
patches for every lesion of every in-domain image; enabled but missing, it stops this model from
loading (the registry then says which file is missing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cds.contracts.cards import ModelCard
from cds.contracts.domain import (
    MAMMO_CLASSES,
    ArrayFile,
    Calibrated,
    Lesion,
    MammographyResult,
    MammoImageFinding,
    NotAnalysed,
    SimilarPathology,
    StudyAnalysis,
    StudyInput,
)
from cds.contracts.errors import InvalidWeights, ModelUnavailable
from cds.contracts.settings import Settings
from models import calibration as cal
from models.crossmodal import runtime as crossmodal
from models.domain import load_domain
from models.mammography.breast_mask import breast_mask
from models.mammography.domain import image_check
from models.mammography.pairing import bilateral_input, contralateral_rows
from models.mammography.preprocess import (
    INPUT_SHAPE,
    MgImage,
    mask_to_source,
    prepare_image,
)
from models.mammography.study_images import study_images
from models.operating_points import resolve as resolve_operating_point
from models.sessions import cpu_session
from models.uids import derived_uid
from models.weights import load_weights, weights_dir

log = logging.getLogger(__name__)

ONNX_NAME = "mammography.onnx"
CARD_NAME = "card.json"


def load(settings: Settings) -> MammographyModel:
    """The mammography model, or :class:`ModelUnavailable` saying which file is missing/wrong."""
    folder = weights_dir(settings, "mammography", also_root_if_has=ONNX_NAME)
    weights = load_weights(folder, CARD_NAME, model="mammography", files=(ONNX_NAME,))
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailable(f"mammography model needs onnxruntime: {exc}") from exc
    card, card_path = weights.card, weights.card_path
    for key in ("temperature",):
        if key not in card.calibration:
            raise InvalidWeights(f"mammography card {card_path} lacks calibration.{key}")
    if "youden" not in card.thresholds:
        raise InvalidWeights(f"mammography card {card_path} lacks thresholds.youden")
    # after the mammography files: a site without them hears about those first
    evidence = crossmodal.load(settings)
    return MammographyModel(weights.path(ONNX_NAME), card, card_path, settings, evidence)


def exam_input(images: list[MgImage], study_uid: str | None = None) -> np.ndarray:
    """The network input for one study: each image with its contralateral image of the same view.

    Pairs are found by (view, laterality) in the study; an image whose other side is missing (a
    unilateral or incomplete exam) is paired with itself, as a share of training pairs were, and
    that is logged for ``study_uid``.
    """
    prepared = np.stack([prepare_image(im.pixels, im.side, im.invert) for im in images])
    contra = contralateral_rows([("", im.view, im.laterality) for im in images])
    unpaired = int((contra == np.arange(len(images))).sum())
    if unpaired and study_uid is not None:
        log.info("study %s: %d of %d MG images have no contralateral view; read self-paired",
                 study_uid, unpaired, len(images))
    return bilateral_input(prepared, prepared[contra])


class MammographyModel:
    """Classification, localization and grading of one MG study with onnxruntime."""

    modalities = frozenset({"MG"})

    def __init__(self, onnx_path: Path, card: ModelCard, card_path: Path, settings: Settings,
                 evidence: crossmodal.CrossModalEvidence | None = None) -> None:
        self._session = cpu_session(onnx_path, threads=2)
        self.card = card
        self.identity = card.identity(card_path)
        self.tta = bool(settings.tta)
        self.temperature = float(card.calibration["temperature"])
        self.operating_point = resolve_operating_point(card, settings, "mammography")
        self.threshold = self.operating_point.threshold
        self.domain = load_domain(card, Path(onnx_path).parent)
        self.grade_labels = [f"grade {g}" for g in card.outputs.get("grade_probs", {}).get("grades", [])]
        self._has_features = any(o.name == "features" for o in self._session.get_outputs())
        lp = card.outputs.get("lesion_prob", {})
        self.seg_threshold = float(lp.get("threshold", 0.5))
        self.min_pixels = int(lp.get("min_component_pixels", 12))
        # lesions are outlined only on images whose calibrated P(normal) is at most this (fitted on
        # calibration data); a card without the gate reports every image's components
        self.max_p_normal = float(lp.get("report_when_p_normal_at_most", 1.0))
        self.tta_alpha = float(card.inputs.get("tta_alpha", {}).get("with_settings_tta", 0.5))
        self.in_channels = int(self._session.get_inputs()[0].shape[1])
        self.evidence = evidence  # similar reference pathology; None when switched off

    # -- inference on arrays ---------------------------------------------------------------------

    def run_arrays(self, x: np.ndarray, tta: bool | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw ONNX outputs for prepared bilateral inputs ``x`` (n, 2, H, W): logits, lesion prob,
        grades. A model that reads one channel gets the first."""
        return self.run_outputs(x, tta)[:3]

    def run_outputs(self, x: np.ndarray, tta: bool | None = None) -> tuple:
        """:meth:`run_arrays` plus the pooled features (None when the ONNX lacks that output)."""
        use_tta = self.tta if tta is None else tta
        alpha = np.array([self.tta_alpha if use_tta else 0.0], np.float32)
        x = np.ascontiguousarray(x[:, : self.in_channels], np.float32)
        names = ["class_logits", "lesion_prob", "grade_probs"] + (["features"] if self._has_features else [])
        logits, lesion, grades, *feats = self._session.run(names, {"image": x, "tta_alpha": alpha})
        return logits, lesion[:, 0], grades, (feats[0] if feats else None)

    # -- study ---------------------------------------------------------------------------------

    def _images(self, study: StudyInput) -> tuple[list[MgImage], list[NotAnalysed]]:
        """The study's readable mammograms (MG, DX, Secondary Capture MG; For Processing only when
        no For Presentation exists) and the instances not analysed, with why
        (:mod:`models.mammography.study_images`)."""
        return study_images(study)

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis:
        work_dir = Path(work_dir)
        images, not_analysed = self._images(study)
        x = exam_input(images, study.study_instance_uid if self.in_channels == 2 else None)
        logits, lesion_prob, grade_probs, feats = self.run_outputs(x)
        probs = cal.apply_temperature(logits, self.temperature)
        contra = contralateral_rows([("", im.view, im.laterality) for im in images])
        findings = []
        for k, im in enumerate(images):
            # lesions only inside the breast: never on burned-in labels or markers
            breast = breast_mask(x[k, 0])
            findings.append(self._finding(im, probs[k], lesion_prob[k], grade_probs[k], work_dir,
                                          breast, paired=bool(contra[k] != k))
                            .model_copy(update={"domain": image_check(self.domain, im, None if feats is None else feats[k])}))
        exam_p = max(f.malignancy.probability for f in findings)
        result = MammographyResult(
            images=findings,
            exam_malignancy=Calibrated(probability=exam_p, threshold=self.threshold, threshold_name=self.operating_point.name,
                                       operating_point=self.operating_point),
            tta_applied=self.tta, grade_labels=self.grade_labels,
            not_analysed=not_analysed,
            similar_pathology=self._similar(images, findings, x, work_dir, study.study_instance_uid),
        )
        log.info("study %s: %d MG images analysed, exam malignancy %.3f", study.study_instance_uid,
                 len(findings), exam_p)
        return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality="MG",
                             patient=study.patient, model=self.identity, work_dir=work_dir,
                             mammography=result)

    def _similar(self, images: list[MgImage], findings: list[MammoImageFinding], x: np.ndarray,
                 work_dir: Path, study_uid: str) -> list[SimilarPathology]:
        """One :class:`SimilarPathology` per lesion of every in-domain image (``x[k, 0]`` is image
        k's network input, the image the alignment model was trained to crop)."""
        if self.evidence is None:
            return []
        out = []
        for k, (im, f) in enumerate(zip(images, findings)):
            if f.domain is not None and not f.domain.in_domain:
                if f.lesions:
                    log.info("study %s image %s: outside the training domain; no similar pathology for "
                             "its %d lesion(s)", study_uid, f.sop_instance_uid, len(f.lesions))
                continue
            out += [self.evidence.similar(x[k, 0], f, les, work_dir, im.side) for les in f.lesions]
        return out

    def _finding(self, im: MgImage, probs: np.ndarray, prob_map: np.ndarray, grades: np.ndarray,
                 work_dir: Path, breast: np.ndarray, paired: bool = True) -> MammoImageFinding:
        base = f"mammography/{im.sop_instance_uid}"
        mal = float(np.clip(probs[MAMMO_CLASSES.index("in_situ")] + probs[MAMMO_CLASSES.index("invasive")], 0, 1))
        heat = prob_map[:, ::-1] if im.side == "R" else prob_map
        heatmap = ArrayFile.save(work_dir, f"{base}/heatmap.npy", np.ascontiguousarray(heat, np.float32))
        # no outline on an image the model itself calls normal (the card's calibrated gate)
        normal_p = float(probs[MAMMO_CLASSES.index("normal")])
        src_breast = (mask_to_source(breast.astype(np.float32), im.side, im.rows, im.columns) >= 0.5)
        breast_file = ArrayFile.save(work_dir, f"{base}/breast_mask.npy", src_breast.astype(np.uint8))
        lesions = [] if normal_p > self.max_p_normal else self._lesions(
            im, np.where(breast, prob_map, 0.0).astype(np.float32), work_dir, base, src_breast)
        return MammoImageFinding(
            sop_instance_uid=im.sop_instance_uid,
            sop_class_uid=im.sop_class_uid,
            series_instance_uid=im.series_instance_uid,
            laterality=im.laterality if im.laterality in ("L", "R") else "",
            view=im.view,
            laterality_source=im.laterality_source,
            view_source=im.view_source,
            paired=paired,
            breast_mask=breast_file,
            rows=im.rows,
            columns=im.columns,
            pixel_spacing_mm=im.pixel_spacing_mm,
            class_probabilities={c: float(p) for c, p in zip(MAMMO_CLASSES, probs)},
            malignancy=Calibrated(probability=mal, threshold=self.threshold, threshold_name=self.operating_point.name,
                                  operating_point=self.operating_point),
            grade_probabilities=[float(g) for g in grades],
            lesions=lesions,
            heatmap=heatmap,
        )

    def _lesions(self, im: MgImage, prob_map: np.ndarray, work_dir: Path, base: str,
                 breast: np.ndarray) -> list[Lesion]:
        """Connected components of the thresholded map inside the breast, at source resolution."""
        from skimage.measure import find_contours, label, regionprops

        small = prob_map >= self.seg_threshold
        if not small.any():
            return []
        src = np.where(breast, mask_to_source(prob_map, im.side, im.rows, im.columns), 0.0)
        lab = label(src >= self.seg_threshold)
        min_src = self.min_pixels * (im.rows * im.columns) / float(INPUT_SHAPE[0] * INPUT_SHAPE[1])
        out: list[Lesion] = []
        for region in regionprops(lab, intensity_image=src):
            if region.area < min_src:
                continue
            n = len(out) + 1
            r0, c0, r1, c1 = region.bbox
            mask = np.zeros((im.rows, im.columns), np.uint8)
            mask[r0:r1, c0:c1] = region.image.astype(np.uint8)
            padded = np.pad(region.image.astype(np.uint8), 1)
            contours = find_contours(padded, 0.5)
            contour = max(contours, key=len) if contours else np.empty((0, 2))
            poly = [(float(c + c0 - 1), float(r + r0 - 1)) for r, c in contour]
            if poly and poly[0] != poly[-1]:
                poly.append(poly[0])
            area_mm2 = None
            if im.pixel_spacing_mm:
                area_mm2 = float(region.area * im.pixel_spacing_mm[0] * im.pixel_spacing_mm[1])
            out.append(Lesion(
                tracking_id=f"lesion-{n}",
                tracking_uid=derived_uid(f"{self.identity.device_uid}/{im.sop_instance_uid}/lesion/{n}"),
                box=(float(c0), float(r0), float(c1), float(r1)),
                polygon=poly,
                mask=ArrayFile.save(work_dir, f"{base}/lesion_{n}.npy", mask),
                score=float(np.clip(region.intensity_max, 0.0, 1.0)),
                area_mm2=area_mm2,
            ))
        return out
