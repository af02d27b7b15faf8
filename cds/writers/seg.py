"""DICOM Segmentation objects (highdicom): binary lesion masks for mammography, a fractional
attention / tumour-probability map for a slide, on a bounded pyramid level and tiled like it.

One SEG per study and model; every segment carries the model's Algorithm Identification, a
tracking id and UID (the same as the SR's measurement group, so a viewer can link them), and the
object gets a Contributing Equipment item naming the algorithm (IHE AIR).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.contracts.domain import NOT_FOR_CLINICAL_USE, SlideResult, StudyAnalysis
from cds.contracts.errors import PermanentError
from cds.writers.common import (
    SERIES_NUMBER,
    add_contributing_equipment,
    algorithm_identification,
    derived_uid,
    read_headers,
)

log = logging.getLogger(__name__)

# highdicom builds a SEG from the whole total pixel matrix in memory (float32 per segment):
# 2**26 pixels is 256 MiB per segment, the most we allow on a small server. The slide runtime
# picks a map level under 2**24 (models.slides.runtime.MAP_LEVEL_MAX_PIXELS); this is the guard.
MAX_SEG_PIXELS = 2**26
# TILED_SPARSE: per-frame Plane Position (Slide) for every tile (the SEG is bounded, so a few
# hundred items at most); see docs/slides.md for the TILED_FULL check with dciodvfy.
SLIDE_SEG_DIMENSION_ORGANIZATION = hd.DimensionOrganizationTypeValues.TILED_SPARSE

# Segmented property codes (CID 7150 / 7151 families as used for AI findings).
_LESION_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
_LESION_TYPE = hd.sr.CodedConcept("4147007", "SCT", "Mass")
_TISSUE_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
_METASTASIS_TYPE = hd.sr.CodedConcept("14799000", "SCT", "Neoplasm, metastatic")


def _seg_description(analysis: StudyAnalysis) -> str:
    notice = f" {NOT_FOR_CLINICAL_USE}" if analysis.model.synthetic_trained else ""
    return f"{analysis.model.name} {analysis.model.version}{notice}"[:64]


def mammography_seg(analysis: StudyAnalysis, source_paths: dict[str, Path]) -> list[hd.seg.Segmentation]:
    """One binary SEG per source image that has lesions (a SEG references one image set).

    ``source_paths`` maps SOP Instance UID -> file of each source image. Segment *k* is the
    image's lesion *k* (same order as ``MammoImageFinding.lesions``).
    """
    mg = analysis.mammography
    if mg is None:
        raise ValueError(f"study {analysis.study_instance_uid}: no mammography result to write as SEG")
    out = []
    for n, img in enumerate(mg.images):
        if not img.lesions:
            continue
        if img.sop_instance_uid not in source_paths:
            raise ValueError(f"source image {img.sop_instance_uid} of study "
                             f"{analysis.study_instance_uid} not found among the study's files")
        src = read_headers([source_paths[img.sop_instance_uid]])
        masks = []
        descriptions = []
        for k, lesion in enumerate(img.lesions, start=1):
            m = lesion.mask.load(analysis.work_dir).astype(bool)
            if m.shape != (img.rows, img.columns):
                raise ValueError(f"lesion {lesion.tracking_id}: mask shape {m.shape} does not match "
                                 f"image {img.rows}x{img.columns}")
            masks.append(m)
            descriptions.append(hd.seg.SegmentDescription(
                segment_number=k,
                segment_label=f"Lesion {k}"[:64],
                segmented_property_category=_LESION_CATEGORY,
                segmented_property_type=_LESION_TYPE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_identification(analysis.model),
                tracking_uid=lesion.tracking_uid,
                tracking_id=lesion.tracking_id,
            ))
        pixel_array = np.stack(masks, axis=-1)[None]  # (frames=1, rows, cols, segments)
        key = f"{analysis.study_instance_uid}/{analysis.model.name}/{analysis.model.version}/seg"
        seg = hd.seg.Segmentation(
            source_images=src,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=derived_uid(key, "series"),
            series_number=SERIES_NUMBER["seg"],
            sop_instance_uid=derived_uid(key, img.sop_instance_uid),
            instance_number=n + 1,
            manufacturer=analysis.model.manufacturer[:64],
            manufacturer_model_name=analysis.model.name[:64],
            software_versions=analysis.model.version[:64],
            device_serial_number=analysis.model.device_uid[:64],
            content_description=_seg_description(analysis),
            content_label="LESIONS",
            series_description=f"AI lesion masks ({analysis.model.name})"[:64],
            omit_empty_frames=False,
        )
        add_contributing_equipment(seg, [analysis.model], analysis.created_at)
        # General Image: Patient Orientation is Type 2C (required without a Frame of Reference)
        seg.PatientOrientation = src[0].get("PatientOrientation", "")
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "FrameOfReferenceUID" not in seg and "PixelMeasuresSequence" in shared:
            # A projection mammogram has no Frame of Reference; highdicom then writes Pixel
            # Measures without Slice Thickness, which its own reader (segread) rejects. Without a
            # Frame of Reference the macro is not required (dciodvfy agrees) and the geometry is
            # that of the referenced source image, so drop it to keep the SEG readable.
            del shared.PixelMeasuresSequence
        out.append(seg)
    return out


def _bilinear(grid: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Resample ``grid`` to rows x cols (bilinear, pixel centres, mirrored at the edges), float32.

    The same values as ``skimage.transform.resize(order=1)`` (its default "reflect" mode mirrors
    about the edge sample) without its float64 copies: the map level may have 2**24 pixels.
    """
    def weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        if n_in > 1:
            x = np.abs(x)
            x = np.where(x > n_in - 1, 2 * (n_in - 1) - x, x)
        x = np.clip(x, 0, n_in - 1)
        i0 = np.floor(x).astype(np.intp)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (x - i0).astype(np.float32)

    r0, r1, wr = weights(grid.shape[0], rows)
    c0, c1, wc = weights(grid.shape[1], cols)
    g = grid.astype(np.float32)
    tmp = g[:, c0] * (1 - wc) + g[:, c1] * wc  # (grid rows, cols)
    return tmp[r0] * (1 - wr[:, None]) + tmp[r1] * wr[:, None]


