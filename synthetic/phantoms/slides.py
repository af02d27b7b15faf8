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

Split by what each part does: :mod:`~synthetic.phantoms.slide_tissue` draws the tissue and the
tumour mask, :mod:`~synthetic.phantoms.slide_dicom` writes a pyramid level as a WSM instance;
this module ties them together and re-exports the public names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from pydicom.uid import JPEGBaseline8Bit

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import new_uid, save_dataset
from synthetic.phantoms.slide_dicom import (
    MIN_LEVEL_SIZE,
    VL_WSI_SOP_CLASS,
    _level_dataset,
    _pyramid,
    _srgb_icc,
)
from synthetic.phantoms.slide_tissue import BASE_UM_PER_PX, render_tissue

__all__ = [
    "BASE_UM_PER_PX", "MASK_DOWNSAMPLE", "MIN_LEVEL_SIZE", "OCCULT_MAX_UM", "VL_WSI_SOP_CLASS",
    "SlideTruth", "generate_slide", "render_tissue",
]

log = logging.getLogger(__name__)

MASK_DOWNSAMPLE = 8
OCCULT_MAX_UM = 200.0


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
