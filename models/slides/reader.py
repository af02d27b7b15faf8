"""Open one DICOM whole-slide series with wsidicom and read it tile by tile.

The spool keeps instances as ``<spool>/<study>/<series>/<sop>.dcm``; a slide is one series of VL
Whole Slide Microscopy instances (one per pyramid level, maybe also label/overview images). We open
exactly the instance paths of that series, never a folder scan, and we never decode a whole level
except the lowest (tissue detection): everything above it is read one frame at a time, so memory
stays bounded whatever the slide's size. The reader counts the base-level frames it decodes, so the
tests and the benchmark can show that stage 2 touched only a few of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from skimage.filters import threshold_otsu

from cds.contracts.errors import InputError

log = logging.getLogger(__name__)

VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
STAGE1_UM_PER_PX = 2.0  # stage-1 (low magnification) pixel size we look for in the pyramid
STAGE2_UM_PER_PX = 1.0  # the tile encoder's input pixel size (base tiles are pooled to this)
TISSUE_MIN_FRACTION = 0.1  # a base tile is tissue when this much of it is tissue at the lowest level


class SlideReadError(InputError):
    """A slide cannot be read: names the file or attribute and what was expected."""


@dataclass(frozen=True)
class LevelInfo:
    index: int  # wsidicom level number (log2 of the downsample)
    downsample: int
    rows: int
    columns: int
    tile_rows: int
    tile_columns: int
    um_per_px: float
    sop_instance_uid: str
    path: Path


@dataclass
class SlideReader:
    """An opened slide: its levels (base first) and a counter of decoded base frames."""

    paths: list[Path]
    levels: list[LevelInfo]
    series_instance_uid: str
    study_instance_uid: str
    wsi: object  # wsidicom.WsiDicom
    base_tiles_read: int = 0
    other_tiles_read: int = 0
    _closed: bool = field(default=False, repr=False)

    @property
    def base(self) -> LevelInfo:
        return self.levels[0]

    @property
    def lowest(self) -> LevelInfo:
        return self.levels[-1]

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of the base level's frame grid: the analysis tile grid."""
        b = self.base
        return -(-b.rows // b.tile_rows), -(-b.columns // b.tile_columns)

    def level_near(self, um_per_px: float) -> LevelInfo:
        """The pyramid level whose pixel size is closest (in log scale) to ``um_per_px``."""
        return min(self.levels, key=lambda lv: abs(np.log(lv.um_per_px / um_per_px)))

    def read_frame(self, level: LevelInfo, row: int, col: int) -> np.ndarray:
        """One decoded frame (tile) of a level as RGB uint8, padded to the full tile size."""
        tile = self.wsi.read_tile(level.index, (col, row), as_array=True)  # type: ignore[attr-defined]
        if level.index == self.base.index:
            self.base_tiles_read += 1
        else:
            self.other_tiles_read += 1
        tile = np.asarray(tile)[..., :3]
        if tile.shape[0] != level.tile_rows or tile.shape[1] != level.tile_columns:
            pad = np.full((level.tile_rows, level.tile_columns, 3), 255, np.uint8)
            pad[: tile.shape[0], : tile.shape[1]] = tile
            tile = pad
        return tile

    def read_lowest(self) -> np.ndarray:
        """The whole lowest level as RGB uint8 (the only level ever read in full)."""
        lv = self.lowest
        if lv.rows * lv.columns > 8192 * 8192:
            raise SlideReadError(
                f"{lv.path}: lowest pyramid level is {lv.columns}x{lv.rows}; a thumbnail level of at "
                "most 8192x8192 is needed to find tissue without loading the slide"
            )
        img = self.wsi.read_region((0, 0), lv.index, (lv.columns, lv.rows), as_array=True)  # type: ignore[attr-defined]
        return np.asarray(img)[..., :3]

    def close(self) -> None:
        if not self._closed:
            self.wsi.close()  # type: ignore[attr-defined]
            self._closed = True

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _level_header(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for unreadable files
        raise SlideReadError(f"{path}: not a readable DICOM file ({exc})") from exc
    if str(ds.get("SOPClassUID", "")) != VL_WSI_SOP_CLASS:
        raise SlideReadError(
            f"{path}: SOP Class UID (0008,0016) is {ds.get('SOPClassUID', 'missing')}, "
            f"expected VL Whole Slide Microscopy Image Storage {VL_WSI_SOP_CLASS}"
        )
    for tag in ("TotalPixelMatrixRows", "TotalPixelMatrixColumns", "Rows", "Columns", "ImageType"):
        if tag not in ds:
            raise SlideReadError(f"{path}: required attribute {tag} is missing")
    return ds


def _pixel_spacing_mm(ds: pydicom.Dataset, path: Path) -> float:
    """The level's pixel size in mm: the mean of row and column spacing.

    Converters write anisotropic spacings when they are given a specimen size that does not match
    the image's aspect (OrthancWSIDicomizer computes spacing from --imaged-width/height); the model
    only needs the scale, so the mean is used and a large anisotropy is logged.
    """
    try:
        ps = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        dy, dx = float(ps[0]), float(ps[1])
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise SlideReadError(
            f"{path}: PixelSpacing missing from SharedFunctionalGroupsSequence > PixelMeasuresSequence"
        ) from exc
    if dy <= 0 or dx <= 0:
        raise SlideReadError(f"{path}: PixelSpacing {dy}\\{dx} mm; positive values expected")
    if abs(dy - dx) > 0.05 * max(dy, dx):
        log.warning("%s: anisotropic PixelSpacing %.6g/%.6g mm; using their mean", path.name, dy, dx)
    return (dy + dx) / 2.0


def _check_colour(path: Path, ds: pydicom.Dataset) -> None:
    if int(ds.get("SamplesPerPixel", 0)) != 3:
        raise SlideReadError(
            f"{path}: SamplesPerPixel (0028,0002) is {ds.get('SamplesPerPixel', 'missing')} "
            f"({ds.get('PhotometricInterpretation', '')}); the slide model needs a brightfield colour "
            "(3-sample RGB or YBR) slide"
        )


def _volume_instances(paths: list[Path]) -> list[tuple[Path, pydicom.Dataset]]:
    """The VOLUME instances of one series, largest level first, concatenation parts in order."""
    if not paths:
        raise SlideReadError("no instance paths given for the slide series")
    volume: list[tuple[Path, pydicom.Dataset]] = []
    series = set()
    for p in paths:
        ds = _level_header(Path(p))
        series.add(str(ds.SeriesInstanceUID))
        image_type = [str(v).upper() for v in ds.ImageType]
        if len(image_type) >= 3 and image_type[2] in ("LABEL", "OVERVIEW", "THUMBNAIL"):
            continue
        _check_colour(Path(p), ds)
        volume.append((Path(p), ds))
    if len(series) != 1:
        raise SlideReadError(f"slide instances span {len(series)} series; give the paths of one series")
    if not volume:
        raise SlideReadError("the series has no VOLUME (pyramid level) instances")
    volume.sort(key=lambda pd: (-int(pd[1].TotalPixelMatrixColumns), int(pd[1].get("InConcatenationNumber", 1) or 1)))
    return volume


def _levels(volume: list[tuple[Path, pydicom.Dataset]]) -> list[LevelInfo]:
    """One LevelInfo per pyramid level (the first focal plane / optical path of each).

    A level split into a concatenation (converters cap the instance size) is named by its first
    part: every part carries the whole level's total pixel matrix, and wsidicom joins the parts.
    """
    base_cols = int(volume[0][1].TotalPixelMatrixColumns)
    levels: list[LevelInfo] = []
    seen: set[int] = set()
    for p, ds in volume:
        cols = int(ds.TotalPixelMatrixColumns)
        down = max(1, round(base_cols / cols))
        if down in seen:  # another concatenation part, focal plane or optical path of a level
            continue
        seen.add(down)
        levels.append(
            LevelInfo(
                index=int(round(np.log2(down))),
                downsample=down,
                rows=int(ds.TotalPixelMatrixRows),
                columns=cols,
                tile_rows=int(ds.Rows),
                tile_columns=int(ds.Columns),
                um_per_px=_pixel_spacing_mm(ds, p) * 1000.0,
                sop_instance_uid=str(ds.SOPInstanceUID),
                path=p,
            )
        )
    return levels


def open_slide(paths: list[Path]) -> SlideReader:
    """Open the VOLUME instances of one slide series (label/overview instances are ignored).

    Only headers are read here; wsidicom then indexes the frames (no pixel data is decoded).
    """
    from wsidicom import WsiDicom

    volume = _volume_instances(paths)
    levels = _levels(volume)
    series_uid = str(volume[0][1].SeriesInstanceUID)
    try:
        wsi = WsiDicom.open([p for p, _ in volume])
    except Exception as exc:
        raise SlideReadError(f"wsidicom cannot open series {series_uid} ({volume[0][0]}): {exc}") from exc
    log.info("slide opened: series %s, %d levels", series_uid, len(levels))
    return SlideReader(
        paths=[p for p, _ in volume],
        levels=levels,
        series_instance_uid=series_uid,
        study_instance_uid=str(volume[0][1].StudyInstanceUID),
        wsi=wsi,
    )


def _saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation, (max - min) / max, straight from uint8 channel extremes.

    Same values as ``skimage.color.rgb2hsv(rgb)[..., 1]`` at a tenth of the cost (that computes
    hue and value too): this runs on every slide before anything else.
    """
    mx = rgb.max(axis=2)
    mn = rgb.min(axis=2)
    out = np.zeros(mx.shape, np.float64)
    np.divide(mx - mn, mx, out=out, where=mx > 0, casting="unsafe")
    return out


def tissue_tiles(reader: SlideReader) -> tuple[np.ndarray, np.ndarray]:
    """Tissue detection at the lowest level: Otsu on HSV saturation, then per base tile.

    Returns (fraction of each base tile that is tissue as a float32 grid, boolean tissue grid).
    Glass is grey-white (low saturation) and stained tissue is coloured, so saturation separates
    them without colour calibration.
    """
    low = reader.read_lowest()
    sat = _saturation(low)
    try:
        thr = threshold_otsu(sat)
    except ValueError:
        thr = 1.0
    thr = max(float(thr), 0.05)  # a blank slide has no bimodality: do not call noise tissue
    tissue = sat > thr
    rows, cols = reader.grid
    scale = reader.lowest.downsample / reader.base.downsample
    th = reader.base.tile_rows / scale
    tw = reader.base.tile_columns / scale
    if float(th).is_integer() and float(tw).is_integer() and tissue.shape[0] >= rows * th and tissue.shape[1] >= cols * tw:
        th_i, tw_i = int(th), int(tw)  # exact block grid: one vectorised mean
        block = tissue[: rows * th_i, : cols * tw_i].reshape(rows, th_i, cols, tw_i)
        frac = block.mean(axis=(1, 3)).astype(np.float32)
        return frac, frac >= TISSUE_MIN_FRACTION
    frac = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        y0, y1 = int(round(r * th)), int(round((r + 1) * th))
        for c in range(cols):
            x0, x1 = int(round(c * tw)), int(round((c + 1) * tw))
            cell = tissue[y0:y1, x0:x1]
            frac[r, c] = float(cell.mean()) if cell.size else 0.0
    return frac, frac >= TISSUE_MIN_FRACTION


def stage1_frame_span(reader: SlideReader) -> int:
    """How many base tiles one stage-1 frame spans along each axis (1 if patches straddle frames)."""
    lv = reader.level_near(STAGE1_UM_PER_PX)
    scale = lv.downsample // reader.base.downsample
    ph = reader.base.tile_rows // scale
    return max(1, lv.tile_rows // ph) if ph and lv.tile_rows % ph == 0 else 1


def stage1_patches(reader: SlideReader, tiles: list[tuple[int, int]]) -> tuple[np.ndarray, LevelInfo]:
    """Low-magnification patches (one per base tile) read frame by frame from the stage-1 level.

    Each stage-1 frame covers several base tiles; a frame is decoded once and split. Returns
    (N x h x w x 3 uint8 in the order of ``tiles``, the level used).
    """
    lv = reader.level_near(STAGE1_UM_PER_PX)
    scale = lv.downsample // reader.base.downsample
    ph, pw = reader.base.tile_rows // scale, reader.base.tile_columns // scale
    out = np.zeros((len(tiles), ph, pw, 3), np.uint8)
    if lv.tile_rows % ph or lv.tile_columns % pw:  # patches straddle frames: read each region
        for i, (r, c) in enumerate(tiles):
            region = reader.wsi.read_region((c * pw, r * ph), lv.index, (pw, ph), as_array=True)  # type: ignore[attr-defined]
            reader.other_tiles_read += 1
            out[i] = np.asarray(region)[..., :3]
        return out, lv
    by_frame: dict[tuple[int, int], list[int]] = {}
    for i, (r, c) in enumerate(tiles):
        y, x = r * ph, c * pw
        by_frame.setdefault((y // lv.tile_rows, x // lv.tile_columns), []).append(i)
    for (fr, fc), idxs in by_frame.items():
        frame = reader.read_frame(lv, fr, fc)
        for i in idxs:
            r, c = tiles[i]
            y, x = r * ph - fr * lv.tile_rows, c * pw - fc * lv.tile_columns
            out[i] = frame[y : y + ph, x : x + pw]
    return out, lv


def pool_to(tile: np.ndarray, factor: int) -> np.ndarray:
    """Area-average an RGB tile by an integer factor (uint8 in, uint8 out)."""
    if factor <= 1:
        return tile
    h, w = tile.shape[0] // factor, tile.shape[1] // factor
    n = factor * factor
    # integer sum of the factor x factor strided views, rounded half up: the same bytes as a
    # float mean + 0.5, several times faster (this runs on every stage-2 tile)
    t = tile[: h * factor, : w * factor]
    acc = np.full((h, w, 3), n // 2, np.uint32 if n > 257 else np.uint16)
    for dy in range(factor):
        for dx in range(factor):
            acc += t[dy::factor, dx::factor]
    return (acc // n).astype(np.uint8)


def stage2_tiles(reader: SlideReader, tiles: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """High-magnification tiles: base frames at the given grid positions.

    Returns (full-resolution base tiles N x H x W x 3, tiles pooled to the encoder's pixel size).
    """
    factor = max(1, int(round(STAGE2_UM_PER_PX / reader.base.um_per_px)))
    full = np.zeros((len(tiles), reader.base.tile_rows, reader.base.tile_columns, 3), np.uint8)
    if not tiles:
        return full, np.zeros((0, 1, 1, 3), np.uint8)
    pooled = np.zeros((len(tiles), reader.base.tile_rows // factor, reader.base.tile_columns // factor, 3), np.uint8)
    for i, (r, c) in enumerate(tiles):
        full[i] = reader.read_frame(reader.base, r, c)
        pooled[i] = pool_to(full[i], factor)
    return full, pooled
