"""Ultrasound study model: lesion box, radiomics and deep features of one breast US study.

Runs on studies of modality US. Each image is read with pydicom (multi-frame: the middle frame;
colour: converted to luminance); the lesion box is the one given by the caller
(:meth:`UltrasoundModel.analyze_image`) or else found automatically. The result feeds the
recurrence model; this model itself makes no diagnosis.

A box from a Structured Report in the same study is not read yet: studies get the automatic box.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom

from cds.domain import StudyAnalysis, StudyInput, UltrasoundResult
from cds.registry import ModelUnavailable
from cds.settings import Settings
from models.cards import ModelCard
from models.ultrasound.deep import DeepEncoder, lesion_crop
from models.ultrasound.lesion import automatic_box, lesion_mask
from models.ultrasound.radiomics import radiomics_features

log = logging.getLogger(__name__)

ENCODER_NAME = "ultrasound-lesion-encoder"
DEFAULT_SPACING_MM = 0.2
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


def weights_dir(settings: Settings) -> Path:
    return (settings.models_dir / "ultrasound") if settings.models_dir is not None else SHIPPED_WEIGHTS


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

    def analyze(self, study: StudyInput, work_dir: Path, box: tuple[float, float, float, float] | None = None) -> StudyAnalysis:
        """Analyse the first US image of the study that has a usable lesion region."""
        errors: list[str] = []
        for record in sorted(study.instances, key=lambda r: str(r.path)):
            try:
                ds = pydicom.dcmread(record.path)
                image = grayscale_image(ds, record.path)
                spacing = pixel_spacing_mm(ds)
                if spacing is None:
                    log.warning("US instance %s: no physical spacing, assuming %.2f mm",
                                record.sop_instance_uid, DEFAULT_SPACING_MM)
                got_box, source, radiomics, deep = self.analyze_image(image, spacing, box)
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
            log.info("US study %s: lesion features from instance %s (%s box)",
                     study.study_instance_uid, record.sop_instance_uid, source)
            return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality="US",
                                 patient=study.patient, model=self.identity, work_dir=work_dir,
                                 ultrasound=result)
        raise ValueError(f"US study {study.study_instance_uid}: no analysable image ({'; '.join(errors) or 'no instances'})")


def load(settings: Settings) -> UltrasoundModel:
    directory = weights_dir(settings)
    card_path = directory / f"{ENCODER_NAME}.card.json"
    onnx_path = directory / f"{ENCODER_NAME}.onnx"
    if not card_path.exists() or not onnx_path.exists():
        raise ModelUnavailable(f"ultrasound encoder not found in {directory} (run `cds train` to build it)")
    return UltrasoundModel(ModelCard.read(card_path), card_path, onnx_path)
