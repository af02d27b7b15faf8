"""The mammography model's training-domain values for one image (numpy and pydicom only).

Training (:mod:`models.mammography.training.domain`) and the runtime compute the same values with
:func:`acquisition_values`, so the card's ranges and a live image are compared like for like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from models.domain import intensity_stats


def acquisition_values(pixels: np.ndarray, bits_stored: int | None,
                       pixel_spacing_mm: tuple[float, float] | None, *,
                       invert: bool = False) -> dict[str, float | None]:
    """Pixel spacing, bits stored, field of view, aspect ratio and intensity statistics.

    ``invert``: the stored values run the other way (MONOCHROME1, or a Pixel Intensity
    Relationship Sign that says so). The statistics are then those of the image as the model sees
    it after inversion, so a correctly displayed MONOCHROME1 or For Processing image is compared
    with the training range like for like instead of being flagged for its encoding.
    """
    rows, cols = int(pixels.shape[0]), int(pixels.shape[1])
    bits = int(bits_stored) if bits_stored else int(np.iinfo(pixels.dtype).bits) if pixels.dtype.kind in "ui" else None
    mean, std = intensity_stats(pixels, (1 << bits) - 1 if bits else max(float(np.max(pixels)), 1.0))
    if invert:  # (full - x) / full: the mean mirrors, the spread is unchanged
        mean = 1.0 - mean
    spacing = float(np.mean(pixel_spacing_mm)) if pixel_spacing_mm else None
    return {
        "pixel_spacing_mm": spacing,
        "bits_stored": float(bits) if bits else None,
        "field_of_view_rows_mm": rows * spacing if spacing else None,
        "field_of_view_columns_mm": cols * spacing if spacing else None,
        "aspect_ratio": rows / max(cols, 1),
        "intensity_mean": mean,
        "intensity_std": std,
    }


def bits_stored(path: Path) -> int | None:
    """Bits Stored (0028,0101) of a DICOM file, read from its header only."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["BitsStored"])
        return int(ds.BitsStored) if "BitsStored" in ds else None
    except Exception:  # the image itself was readable; an odd header only drops this check
        return None


def image_check(domain, image, features):  # noqa: ANN001 (DomainModel, MgImage, ndarray | None)
    """The :class:`DomainCheck` of one decoded MG image, or None when the card has no domain."""
    if domain is None:
        return None
    values = acquisition_values(image.pixels, bits_stored(image.path), image.pixel_spacing_mm,
                                invert=bool(getattr(image, "invert", False)))
    return domain.check(values, None if features is None else np.asarray(features)[None, :])