def slide_map_on_level(grid: np.ndarray, sl: SlideResult, rows: int, cols: int) -> np.ndarray:
    """A map over the base level resampled onto a pyramid level of rows x cols pixels.

    A map on the base tile grid (the slide runtime's: one value per tile) has cell (r, c) over
    base pixels [r*tile_rows, (r+1)*tile_rows); the last row and column of tiles may run past the
    image, so the grid is stretched over the whole tiles and cropped to the level, which keeps
    every cell over the pixels it was computed from. A map of any other shape spans the level.
    """
    tile_grid = (-(-sl.base_rows // sl.tile_rows), -(-sl.base_columns // sl.tile_columns))
    if grid.shape != tile_grid:
        return np.clip(_bilinear(grid, rows, cols), 0.0, 1.0)
    sy, sx = rows / sl.base_rows, cols / sl.base_columns
    full_r = max(rows, int(round(grid.shape[0] * sl.tile_rows * sy)))
    full_c = max(cols, int(round(grid.shape[1] * sl.tile_columns * sx)))
    return np.clip(_bilinear(grid, full_r, full_c)[:rows, :cols], 0.0, 1.0)


def _slide_source(source: Dataset, sl: SlideResult) -> Dataset:
    """The level header highdicom builds the SEG from, with a Frame of Reference if it had none.

    The VL WSI IOD makes the Frame of Reference mandatory, but converters omit it (e.g.
    OrthancWSIDicomizer 1.1); highdicom then refuses a tiled SEG. The SEG then gets its own Frame
    of Reference UID, derived from the slide's series (all our SEGs of that slide share it), and
    the source's Total Pixel Matrix Origin and Image Orientation (Slide): the spatial mapping to
    the slide is still carried by the references to the source level, which the SEG matches
    pixel for pixel.
    """
    if "FrameOfReferenceUID" in source:
        return source
    src = copy.deepcopy(source)
    src.FrameOfReferenceUID = derived_uid(sl.series_instance_uid, "slide-frame-of-reference")
    src.PositionReferenceIndicator = "SLIDE_CORNER"
    if "ImageOrientationSlide" not in src:
        src.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    if "TotalPixelMatrixOriginSequence" not in src:
        origin = Dataset()
        origin.XOffsetInSlideCoordinateSystem = 0.0
        origin.YOffsetInSlideCoordinateSystem = 0.0
        src.TotalPixelMatrixOriginSequence = [origin]
    log.info("slide %s has no Frame of Reference UID; the SEG defines %s", sl.series_instance_uid,
             src.FrameOfReferenceUID)
    return src


def _slide_segments(analysis: StudyAnalysis, rows: int, cols: int) -> tuple[list[np.ndarray], list]:
    """The maps on the level's grid (float32 planes) and their segment descriptions."""
    sl = analysis.slide
    assert sl is not None
    maps = [("Attention", sl.attention_map)]
    if sl.tumour_probability_map is not None:
        maps.append(("Tumour probability", sl.tumour_probability_map))
    planes, descriptions = [], []
    for k, (label, af) in enumerate(maps, start=1):
        grid = af.load(analysis.work_dir).astype(np.float32)
        if grid.ndim != 2:
            raise ValueError(f"slide map {af.path} has shape {grid.shape}, expected 2-D")
        planes.append(slide_map_on_level(grid, sl, rows, cols))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=label,
            segmented_property_category=_TISSUE_CATEGORY,
            segmented_property_type=_METASTASIS_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_identification(analysis.model),
            tracking_uid=derived_uid(analysis.study_instance_uid, analysis.model.name, label),
            tracking_id=f"{label.lower().replace(' ', '-')}-map",
        ))
    return planes, descriptions


