"""Image preparation shared by training and the runtime (numpy only, no torch).

Training and inference must see identical inputs, so both call :func:`prepare_image`: orient to
the canonical chest-wall-left view, downsample to :data:`INPUT_SHAPE` by area averaging and
normalise intensities by robust percentiles (which also removes most vendor differences in bit
depth and offset). :func:`mask_to_source` undoes the geometry for masks and heatmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from skimage.transform import resize

from cds.contracts.errors import InputError

INPUT_SHAPE: tuple[int, int] = (256, 208)  # rows, columns fed to the network
MG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "for_presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "for_processing",
}


class MammoInputError(InputError):
    """A DICOM file cannot be used as a mammogram; the message names the file and the tag."""


@dataclass(frozen=True)
class MgImage:
    """Decoded pixels of one MG instance and the attributes the model needs."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    laterality: str
    view: str
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float] | None
    invert: bool  # True when higher stored values mean less attenuation (For Processing, LIN)
    pixels: np.ndarray


def _view_of(ds: pydicom.Dataset) -> str:
    view = str(getattr(ds, "ViewPosition", "") or "").upper()
    if not view and "ViewCodeSequence" in ds and len(ds.ViewCodeSequence):
        meaning = str(ds.ViewCodeSequence[0].get("CodeMeaning", "")).lower()
        view = "CC" if "cranio" in meaning else ("MLO" if "oblique" in meaning else "")
    return view


def read_mg(path: Path) -> MgImage:
    """Decode one MG instance (any transfer syntax pydicom/pylibjpeg can decode)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for broken files
        raise MammoInputError(f"{path}: not a readable DICOM file ({exc})") from exc
    for tag in ("SOPInstanceUID", "Rows", "Columns", "PixelData"):
        if tag not in ds:
            raise MammoInputError(f"{path}: missing required attribute {tag}")
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise MammoInputError(f"{path}: SamplesPerPixel must be 1 for MG, got {ds.SamplesPerPixel}")
    laterality = str(getattr(ds, "ImageLaterality", "") or getattr(ds, "Laterality", "") or "")
    if laterality not in ("L", "R"):
        raise MammoInputError(
            f"{path}: ImageLaterality (0020,0062) must be L or R, got {laterality!r}")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise MammoInputError(f"{path}: cannot decode PixelData (transfer syntax {ts}): {exc}") from exc
    if pixels.ndim != 2:
        raise MammoInputError(f"{path}: expected one 2-D frame, got pixel array shape {pixels.shape}")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    sign = int(getattr(ds, "PixelIntensityRelationshipSign", 1) or 1)
    invert = (photometric == "MONOCHROME1") != (sign == -1)
    spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
    return MgImage(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(getattr(ds, "SOPClassUID", "")),
        series_instance_uid=str(getattr(ds, "SeriesInstanceUID", "")),
        laterality=laterality,
        view=_view_of(ds),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
        invert=invert,
        pixels=pixels,
    )


def _area_downsample(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = a.shape
    fr, fc = rows / shape[0], cols / shape[1]
    if fr == int(fr) and fc == int(fc) and fr >= 1 and fc >= 1:
        fr, fc = int(fr), int(fc)
        return a.reshape(shape[0], fr, shape[1], fc).mean(axis=(1, 3))
    return resize(a, shape, order=1, anti_aliasing=fr > 1 or fc > 1, preserve_range=True)


def prepare_image(pixels: np.ndarray, laterality: str, invert: bool = False) -> np.ndarray:
    """Network input (float32, INPUT_SHAPE): chest wall left, area-downsampled, percentile-scaled."""
    a = np.asarray(pixels, dtype=np.float32)
    if laterality == "R":
        a = a[:, ::-1]
    a = _area_downsample(a, INPUT_SHAPE).astype(np.float32)
    if invert:
        a = a.max() - a
    lo, hi = np.percentile(a, [1.0, 99.5])
    a = (a - lo) / max(float(hi - lo), 1e-6)
    return np.clip(a, -0.5, 1.5).astype(np.float32)


def prepare_mask(mask: np.ndarray, laterality: str) -> np.ndarray:
    """A source-resolution ground-truth mask in network geometry (float32 0/1)."""
    m = np.asarray(mask, dtype=np.float32)
    if laterality == "R":
        m = m[:, ::-1]
    return (_area_downsample(m, INPUT_SHAPE) >= 0.5).astype(np.float32)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear-interpolation weights (pixel-centre aligned, edges clamped) as an (n_out, n_in) matrix."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (pos - i0).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(m, (np.arange(n_out), i1), w1)
    return m


def mask_to_source(prob: np.ndarray, laterality: str, rows: int, columns: int) -> np.ndarray:
    """A network-geometry probability map resampled (bilinear) to the source image's pixels.

    Done as two small matrix products (rows x h) @ map @ (w x columns): separable bilinear
    interpolation that stays fast for full-field 4096x3328 images.
    """
    p = np.asarray(prob, dtype=np.float32)
    if laterality == "R":
        p = p[:, ::-1]
    h, w = p.shape
    out = _interp_matrix(rows, h) @ p @ _interp_matrix(columns, w).T
    return np.ascontiguousarray(out, dtype=np.float32)
