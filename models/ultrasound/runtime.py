"""Ultrasound study model: lesion box, radiomics and deep features of one breast US study.

Runs on studies of modality US. Each image is read with pydicom (multi-frame: the middle frame;
colour: converted to luminance). The lesion box is, in this order: the one given by the caller
(``box``, source "user"); a region drawn in a Structured Report of the same study on that image
(:mod:`models.ultrasound.sr_region`, source "sr"; the study's SRs arrive as
``StudyInput.companions``); else one found automatically. An image with an SR region is analysed
before the others, since the region says which image shows the lesion. The result feeds the
recurrence model; this model itself makes no diagnosis.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom

from cds.contracts.cards import ModelCard
from cds.contracts.domain import StudyAnalysis, StudyInput, UltrasoundResult
from cds.contracts.errors import InputError
from cds.contracts.settings import Settings
from models.ultrasound.deep import DeepEncoder, lesion_crop
from models.ultrasound.lesion import automatic_box, lesion_mask
from models.ultrasound.radiomics import radiomics_features
from models.ultrasound.sr_region import SRBox, sr_boxes
from models.weights import load_weights, shipped_dir
from models.weights import weights_dir as shared_weights_dir

log = logging.getLogger(__name__)

ENCODER_NAME = "ultrasound-lesion-encoder"
DEFAULT_SPACING_MM = 0.2
SHIPPED_WEIGHTS = shipped_dir("ultrasound")


def weights_dir(settings: Settings) -> Path:
    return shared_weights_dir(settings, "ultrasound")


def pixel_spacing_mm(ds: pydicom.Dataset) -> float | None:
    """Physical pixel size from the US region calibration (cm -> mm) or Pixel Spacing."""
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        if region.get("PhysicalUnitsXDirection") == 3 and region.get("PhysicalDeltaX"):
            return float(region.PhysicalDeltaX) * 10.0
    if "PixelSpacing" in ds:
        return float(ds.PixelSpacing[1])
    return None


def grayscale_image(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    """2-D grayscale pixels of a US instance (middle frame of a multi-frame, luminance of RGB)."""
    if "PixelData" not in ds:
        raise ValueError(f"{path}: no Pixel Data (7FE0,0010) in the ultrasound instance")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # decoder missing or corrupt data: say which file
        raise ValueError(f"{path}: cannot decode Pixel Data ({ds.file_meta.get('TransferSyntaxUID', '?')}): {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[frames // 2]
    if arr.ndim == 3:
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric.startswith("YBR"):
            arr = arr[..., 0]
        else:
            arr = arr[..., :3].astype(float) @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image after frame/colour handling, got shape {arr.shape}")
    return arr.astype(np.float32)


class UltrasoundModel:
    modalities = frozenset({"US"})

    def __init__(self, card: ModelCard, card_path: Path, onnx_path: Path) -> None:
        self.card = card
        self.identity = card.identity(card_path)
        self.encoder = DeepEncoder(onnx_path)

    def analyze_image(self, image: np.ndarray, spacing_mm: float | None,
                      box: tuple[float, float, float, float] | None = None,
                      box_source: str = "user") -> tuple[tuple[float, float, float, float], str, dict[str, float], list[float]]:
        """(box, box source, radiomics, deep features) of one grayscale image."""
        if box is None:
            box, box_source = automatic_box(image), "automatic"
        mask = lesion_mask(image, box)
        radiomics = radiomics_features(image, mask, spacing_mm or DEFAULT_SPACING_MM)
        deep = self.encoder.features(lesion_crop(image, box))
        return box, box_source, radiomics, deep

    def _sr_regions(self, study: StudyInput) -> dict[str, SRBox]:
        """SR-drawn boxes per image UID (empty when the study has no usable SR)."""
        if not study.companions:
            return {}
        shapes: dict[str, tuple[int, int]] = {}
        for record in study.instances:
            try:
                head = pydicom.dcmread(record.path, stop_before_pixels=True)
                shapes[record.sop_instance_uid] = (int(head.Rows), int(head.Columns))
            except Exception as exc:  # the image itself is reported (and skipped) by analyze
                log.debug("US instance %s: header unreadable for SR matching: %s", record.sop_instance_uid, exc)
        return sr_boxes(study.companions, shapes)

    def analyze(self, study: StudyInput, work_dir: Path, box: tuple[float, float, float, float] | None = None) -> StudyAnalysis:
        """Analyse the first US image of the study that has a usable lesion region.

        Images with an SR-drawn region come first; a region the lesion mask cannot use (too
        small, say) falls back to the automatic box for that image, and that is logged.
        """
        errors: list[str] = []
        regions = {} if box is not None else self._sr_regions(study)
        ordered = sorted(study.instances, key=lambda r: (r.sop_instance_uid not in regions, str(r.path)))
        for record in ordered:
            try:
                ds = pydicom.dcmread(record.path)
                image = grayscale_image(ds, record.path)
                spacing = pixel_spacing_mm(ds)
                if spacing is None:
                    log.warning("US instance %s: no physical spacing, assuming %.2f mm",
                                record.sop_instance_uid, DEFAULT_SPACING_MM)
                region = regions.get(record.sop_instance_uid)
                if box is not None:
                    got_box, source, radiomics, deep = self.analyze_image(image, spacing, box, "user")
                elif region is not None:
                    try:
                        got_box, source, radiomics, deep = self.analyze_image(image, spacing, region.box, "sr")
                    except ValueError as exc:
                        log.error("US instance %s: region from SR %s unusable (%s); automatic box used",
                                  record.sop_instance_uid, region.sr_sop_instance_uid, exc)
                        got_box, source, radiomics, deep = self.analyze_image(image, spacing, None)
                else:
                    got_box, source, radiomics, deep = self.analyze_image(image, spacing, None)
            except ValueError as exc:
                errors.append(f"{record.sop_instance_uid}: {exc}")
                continue
            result = UltrasoundResult(
                sop_instance_uid=record.sop_instance_uid,
                series_instance_uid=record.series_instance_uid,
                lesion_box=tuple(float(v) for v in got_box),
                box_source=source,
                radiomics=radiomics,
                deep_features=deep,
            )
            log.info("US study %s: lesion features from instance %s (%s box%s)",
                     study.study_instance_uid, record.sop_instance_uid, source,
                     f" from SR {region.sr_sop_instance_uid}" if source == "sr" and region else "")
            return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality="US",
                                 patient=study.patient, model=self.identity, work_dir=work_dir,
                                 ultrasound=result)
        raise InputError(f"US study {study.study_instance_uid}: no analysable image ({'; '.join(errors) or 'no instances'})")


def load(settings: Settings) -> UltrasoundModel:
    directory = weights_dir(settings)
    onnx_name = f"{ENCODER_NAME}.onnx"
    weights = load_weights(directory, f"{ENCODER_NAME}.card.json", model="ultrasound encoder",
                           files=(onnx_name,), hint="run `cds train synthetic` to build it")
    return UltrasoundModel(weights.card, weights.card_path, weights.path(onnx_name))