def slide_seg(analysis: StudyAnalysis, level_path: Path) -> hd.seg.Segmentation:
    """A FRACTIONAL (probability) SEG of the slide's maps on one pyramid level, tiled like it.

    ``level_path`` is the level instance named by ``SlideResult.map_level_sop_instance_uid`` (the
    finest level under the runtime's size bound; the base level when that is empty). The maps
    (one value per base tile) are resampled to that level's total pixel matrix and written with
    its tile size, so frame *i* of the SEG overlays frame *i* of that level, and the SEG is
    bounded in size whatever the slide's. Segment 1 is attention; segment 2 the tumour probability.
    """
    sl = analysis.slide
    if sl is None:
        raise ValueError(f"study {analysis.study_instance_uid}: no slide result to write as SEG")
    expected = sl.map_level_sop_instance_uid or sl.base_sop_instance_uid
    source = read_headers([level_path])[0]
    if source.SOPInstanceUID != expected:
        raise ValueError(f"{level_path} is SOP Instance {source.SOPInstanceUID}, expected the slide's "
                         f"map level {expected}")
    rows, cols = int(source.TotalPixelMatrixRows), int(source.TotalPixelMatrixColumns)
    if rows * cols > MAX_SEG_PIXELS:  # the same slide fails the same way: dead-letter, no retry
        raise PermanentError(
            f"{level_path}: level {cols}x{rows} has more than {MAX_SEG_PIXELS} pixels; the SEG of a "
            "slide is written on a pyramid level under that bound (the slide has no such level)")
    planes, descriptions = _slide_segments(analysis, rows, cols)
    pixel_array = np.stack(planes, axis=-1)[None]  # (1, rows, cols, segments)
    del planes
    key = f"{analysis.study_instance_uid}/{analysis.model.name}/{analysis.model.version}/sm-seg"
    seg = hd.seg.Segmentation(
        source_images=[_slide_source(source, sl)],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid(key, "series"),
        series_number=SERIES_NUMBER["sm-seg"],
        sop_instance_uid=derived_uid(key, sl.base_sop_instance_uid),
        instance_number=1,
        manufacturer=analysis.model.manufacturer[:64],
        manufacturer_model_name=analysis.model.name[:64],
        software_versions=analysis.model.version[:64],
        device_serial_number=analysis.model.device_uid[:64],
        content_description=_seg_description(analysis),
        content_label="ATTENTION",
        series_description=f"AI attention map ({analysis.model.name})"[:64],
        tile_pixel_array=True,
        tile_size=(int(source.Columns), int(source.Rows)),
        dimension_organization_type=SLIDE_SEG_DIMENSION_ORGANIZATION,
        omit_empty_frames=False,
    )
    add_contributing_equipment(seg, [analysis.model], analysis.created_at)
    seg.PatientOrientation = ""  # Type 2C; slide images use the slide coordinate system
    return seg


def save(seg: hd.seg.Segmentation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path
