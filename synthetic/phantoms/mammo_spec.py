"""What a mammography phantom is made of: its constants, simulated vendors and truth records.

Shared by :mod:`synthetic.phantoms.mammo_render` (which draws exams) and
:mod:`synthetic.phantoms.mammography` (which writes them as DICOM); see the latter for the
generator's description and labelling rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

LESION_TYPES: tuple[str, ...] = (
    "circumscribed_mass",
    "asymmetry",
    "calcifications",
    "spiculated_mass",
    "architectural_distortion",
)
LESIONS_FOR_LABEL: dict[str, tuple[str, ...]] = {
    "normal": (),
    "benign": ("circumscribed_mass", "asymmetry"),
    "in_situ": ("calcifications",),
    "invasive": ("spiculated_mass", "architectural_distortion"),
}
LABEL_FOR_LESION: dict[str, str] = {t: lab for lab, ts in LESIONS_FOR_LABEL.items() for t in ts}
N_GRADES = 4
# correlation of the left and right glandular fields of one view (see the module docstring)
BILATERAL_RHO = 0.8
DENSITY_FRACTION: dict[str, float] = {"A": 0.08, "B": 0.30, "C": 0.55, "D": 0.80}
VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))

# (code value, coding scheme, meaning) for the View Code Sequence
VIEW_CODES: dict[str, tuple[str, str, str]] = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}
# Patient Orientation (row direction, column direction) per laterality and view
PATIENT_ORIENTATION: dict[tuple[str, str], list[str]] = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}


@dataclass(frozen=True)
class Vendor:
    """One simulated acquisition domain. Pixel-size-dependent values are given at 1024 rows."""

    name: str
    bits_stored: int
    noise: float  # quantum-noise standard deviation (fraction of full scale) at 1024 rows
    gamma: float  # display transfer exponent
    blur: float  # detector blur, Gaussian sigma in pixels at 1024 rows
    contrast: float  # scale of tissue contrast
    heel: float  # strength of the anode heel-effect gradient
    offset: float  # background level (fraction of full scale)


VENDORS: dict[str, Vendor] = {
    "alpha": Vendor("alpha", 14, 0.010, 1.00, 0.6, 1.00, 0.00, 0.04),
    "bravo": Vendor("bravo", 12, 0.020, 0.80, 1.0, 0.90, 0.08, 0.08),
    "charlie": Vendor("charlie", 14, 0.015, 1.30, 0.8, 1.10, 0.04, 0.02),
    "delta": Vendor("delta", 12, 0.028, 1.10, 1.4, 0.80, 0.10, 0.06),
}


class ImageTruth(BaseModel):
    """Ground truth of one generated image."""

    model_config = ConfigDict(frozen=True)

    path: Path
    sop_instance_uid: str
    laterality: str
    view: str
    rows: int
    columns: int
    label: str
    grade: int
    lesion_type: str | None = None
    mask_path: Path | None = None  # uint8 (rows, columns) .npy; None for images without lesion
    for_processing_path: Path | None = None


class ExamTruth(BaseModel):
    """Ground truth of one generated 4-view exam."""

    model_config = ConfigDict(frozen=True)

    seed: int
    study_instance_uid: str
    vendor: str
    density: str
    exam_label: str
    lesion_laterality: str | None = None
    images: list[ImageTruth]

    @property
    def paths(self) -> list[Path]:
        return [i.path for i in self.images]


@dataclass(frozen=True)
class LesionSpec:
    """One lesion of an exam, in canonical fractional coordinates (x from the chest wall)."""

    kind: str
    aggressiveness: float
    depth: float  # x position as a fraction of the breast's extent from the chest wall
    size: float  # characteristic radius as a fraction of the image columns
    seed: int

    @property
    def label(self) -> str:
        return LABEL_FOR_LESION[self.kind]

    @property
    def grade(self) -> int:
        if self.label in ("normal", "benign"):
            return 0
        return 1 + min(2, int(3 * self.aggressiveness))


@dataclass
class RenderedView:
    """One rendered image: stored pixels, ground truth, acquisition facts."""

    laterality: str
    view: str
    pixels: np.ndarray  # uint16, display orientation (R mirrored), For Presentation
    mask: np.ndarray  # uint8 0/1, same shape
    label: str
    grade: int
    lesion_type: str | None
    vendor: Vendor


@dataclass
class RenderedExam:
    vendor: Vendor
    density: str
    exam_label: str
    lesion_laterality: str | None
    views: list[RenderedView]
