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

from models.mammography.archive import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    MammoInputError,
    check_readable,
    decode_pixels,
    not_analysed_reason,
)
from models.mammography.breast_mask import breast_mask, chest_wall_right
from models.mammography.geometry import geometry

INPUT_SHAPE: tuple[int, int] = (256, 208)  # rows, columns fed to the network
# kept for callers that list the mammography classes; archive.READABLE_SOP_CLASSES is the full set
MG_SOP_CLASSES = {
    MG_FOR_PRESENTATION: "for_presentation",
    MG_FOR_PROCESSING: "for_processing",
}
__all__ = ["MammoInputError", "MgImage", "read_mg", "read_dataset", "prepare_image", "prepare_mask",
           "mask_to_source", "INPUT_SHAPE", "MG_SOP_CLASSES"]


@dataclass(frozen=True)
class MgImage:
    """Decoded pixels of one mammogram and the attributes the model needs."""

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
    laterality_source: str = "attribute"
    view_source: str = "attribute"
    chest_wall_right: bool | None = None  # None: the convention (right breast: chest wall right)

    @property
    def side(self) -> str:
        """'R' when the image must be mirrored into the canonical chest-wall-left geometry."""
        right = self.laterality == "R" if self.chest_wall_right is None else self.chest_wall_right
        return "R" if right else "L"


def read_dataset(path: Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    path = Path(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # pydicom raises several types for broken files
        raise MammoInputError(f"{path}: not a readable DICOM file ({exc})") from exc


def read_mg(path: Path, ds: pydicom.Dataset | None = None) -> MgImage:
    """Decode one mammogram (MG, DX or Secondary Capture MG; any transfer syntax pydicom and its
    decoder plugins read) with its laterality, view and chest-wall side (:mod:`geometry`)."""
    path = Path(path)
    ds = read_dataset(path) if ds is None or "PixelData" not in ds else ds
    for tag in ("SOPInstanceUID", "Rows", "Columns", "PixelData"):
        if tag not in ds:
            raise MammoInputError(f"{path}: missing required attribute {tag}")
    intent = check_readable(ds, path)
    reason = not_analysed_reason(ds)
    if reason is not None:
        raise MammoInputError(f"{path}: {reason[0]} ({reason[1]}); not read as a 2-D mammogram")
    pixels, invert = decode_pixels(ds, path, intent)
    geo = geometry(ds)
    lat, lat_src, chest_right = geo.laterality, geo.laterality_source, geo.chest_wall_right
    if chest_right is None or not lat:
        from_pixels = chest_wall_right(breast_mask(prepare_image(pixels, "L", invert)))
        chest_right = from_pixels if chest_right is None else chest_right
        if not lat and from_pixels is not None:
            lat, lat_src = ("R" if from_pixels else "L"), "pixels"
    if lat not in ("L", "R"):
        raise MammoInputError(
            f"{path}: laterality unknown: no ImageLaterality (0020,0062) or Laterality (0020,0060), "
            "no PatientOrientation (0020,0020), no L/R in the descriptions, and no chest-wall side "
            "visible in the pixels")
    spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
    return MgImage(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(getattr(ds, "SOPClassUID", "")),
        series_instance_uid=str(getattr(ds, "SeriesInstanceUID", "")),
        laterality=lat,
        view=geo.view,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
        invert=invert,
        pixels=pixels,
        laterality_source=lat_src,
        view_source=geo.view_source,
        chest_wall_right=chest_right,
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
