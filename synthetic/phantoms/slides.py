"""Seeded H&E-like lymph-node slide phantoms written as a DICOM VL Whole Slide Microscopy pyramid.

No real slides can be obtained here, so the slide models train and are tested on these. A phantom
is a lymph node section: lymphocyte-dense cortex with paler germinal centres (a benign mimic of
large nuclei), eosinophilic stroma bands and a capsule, on a white glass background. A metastatic
slide adds one or more clusters of large, pleomorphic, vesicular tumour nuclei in purple-pink
cytoplasm; an *occult* slide has a single cluster under 0.2 mm across (the hardest case for a
low-magnification screen). Pixels are made in optical-density space with the standard H&E stain
vectors (so colour deconvolution in :mod:`models.pathomics` recovers haematoxylin), then written
as one DICOM instance per pyramid level: TILED_FULL, JPEG baseline tiles, shared functional groups
with PixelSpacing, an sRGB ICC profile in the Optical Path, and a Specimen description, so that
wsidicom opens it and dciodvfy reports no errors.

Ground truth: the tumour mask (boolean) is saved as ``.npy`` at :data:`MASK_DOWNSAMPLE` times
below the base level, beside the DICOM files.

Slide-to-slide variation (added in the second version, to make calibration and test sets harder
and less separable): each slide draws, from its own random stream so a seed's tissue layout is
unchanged, a perturbed H&E stain matrix (each stain vector scaled component-wise by 0.9-1.1 and
renormalised), haematoxylin and eosin intensity gains (0.8-1.2), a background brightness
(235-250), a tumour cellularity of 0.25-0.5 nuclei per 16x16 px cell (the first version always
had 0.5) and a tumour nuclear size factor of 0.85-1.0. Coarse maps are upsampled with PIL's
bilinear resampler instead of a spline zoom (same shapes, about ten times faster), which lets the
benchmark render 16k-pixel slides.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms
from pydantic import BaseModel
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import JPEGBaseline8Bit
from scipy import ndimage as ndi

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import base_dataset, new_uid, save_dataset

log = logging.getLogger(__name__)

VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
BASE_UM_PER_PX = 0.5
MASK_DOWNSAMPLE = 8
MIN_LEVEL_SIZE = 512  # the lowest pyramid level is about this wide
OCCULT_MAX_UM = 200.0

# Optical densities of the pure stains (rows: haematoxylin, eosin, residual), as in
# skimage.color (Ruifrok & Johnston), so rgb2hed separates our phantoms cleanly.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)


class SlideTruth(BaseModel):
    """What a generated slide is and where its files are (the ground truth for training/tests)."""

    seed: int
    study_instance_uid: str
    series_instance_uid: str
    level_paths: list[Path]  # index 0 = base (highest resolution)
    level_sizes: list[int]  # square levels: width == height
    tile: int
    um_per_px: float  # at the base level
    has_metastasis: bool
    occult: bool
    cluster_diameters_um: list[float]
    tumour_mask_path: Path  # bool .npy, shape (size // MASK_DOWNSAMPLE,) * 2
    mask_downsample: int = MASK_DOWNSAMPLE


# ----------------------------------------------------------------------------------------------
# Tissue rendering
# ----------------------------------------------------------------------------------------------


def _upsample(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a small 2-D map to (out_h, out_w), pixel-centre aligned, edges clamped.

    PIL's float ("F" mode) resampler: linear in the output size and about ten times faster than a
    spline zoom, so rendering a 16k-pixel phantom stays affordable.
    """
    img = Image.fromarray(np.ascontiguousarray(a, np.float32), mode="F")
    return np.asarray(img.resize((out_w, out_h), Image.Resampling.BILINEAR), np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, coarse: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: random values on a coarse grid, upsampled smoothly."""
    grid = rng.standard_normal((coarse, coarse)).astype(np.float32)
    return np.clip(_upsample(grid, size, size) / 1.5, -1.5, 1.5)


def _blob(rng: np.random.Generator, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """A boolean, irregular blob (radius modulated by angular harmonics) inside a size x size grid.

    Only the blob's bounding window is computed, so a small cluster on a big slide stays cheap.
    """
    out = np.zeros((size, size), bool)
    reach = int(radius * 1.4) + 2
    y0, y1 = max(0, int(cy) - reach), min(size, int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(size, int(cx) + reach + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    r = np.hypot(dy, dx)
    mod = np.ones_like(theta)
    for k in (2, 3, 5):
        mod = mod + rng.uniform(0.03, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    out[y0:y1, x0:x1] = r <= radius * mod
    return out


def _stamps(radii: list[tuple[float, float]], angles: list[float]) -> list[np.ndarray]:
    """Offsets (dy, dx) of the pixels of filled ellipses: one rasterised stamp per shape."""
    out = []
    for (a, b), ang in zip(radii, angles):
        m = int(math.ceil(max(a, b))) + 1
        yy, xx = np.mgrid[-m : m + 1, -m : m + 1]
        c, s = math.cos(ang), math.sin(ang)
        u = (xx * c + yy * s) / a
        v = (-xx * s + yy * c) / b
        inside = u * u + v * v <= 1.0
        out.append(np.stack([yy[inside], xx[inside]], axis=1))
    return out


def _paint(
    target: np.ndarray,
    centres: np.ndarray,
    shapes: np.ndarray,
    stamps: list[np.ndarray],
    values: np.ndarray,
) -> None:
    """Write ``values[i]`` into ``target`` over stamp ``shapes[i]`` centred at ``centres[i]``."""
    h, w = target.shape
    for s_idx, stamp in enumerate(stamps):
        sel = shapes == s_idx
        if not sel.any():
            continue
        c = centres[sel]
        ys = (c[:, None, 0] + stamp[None, :, 0]).ravel()
        xs = (c[:, None, 1] + stamp[None, :, 1]).ravel()
        vals = np.repeat(values[sel], len(stamp))
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        target[ys[ok], xs[ok]] = vals[ok]


def _poisson_points(rng: np.random.Generator, density: np.ndarray, scale: int, mean_per_cell: float) -> np.ndarray:
    """Random points whose local rate follows ``density`` (a coarse map, one cell = scale px)."""
    counts = rng.poisson(np.clip(density, 0, None) * mean_per_cell)
    cy, cx = np.nonzero(counts)
    reps = counts[cy, cx]
    cy = np.repeat(cy, reps)
    cx = np.repeat(cx, reps)
    jitter = rng.uniform(0, scale, size=(len(cy), 2))
    return np.stack([cy * scale + jitter[:, 0], cx * scale + jitter[:, 1]], axis=1).astype(np.int64)


def render_tissue(
    seed: int, size: int, metastasis: bool, occult: bool
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Render one lymph-node section; returns (RGB uint8 HxWx3, tumour mask bool HxW, diameters in um)."""
    rng = np.random.default_rng(seed)
    # Slide-to-slide variation (stain batch, scanner, how cellular the metastasis is) has its own
    # stream, so the tissue layout of a seed is the same with or without it.
    vary = np.random.default_rng([seed, 1])
    stain = _RGB_FROM_HED * vary.uniform(0.9, 1.1, (3, 3)).astype(np.float32)
    stain /= np.linalg.norm(stain, axis=1, keepdims=True)
    h_gain, e_gain = vary.uniform(0.8, 1.2, 2)
    brightness = float(vary.uniform(235.0, 250.0))
    cellularity = float(vary.uniform(0.25, 0.5))  # tumour nuclei per 16x16 px cell (was 0.5)
    nucleus_scale = float(vary.uniform(0.85, 1.0))
    um = BASE_UM_PER_PX
    cell = 16  # coarse density grid cell, px
    n_cells = size // cell

    # Node outline (ellipse-ish blob), capsule band and internal structure at coarse resolution.
    c_yy, c_xx = np.mgrid[:n_cells, :n_cells]
    ry, rx = rng.uniform(0.36, 0.46, 2) * n_cells
    cy, cx = n_cells / 2 + rng.uniform(-0.04, 0.04, 2) * n_cells
    wobble = _smooth_noise(rng, n_cells, 6) * 0.08
    rad = np.hypot((c_yy - cy) / ry, (c_xx - cx) / rx) + wobble
    tissue_c = rad <= 1.0
    capsule_c = tissue_c & (rad > 0.93)
    stroma_c = capsule_c | (tissue_c & (np.abs(_smooth_noise(rng, n_cells, 5)) < 0.07))
    germinal_c = np.zeros_like(tissue_c)
    for _ in range(rng.integers(1, 4)):
        ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.75)
        gy, gx = cy + rr * ry * math.sin(ang), cx + rr * rx * math.cos(ang)
        germinal_c |= _blob(rng, n_cells, gy, gx, rng.uniform(0.06, 0.11) * n_cells)
    germinal_c &= tissue_c & ~stroma_c

    def up(a: np.ndarray) -> np.ndarray:
        """Coarse boolean map to full resolution with smooth (bilinear, thresholded) edges."""
        return _upsample(a, size, size) >= 0.5

    tissue = up(tissue_c)
    stroma = up(stroma_c) & tissue
    germinal = up(germinal_c) & tissue

    # Tumour clusters (full-resolution masks).
    tumour = np.zeros((size, size), bool)
    diameters: list[float] = []
    if metastasis:
        n = 1 if occult else int(rng.integers(1, 4))
        inner = np.argwhere(tissue_c & ~capsule_c)
        for _ in range(n):
            d_um = rng.uniform(80.0, 180.0) if occult else rng.uniform(250.0, 700.0)
            r_px = d_um / um / 2
            py, px = inner[rng.integers(len(inner))] * cell + cell // 2
            blob = _blob(rng, size, py, px, r_px) & tissue
            tumour |= blob
            diameters.append(float(d_um))

    # Eosin (stroma, cytoplasm) and haematoxylin (nuclei) concentrations.
    E = np.zeros((size, size), np.float32)
    low = _smooth_noise(rng, size, 24)
    E[tissue] = 0.16 + 0.04 * low[tissue]
    fibre = _upsample(rng.standard_normal((n_cells * 4, n_cells // 2)), size, size)
    E[stroma] = 0.36 + 0.08 * fibre[stroma]
    E[tumour] = 0.30 + 0.05 * low[tumour]
    H = np.zeros((size, size), np.float32)
    H[tissue] = 0.04
    H[tumour] = 0.10  # basophilic tinge of tumour cytoplasm

    # Lymphocytes: small, round, dark, dense; sparser in germinal centres and stroma.
    dens = np.where(stroma_c, 0.12, np.where(germinal_c, 0.35, 1.0)) * tissue_c
    lym = _poisson_points(rng, dens, cell, mean_per_cell=1.1)
    lym = lym[~tumour[np.clip(lym[:, 0], 0, size - 1), np.clip(lym[:, 1], 0, size - 1)]]
    lym_radii = [(r, r * rng.uniform(0.85, 1.0)) for r in (5.5, 6.0, 6.5, 7.0)]
    lym_st = _stamps(lym_radii, list(rng.uniform(0, np.pi, 4)))
    _paint(H, lym, rng.integers(0, len(lym_st), len(lym)), lym_st, rng.uniform(0.85, 1.1, len(lym)).astype(np.float32))

    # Germinal-centre cells (centroblasts/macrophages): medium, paler nuclei — a benign mimic.
    gc = _poisson_points(rng, germinal_c.astype(np.float32), cell, mean_per_cell=0.9)
    gc_st = _stamps([(9, 8), (10, 8), (8, 7)], list(rng.uniform(0, np.pi, 3)))
    _paint(H, gc, rng.integers(0, 3, len(gc)), gc_st, rng.uniform(0.45, 0.6, len(gc)).astype(np.float32))

    # Tumour nuclei: large, pleomorphic, vesicular (chromatin texture) and crowded.
    if tumour.any():
        ys, xs = np.nonzero(tumour.any(axis=1))[0], np.nonzero(tumour.any(axis=0))[0]
        y0, y1 = (ys[0] // cell) * cell, -(-(ys[-1] + 1) // cell) * cell
        x0, x1 = (xs[0] // cell) * cell, -(-(xs[-1] + 1) // cell) * cell
        box = tumour[y0:y1, x0:x1]  # tumour fraction per coarse cell, computed on its bounding box only
        t_cells = np.zeros((n_cells, n_cells), np.float32)
        t_cells[y0 // cell : y1 // cell, x0 // cell : x1 // cell] = box.reshape(
            box.shape[0] // cell, cell, box.shape[1] // cell, cell).mean(axis=(1, 3))
        tn = _poisson_points(rng, t_cells, cell, mean_per_cell=cellularity)
        tn = tn[tumour[np.clip(tn[:, 0], 0, size - 1), np.clip(tn[:, 1], 0, size - 1)]]
        shapes = [(rng.uniform(10, 15) * nucleus_scale, rng.uniform(7, 11) * nucleus_scale) for _ in range(10)]
        t_st = _stamps(shapes, list(rng.uniform(0, np.pi, 10)))
        _paint(H, tn, rng.integers(0, 10, len(tn)), t_st, rng.uniform(0.55, 0.8, len(tn)).astype(np.float32))
        grain = np.tile(rng.uniform(0.7, 1.3, (256, 256)).astype(np.float32), (size // 256 + 1, size // 256 + 1))[:size, :size]
        nuc_t = tumour & (H > 0.3)
        H[nuc_t] *= grain[nuc_t]

    H = ndi.gaussian_filter(H, 0.9)
    E = ndi.gaussian_filter(E, 0.9)
    H *= np.float32(h_gain)
    E *= np.float32(e_gain)

    rgb = np.empty((size, size, 3), np.uint8)
    noise = rng.normal(0, 3.0, (256, 256, 3)).astype(np.float32)
    for y0 in range(0, size, 512):
        h = H[y0 : y0 + 512, :, None]
        e = E[y0 : y0 + 512, :, None]
        od = h * stain[0] + e * stain[1] + 0.02
        strip = brightness * np.exp(-od * 2.3)
        nz = np.tile(noise, (strip.shape[0] // 256 + 1, size // 256 + 1, 1))[: strip.shape[0], :size]
        rgb[y0 : y0 + 512] = np.clip(strip + nz, 0, 255).astype(np.uint8)
    return rgb, tumour, diameters


# ----------------------------------------------------------------------------------------------
# DICOM VL Whole Slide Microscopy writer
# ----------------------------------------------------------------------------------------------


def _srgb_icc() -> bytes:
    """An sRGB ICC profile with its creation date and profile ID zeroed, so output is reproducible.

    (An all-zero profile ID means "not computed", which the ICC specification allows.)
    """
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[24:36] = bytes(12)
    icc[84:100] = bytes(16)
    return bytes(icc)


def _jpeg_frames(level: np.ndarray, tile: int) -> tuple[list[bytes], int]:
    """JPEG-baseline frames of ``level`` in TILED_FULL order (row of tiles by row), and raw bytes."""
    rows, cols = level.shape[:2]
    frames = []
    for ty in range(0, rows, tile):
        for tx in range(0, cols, tile):
            t = level[ty : ty + tile, tx : tx + tile]
            if t.shape[0] != tile or t.shape[1] != tile:  # pad the image edge with glass
                pad = np.full((tile, tile, 3), 245, np.uint8)
                pad[: t.shape[0], : t.shape[1]] = t
                t = pad
            buf = io.BytesIO()
            Image.fromarray(t, "RGB").save(buf, format="JPEG", quality=90, subsampling=1)
            frames.append(buf.getvalue())
    return frames, len(frames) * tile * tile * 3


def _level_dataset(
    *,
    patient: PatientRef,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    dim_org_uid: str,
    specimen_uid: str,
    container_id: str,
    sop_uid: str,
    level_index: int,
    level: np.ndarray,
    tile: int,
    um_per_px: float,
    icc: bytes,
) -> Dataset:
    rows, cols = level.shape[:2]
    ds = base_dataset(
        patient,
        study_uid,
        series_uid,
        VL_WSI_SOP_CLASS,
        "SM",
        series_number=1,
        instance_number=level_index + 1,
        sop_instance_uid=sop_uid,
        model_name="slide phantom",
    )
    ds.SeriesDescription = "Synthetic H&E lymph node (phantom)"
    image_type = (
        ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        if level_index == 0
        else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    )
    ds.ImageType = image_type
    # Frame of Reference / Acquisition Context
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.AcquisitionContextSequence = Sequence()
    ds.AcquisitionDateTime = ds.StudyDate + "090000"
    ds.AcquisitionDuration = 60.0
    # Whole Slide Microscopy Image
    mm = um_per_px / 1000.0
    ds.ImagedVolumeWidth = round(cols * mm, 6)
    ds.ImagedVolumeHeight = round(rows * mm, 6)
    ds.ImagedVolumeDepth = 4.0
    ds.TotalPixelMatrixColumns = cols
    ds.TotalPixelMatrixRows = rows
    ds.TotalPixelMatrixFocalPlanes = 1
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows = tile
    ds.Columns = tile
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.DimensionOrganizationType = "TILED_FULL"
    # Multi-frame Functional Groups (shared only: TILED_FULL needs no per-frame positions)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [round(mm, 9), round(mm, 9)]
    pm.SliceThickness = 0.004
    shared.PixelMeasuresSequence = Sequence([pm])
    ft = Dataset()
    ft.FrameType = image_type
    shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([ft])
    op_id = Dataset()
    op_id.OpticalPathIdentifier = "1"
    shared.OpticalPathIdentificationSequence = Sequence([op_id])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    # Multi-frame Dimension
    org = Dataset()
    org.DimensionOrganizationUID = dim_org_uid
    ds.DimensionOrganizationSequence = Sequence([org])
    dims = []
    for pointer in (0x0048021E, 0x0048021F):  # column, row position in total pixel matrix
        d = Dataset()
        d.DimensionOrganizationUID = dim_org_uid
        d.DimensionIndexPointer = pointer
        d.FunctionalGroupPointer = 0x0048021A  # Plane Position (Slide) Sequence
        dims.append(d)
    ds.DimensionIndexSequence = Sequence(dims)
    # Optical Path (brightfield, full spectrum, sRGB)
    ds.NumberOfOpticalPaths = 1
    op = Dataset()
    op.OpticalPathIdentifier = "1"
    op.OpticalPathDescription = "Brightfield"
    op.IlluminationTypeCodeSequence = Sequence([CodedConcept("111744", "DCM", "Brightfield illumination")])
    op.IlluminationColorCodeSequence = Sequence([CodedConcept("414298005", "SCT", "Full Spectrum")])
    op.ICCProfile = icc
    op.ColorSpace = "SRGB"
    op.ObjectiveLensPower = 20
    ds.OpticalPathSequence = Sequence([op])
    # Specimen
    ds.ContainerIdentifier = container_id
    ds.IssuerOfTheContainerIdentifierSequence = Sequence()
    ds.ContainerTypeCodeSequence = Sequence([CodedConcept("433466003", "SCT", "Microscope slide")])
    spec = Dataset()
    spec.SpecimenIdentifier = container_id + "-1"
    spec.SpecimenUID = specimen_uid
    spec.IssuerOfTheSpecimenIdentifierSequence = Sequence()
    spec.SpecimenShortDescription = "Lymph node section, H&E (synthetic)"
    spec.SpecimenPreparationSequence = Sequence()
    ds.SpecimenDescriptionSequence = Sequence([spec])
    # Pixel data
    frames, raw_bytes = _jpeg_frames(level, tile)
    ds.NumberOfFrames = len(frames)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = round(raw_bytes / max(1, sum(len(f) for f in frames)), 2)
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return ds


def _pyramid(rgb: np.ndarray) -> list[np.ndarray]:
    levels = [rgb]
    while levels[-1].shape[0] > MIN_LEVEL_SIZE and levels[-1].shape[0] % 2 == 0:
        a = levels[-1]
        h, w = a.shape[0] // 2, a.shape[1] // 2
        down = a.reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3))
        levels.append(((down + 2) // 4).astype(np.uint8))
    return levels


def generate_slide(
    out_dir: Path,
    seed: int,
    patient: PatientRef,
    *,
    study_uid: str | None = None,
    metastasis: bool | None = None,
    occult: bool = False,
    size: int = 4096,
    tile: int = 256,
) -> SlideTruth:
    """Render and write one slide phantom (one DICOM file per pyramid level) under ``out_dir``.

    ``metastasis=None`` draws it from the seed (about half positive). ``occult`` forces a single
    cluster under 0.2 mm (and implies a metastasis). Same seed, same pixels and UIDs.
    """
    if size % tile or size < MIN_LEVEL_SIZE:
        raise ValueError(f"slide size {size} must be a multiple of the tile size {tile} and >= {MIN_LEVEL_SIZE}")
    rng = np.random.default_rng(seed)
    if occult:
        metastasis = True
    elif metastasis is None:
        metastasis = bool(rng.random() < 0.5)
    rgb, tumour, diameters = render_tissue(seed, size, bool(metastasis), occult)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = f"slide-phantom/{seed}/{size}/{tile}/{int(bool(metastasis))}{int(occult)}"
    study_uid = study_uid or new_uid(key + "/study")
    series_uid = new_uid(f"{key}/{study_uid}/series")
    common = dict(
        patient=patient,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=new_uid(f"{key}/{study_uid}/for"),
        dim_org_uid=new_uid(f"{key}/{study_uid}/dimorg"),
        specimen_uid=new_uid(f"{key}/{study_uid}/specimen"),
        container_id=f"PH-{seed:06d}",
        tile=tile,
        icc=_srgb_icc(),
    )
    paths: list[Path] = []
    sizes: list[int] = []
    for i, level in enumerate(_pyramid(rgb)):
        um = BASE_UM_PER_PX * (2**i)
        sop = new_uid(f"{key}/{study_uid}/level{i}")
        ds = _level_dataset(sop_uid=sop, level_index=i, level=level, um_per_px=um, **common)
        paths.append(save_dataset(ds, out_dir / f"level{i}_{sop}.dcm", transfer_syntax=JPEGBaseline8Bit))
        sizes.append(int(level.shape[0]))
    mask_small = tumour.reshape(size // MASK_DOWNSAMPLE, MASK_DOWNSAMPLE, size // MASK_DOWNSAMPLE, MASK_DOWNSAMPLE).mean(axis=(1, 3)) >= 0.5
    # Keep tiny clusters visible in the downsampled truth.
    mask_small |= tumour[MASK_DOWNSAMPLE // 2 :: MASK_DOWNSAMPLE, MASK_DOWNSAMPLE // 2 :: MASK_DOWNSAMPLE]
    mask_path = out_dir / "tumour_mask.npy"
    np.save(mask_path, mask_small)
    log.info("slide phantom written: series %s, %d levels, metastasis=%s", series_uid, len(paths), metastasis)
    return SlideTruth(
        seed=seed,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        level_paths=paths,
        level_sizes=sizes,
        tile=tile,
        um_per_px=BASE_UM_PER_PX,
        has_metastasis=bool(metastasis),
        occult=occult,
        cluster_diameters_um=diameters,
        tumour_mask_path=mask_path,
    )
