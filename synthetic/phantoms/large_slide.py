"""A lazily built slide phantom of real size (e.g. 100k x 80k px) that is cheap to write and store.

Real lymph-node slides are 50k-150k pixels wide but mostly glass. This builder writes such a
slide as DICOM VL Whole Slide Microscopy instances (one per pyramid level, TILED_FULL, JPEG
baseline, 512-px tiles by default) without ever holding a level in memory:

* one tissue section of ``tissue_size`` pixels is rendered by the slide phantom
  (:func:`~synthetic.phantoms.slide_tissue.render_tissue`) and placed on the tile grid;
* every all-glass tile of a level shares one encoded JPEG frame (the same bytes repeated in the
  encapsulated Pixel Data), only the tiles that overlap the section are encoded from pixels;
* a level is written frame by frame: the header with pydicom (with an Extended Offset Table, so
  readers need not scan 30k fragments), then the Pixel Data items streamed after it.

100k x 80k at 512-px tiles is 30 576 base frames; the whole pyramid (down to about 1.5k px wide)
is about 40k frames and a few tens of MB, written in a few seconds. The section is placed at a
multiple of the coarsest level's tile footprint so every level sees it at integer positions.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import base_dataset, new_uid, save_dataset
from synthetic.phantoms.slide_dicom import (
    VL_WSI_SOP_CLASS,
    _set_dimensions,
    _set_functional_groups,
    _set_optical_path,
    _set_specimen,
    _set_wsm_image,
    _srgb_icc,
)
from synthetic.phantoms.slide_tissue import BASE_UM_PER_PX, render_tissue

LOWEST_MAX_WIDTH = 2048  # stop the pyramid once a level is at most this wide


class LargeSlideTruth(BaseModel):
    """Where a large phantom is and what it holds."""

    study_instance_uid: str
    series_instance_uid: str
    level_paths: list[Path]  # base first
    level_shapes: list[tuple[int, int]]  # (rows, columns) per level
    tile: int
    um_per_px: float
    tissue_box: tuple[int, int, int, int]  # (x, y, width, height) of the section, base pixels
    has_metastasis: bool
    frames: int  # all levels together
    bytes_written: int


def _jpeg(tile: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(tile, "RGB").save(buf, format="JPEG", quality=90, subsampling=1, optimize=True)
    data = buf.getvalue()
    return data + b"\x00" if len(data) % 2 else data


def _downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return rgb
    h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
    a = rgb[: h * factor, : w * factor].reshape(h, factor, w, factor, 3).astype(np.uint32)
    return ((a.sum(axis=(1, 3)) + factor * factor // 2) // (factor * factor)).astype(np.uint8)


def _level_frames(shape: tuple[int, int], tile: int, section: np.ndarray, at: tuple[int, int],
                  glass: np.ndarray) -> tuple[list[bytes], int]:
    """The frames of one level in TILED_FULL order: shared glass bytes, tissue tiles encoded.

    Returns (frames, number of distinct encoded tiles). ``at`` is the section's (x, y) on the level.
    """
    rows, cols = shape
    gy, gx = -(-rows // tile), -(-cols // tile)
    blank = np.empty((tile, tile, 3), np.uint8)
    blank[:] = glass
    glass_bytes = _jpeg(blank)
    x0, y0 = at
    sh, sw = section.shape[:2]
    frames: list[bytes] = [glass_bytes] * (gy * gx)
    encoded = 1
    for ty in range(y0 // tile, min(gy, -(-(y0 + sh) // tile))):
        for tx in range(x0 // tile, min(gx, -(-(x0 + sw) // tile))):
            t = blank.copy()
            ys, xs = max(y0, ty * tile), max(x0, tx * tile)
            ye, xe = min(y0 + sh, (ty + 1) * tile, rows), min(x0 + sw, (tx + 1) * tile, cols)
            if ye <= ys or xe <= xs:
                continue
            t[ys - ty * tile : ye - ty * tile, xs - tx * tile : xe - tx * tile] = section[ys - y0 : ye - y0, xs - x0 : xe - x0]
            frames[ty * gx + tx] = _jpeg(t)
            encoded += 1
    return frames, encoded


def _write_frames(ds: Dataset, path: Path, frames: list[bytes]) -> int:
    """Write ``ds`` (no Pixel Data) then stream ``frames`` as encapsulated Pixel Data items."""
    offsets, pos = [], 0
    for f in frames:
        offsets.append(pos)
        pos += 8 + len(f)
    ds.NumberOfFrames = len(frames)
    ds.ExtendedOffsetTable = struct.pack(f"<{len(frames)}Q", *offsets)
    ds.ExtendedOffsetTableLengths = struct.pack(f"<{len(frames)}Q", *[len(f) for f in frames])
    save_dataset(ds, path, transfer_syntax=JPEGBaseline8Bit)
    with open(path, "ab") as fh:
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # (7FE0,0010) OB, undefined length
        fh.write(b"\xfe\xff\x00\xe0\x00\x00\x00\x00")  # empty Basic Offset Table item
        for f in frames:
            fh.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(f)))
            fh.write(f)
        fh.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # sequence delimiter
    return path.stat().st_size


def _level_header(common: dict, *, sop_uid: str, index: int, shape: tuple[int, int], tile: int,
                  um: float, raw_ratio: float) -> Dataset:
    ds = base_dataset(common["patient"], common["study_uid"], common["series_uid"], VL_WSI_SOP_CLASS,
                      "SM", series_number=1, instance_number=index + 1, sop_instance_uid=sop_uid,
                      model_name="large slide phantom")
    ds.SeriesDescription = "Synthetic H&E lymph node, large (phantom)"
    image_type = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if index == 0 else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    ds.ImageType = image_type
    ds.FrameOfReferenceUID = common["for_uid"]
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.AcquisitionContextSequence = []
    ds.AcquisitionDateTime = ds.StudyDate + "090000"
    ds.AcquisitionDuration = 60.0
    mm = um / 1000.0
    _set_wsm_image(ds, shape[0], shape[1], tile, mm)
    _set_functional_groups(ds, mm, image_type)
    _set_dimensions(ds, common["dim_org_uid"])
    _set_optical_path(ds, common["icc"])
    _set_specimen(ds, common["container_id"], common["specimen_uid"])
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = round(raw_ratio, 2)
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return ds


def _make_sparse(ds: Dataset, frames: list[bytes], shape: tuple[int, int], tile: int, mm: float) -> list[bytes]:
    """Keep the frames that are not the shared glass frame; give each its Plane Position (Slide)."""
    glass = max(set(frames), key=frames.count) if frames else None
    if glass is not None and frames.count(glass) < 2:  # no shared glass frame: keep every tile
        glass = None
    gx = -(-shape[1] // tile)
    kept, items = [], []
    for n, f in enumerate(frames):
        if f is glass:
            continue
        r, c = (n // gx) * tile, (n % gx) * tile
        pos = Dataset()
        pos.ColumnPositionInTotalImagePixelMatrix = c + 1
        pos.RowPositionInTotalImagePixelMatrix = r + 1
        # ImageOrientationSlide (0,-1,0,-1,0,0) from the origin (20, 40) mm of _set_wsm_image
        pos.XOffsetInSlideCoordinateSystem = round(20.0 - r * mm, 6)
        pos.YOffsetInSlideCoordinateSystem = round(40.0 - c * mm, 6)
        pos.ZOffsetInSlideCoordinateSystem = 0.0
        item = Dataset()
        item.PlanePositionSlideSequence = [pos]
        items.append(item)
        kept.append(f)
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds.PerFrameFunctionalGroupsSequence = items
    return kept


def _pyramid_shapes(width: int, height: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    while shapes[-1][1] > LOWEST_MAX_WIDTH:
        shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    return shapes


class _Layout(BaseModel):
    shapes: list[tuple[int, int]]
    x: int
    y: int
    tissue_size: int


def _layout(width: int, height: int, tile: int, tissue_size: int) -> _Layout:
    shapes = _pyramid_shapes(width, height)
    coarsest = 2 ** (len(shapes) - 1)
    step = tile * coarsest  # the section's position is a multiple of the coarsest tile footprint
    if tissue_size % coarsest or tissue_size > min(width, height):
        raise ValueError(f"tissue_size {tissue_size} must be a multiple of {coarsest} and fit the slide")
    x = max(0, (width // 2 - tissue_size // 2) // step * step)
    y = max(0, (height // 2 - tissue_size // 2) // step * step)
    return _Layout(shapes=shapes, x=x, y=y, tissue_size=tissue_size)


def pyramid_frames(width: int, height: int, *, tile: int = 512, tissue_size: int = 2048, seed: int = 0,
                   metastasis: bool = True) -> Iterator[tuple[tuple[int, int], list[bytes]]]:
    """Per level (base first): its (rows, columns) and JPEG frames in row-major tile order."""
    lay = _layout(width, height, tile, tissue_size)
    rgb, _, _ = render_tissue(seed, tissue_size, metastasis, False)
    glass = rgb[0, 0].copy()
    for i, shape in enumerate(lay.shapes):
        d = 2**i
        frames, _ = _level_frames(shape, tile, _downsample(rgb, d), (lay.x // d, lay.y // d), glass)
        yield shape, frames


def write_large_tiff(path: Path, width: int, height: int, *, tile: int = 512, tissue_size: int = 2048,
                     seed: int = 0, metastasis: bool = True, um_per_px: float = BASE_UM_PER_PX) -> Path:
    """The same slide as a tiled pyramidal TIFF (one page per level, JPEG YCbCr 4:2:2 tiles), as a
    scanner export that a lab converts to DICOM (e.g. with OrthancWSIDicomizer). Needs tifffile
    and imagecodecs (test extra); the JPEG tiles are written as they are, never re-encoded."""
    import tifffile

    res = 10_000.0 / um_per_px  # pixels per cm
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, (shape, frames) in enumerate(pyramid_frames(width, height, tile=tile, tissue_size=tissue_size,
                                                            seed=seed, metastasis=metastasis)):
            tw.write(iter(frames), shape=(*shape, 3), dtype=np.uint8, tile=(tile, tile), photometric="ycbcr",
                     subsampling=(2, 1), compression="jpeg", subfiletype=0 if i == 0 else 1,
                     resolution=(res / 2**i, res / 2**i), resolutionunit="CENTIMETER")
    return Path(path)


def generate_large_slide(out_dir: Path, patient: PatientRef, *, width: int = 100_000,
                         height: int = 80_000, tile: int = 512, tissue_size: int = 2048,
                         seed: int = 0, metastasis: bool = True, sparse: bool = False,
                         study_uid: str | None = None) -> LargeSlideTruth:
    """Write a ``width`` x ``height`` slide (one file per level) with one rendered tissue section.

    ``sparse`` writes TILED_SPARSE instead: only the tiles that hold tissue, each with its Plane
    Position (Slide), as scanners that skip empty glass do.
    """
    lay = _layout(width, height, tile, tissue_size)
    key = f"large-slide/{seed}/{width}x{height}/{tile}/{tissue_size}/{int(metastasis)}"
    study_uid = study_uid or new_uid(key + "/study")
    common = dict(patient=patient, study_uid=study_uid, series_uid=new_uid(f"{key}/{study_uid}/series"),
                  for_uid=new_uid(f"{key}/{study_uid}/for"), dim_org_uid=new_uid(f"{key}/{study_uid}/dimorg"),
                  specimen_uid=new_uid(f"{key}/{study_uid}/specimen"), container_id=f"LG-{seed:06d}",
                  icc=_srgb_icc())
    out_dir = Path(out_dir)
    paths, frames_total, size = [], 0, 0
    levels = pyramid_frames(width, height, tile=tile, tissue_size=tissue_size, seed=seed, metastasis=metastasis)
    for i, (shape, frames) in enumerate(levels):
        raw = len(frames) * tile * tile * 3 / max(1, sum(len(f) for f in frames))
        sop = new_uid(f"{key}/{study_uid}/level{i}")
        ds = _level_header(common, sop_uid=sop, index=i, shape=shape, tile=tile,
                           um=BASE_UM_PER_PX * 2**i, raw_ratio=raw)
        if sparse:
            frames = _make_sparse(ds, frames, shape, tile, BASE_UM_PER_PX * 2**i / 1000.0)
        path = out_dir / f"level{i}_{sop}.dcm"
        size += _write_frames(ds, path, frames)
        paths.append(path)
        frames_total += len(frames)
    return LargeSlideTruth(
        study_instance_uid=study_uid, series_instance_uid=common["series_uid"], level_paths=paths,
        level_shapes=lay.shapes, tile=tile, um_per_px=BASE_UM_PER_PX,
        tissue_box=(lay.x, lay.y, tissue_size, tissue_size), has_metastasis=metastasis,
        frames=frames_total, bytes_written=size,
    )
