"""DICOM Segmentation objects (highdicom): binary lesion masks for mammography, a fractional
attention / tumour-probability map for a slide, tiled to the slide's own frame grid.

One SEG per study and model; every segment carries the model's Algorithm Identification, a
tracking id and UID (the same as the SR's measurement group, so a viewer can link them), and the
object gets a Contributing Equipment item naming the algorithm (IHE AIR).
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from skimage.transform import resize

from cds.contracts.domain import NOT_FOR_CLINICAL_USE, StudyAnalysis
from cds.writers.common import (
    SERIES_NUMBER,
    add_contributing_equipment,
    algorithm_identification,
    derived_uid,
    read_headers,
)

log = logging.getLogger(__name__)

# highdicom builds a SEG from the whole total pixel matrix in memory (float32 per segment):
# 2**27 pixels is 512 MiB per segment, the most we allow on a small server.
MAX_SEG_PIXELS = 2**27

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


def slide_seg(analysis: StudyAnalysis, base_path: Path) -> hd.seg.Segmentation:
    """A FRACTIONAL (probability) SEG over the slide's base level, tiled like the source.

    The model's map is on a coarse grid; it is resampled (bilinear) to the base level's total
    pixel matrix and written with the source's tile size, so frame *i* of the SEG overlays
    frame *i* of the slide. Segment 1 is attention; segment 2 the tumour probability when present.
    """
    sl = analysis.slide
    if sl is None:
        raise ValueError(f"study {analysis.study_instance_uid}: no slide result to write as SEG")
    if sl.base_rows * sl.base_columns > MAX_SEG_PIXELS:
        raise ValueError(
            f"slide {sl.base_sop_instance_uid}: base level {sl.base_rows}x{sl.base_columns} is too large "
            f"for a full-resolution fractional SEG (limit {MAX_SEG_PIXELS} pixels); a SEG on a lower "
            "pyramid level is not available yet")
    source = read_headers([base_path])[0]
    if source.SOPInstanceUID != sl.base_sop_instance_uid:
        raise ValueError(f"{base_path} is SOP Instance {source.SOPInstanceUID}, expected the slide's "
                         f"base level {sl.base_sop_instance_uid}")
    maps = [("Attention", sl.attention_map)]
    if sl.tumour_probability_map is not None:
        maps.append(("Tumour probability", sl.tumour_probability_map))
    planes, descriptions = [], []
    for k, (label, af) in enumerate(maps, start=1):
        grid = af.load(analysis.work_dir).astype(np.float32)
        if grid.ndim != 2:
            raise ValueError(f"slide map {af.path} has shape {grid.shape}, expected 2-D")
        full = resize(grid, (sl.base_rows, sl.base_columns), order=1, preserve_range=True,
                      anti_aliasing=False)
        planes.append(np.clip(full, 0.0, 1.0).astype(np.float32))
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
    pixel_array = np.stack(planes, axis=-1)[None]  # (1, rows, cols, segments)
    key = f"{analysis.study_instance_uid}/{analysis.model.name}/{analysis.model.version}/sm-seg"
    seg = hd.seg.Segmentation(
        source_images=[source],
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
        tile_size=(sl.tile_columns, sl.tile_rows),
        # TILED_SPARSE: per-frame Plane Position (Slide) for every tile. TILED_FULL would be
        # smaller but dciodvfy 2022 (Debian 12) still demands the per-frame sequences for SEG.
        dimension_organization_type=hd.DimensionOrganizationTypeValues.TILED_SPARSE,
        omit_empty_frames=False,
    )
    add_contributing_equipment(seg, [analysis.model], analysis.created_at)
    seg.PatientOrientation = ""  # Type 2C; slide images use the slide coordinate system
    return seg


def save(seg: hd.seg.Segmentation, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path
