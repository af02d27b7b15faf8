"""Lesion boxes drawn in a Structured Report of the same ultrasound study.

Why: the issue's lesion region is "a box given by the user or an SR, else an automatic one". A
sonographer (or a reporting tool) marks the lesion as a spatial coordinate (SCOORD) content item,
usually inside a TID 1500 Measurement Report Planar ROI group (TID 1410 "Image Region"), but
older tools put plain SCOORD items anywhere in the content tree. This module walks the whole tree
of every SR in :attr:`cds.contracts.domain.StudyInput.companions`, keeps 2-D SCOORD items whose selected
image (the IMAGE child, relationship SELECTED FROM) is one of the study's US images, and turns
each into an axis-aligned box ``(x0, y0, x1, y1)`` in pixel columns/rows.

Coordinates: DICOM 2-D SCOORD graphic data are (column, row) pairs in which the top-left corner
of the top-left pixel is (0, 0) (PS3.3 C.18.6.1.1), the same edge convention as our boxes, so
points are used as they are. Per graphic type:

* POLYLINE / POLYGON / MULTIPOINT: the bounding box of the points;
* CIRCLE: centre and one point on the perimeter -> centre +- radius;
* ELLIPSE: the end points of the major then the minor axis -> the ellipse's exact bounding box;
* POINT: a mark on the lesion with no extent -> a square of ``point_half_size_px`` around it
  (the lesion mask inside the box is then found as for any box).

A malformed SR (unreadable file, no content tree, wrong number of coordinates, a SCOORD with no
selected image, a region outside the image) is logged as an error that names the SR's SOP
Instance UID and what was wrong, and is skipped: it never sinks the study, the affected image
falls back to the automatic box. SRs this project wrote itself (AI results, recognised by the
Manufacturer) are ignored, so an echo of our own output is not taken for a human's region.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydantic import BaseModel
from pydicom.dataset import Dataset

from cds.contracts.domain import InstanceRecord, ModelIdentity

log = logging.getLogger(__name__)

# Manufacturer written into every SR this project produces (cds.writers.sr uses the identity's).
OWN_MANUFACTURER = ModelIdentity.model_fields["manufacturer"].default
POINT_HALF_SIZE_PX = 32.0
# Number of (column, row) pairs each graphic type needs: exact count, or a minimum (None = any).
_PAIRS: dict[str, tuple[int, bool]] = {
    "POINT": (1, True),
    "CIRCLE": (2, True),
    "ELLIPSE": (4, True),
    "MULTIPOINT": (1, False),
    "POLYLINE": (2, False),
    "POLYGON": (3, False),
}


class MalformedSRError(ValueError):
    """An SR's content cannot be read as a lesion region (the message says which item and why)."""


class SRBox(BaseModel):
    """A lesion box for one image, and where it came from (for the log and the result)."""

    sop_instance_uid: str  # the referenced US image
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 (pixel columns / rows)
    sr_sop_instance_uid: str
    graphic_type: str


def _content_items(items: Sequence[Dataset], path: str = "") -> Iterator[tuple[str, Dataset]]:
    """Every content item of a tree, depth first, with a readable position ("1.3.2")."""
    for k, item in enumerate(items, start=1):
        here = f"{path}.{k}" if path else str(k)
        yield here, item
        yield from _content_items(item.get("ContentSequence", []) or [], here)


def _selected_image(item: Dataset, where: str) -> str:
    """SOP Instance UID of the IMAGE item a SCOORD is SELECTED FROM."""
    for child in item.get("ContentSequence", []) or []:
        if child.get("ValueType") == "IMAGE":
            refs = child.get("ReferencedSOPSequence", []) or []
            if not refs or not refs[0].get("ReferencedSOPInstanceUID"):
                raise MalformedSRError(f"content item {where}: IMAGE item without a Referenced SOP Instance UID")
            return str(refs[0].ReferencedSOPInstanceUID)
    raise MalformedSRError(f"content item {where}: SCOORD has no IMAGE item it is SELECTED FROM")


def region_box(graphic_type: str, data: Sequence[float], where: str = "",
               point_half_size_px: float = POINT_HALF_SIZE_PX) -> tuple[float, float, float, float]:
    """Axis-aligned box of one SCOORD region (see the module docstring for each type)."""
    gtype = graphic_type.upper()
    if gtype not in _PAIRS:
        raise MalformedSRError(f"content item {where}: graphic type {graphic_type!r} is not a 2-D region type")
    values = np.asarray([float(v) for v in data], float)
    if values.size == 0 or values.size % 2 or not np.all(np.isfinite(values)):
        raise MalformedSRError(f"content item {where}: Graphic Data (0070,0022) must be finite "
                               f"(column, row) pairs, got {values.size} values")
    pts = values.reshape(-1, 2)
    need, exact = _PAIRS[gtype]
    if (exact and len(pts) != need) or (not exact and len(pts) < need):
        raise MalformedSRError(f"content item {where}: {gtype} needs {'exactly' if exact else 'at least'} "
                               f"{need} points, got {len(pts)}")
    if gtype == "POINT" or (gtype == "MULTIPOINT" and len(pts) == 1):
        (cx, cy), h = pts[0], point_half_size_px
        return cx - h, cy - h, cx + h, cy + h
    if gtype == "CIRCLE":
        r = float(np.hypot(*(pts[1] - pts[0])))
        (cx, cy) = pts[0]
        return cx - r, cy - r, cx + r, cy + r
    if gtype == "ELLIPSE":
        a = (pts[1] - pts[0]) / 2.0  # semi-major axis vector
        b = (pts[3] - pts[2]) / 2.0  # semi-minor axis vector
        cx, cy = (pts[0] + pts[1]) / 2.0
        ex, ey = float(np.hypot(a[0], b[0])), float(np.hypot(a[1], b[1]))
        return cx - ex, cy - ey, cx + ex, cy + ey
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def _clip(box: tuple[float, float, float, float], shape: tuple[int, int], where: str) -> tuple[float, float, float, float]:
    rows, cols = shape
    x0, y0, x1, y1 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], float(cols)), min(box[3], float(rows))
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise MalformedSRError(f"content item {where}: region {tuple(round(v, 1) for v in box)} is outside the "
                               f"{cols}x{rows} image or smaller than 4x4 pixels")
    return float(x0), float(y0), float(x1), float(y1)


def boxes_in_sr(ds: Dataset, image_shapes: Mapping[str, tuple[int, int]],
                point_half_size_px: float = POINT_HALF_SIZE_PX) -> list[SRBox]:
    """Every region of one SR dataset that refers to one of ``image_shapes`` (UID -> (rows, cols)).

    Raises :class:`MalformedSRError` at the first malformed SCOORD item, so that a partly broken
    report is not half used.
    """
    sr_uid = str(ds.get("SOPInstanceUID", "?"))
    content = ds.get("ContentSequence")
    if not content:
        raise MalformedSRError("no Content Sequence (0040,A730): not a readable SR document")
    found: list[SRBox] = []
    for where, item in _content_items(content):
        if item.get("ValueType") != "SCOORD":
            continue
        gtype = str(item.get("GraphicType", ""))
        if not gtype:
            raise MalformedSRError(f"content item {where}: SCOORD without Graphic Type (0070,0023)")
        if "GraphicData" not in item:
            raise MalformedSRError(f"content item {where}: SCOORD without Graphic Data (0070,0022)")
        data = item.GraphicData
        data = [data] if isinstance(data, (int, float)) else list(data)
        image_uid = _selected_image(item, where)
        box = region_box(gtype, data, where, point_half_size_px)
        if image_uid not in image_shapes:
            log.info("SR %s: region at item %s refers to image %s, not a US image of this study",
                     sr_uid, where, image_uid)
            continue
        found.append(SRBox(sop_instance_uid=image_uid, box=_clip(box, image_shapes[image_uid], where),
                           sr_sop_instance_uid=sr_uid, graphic_type=gtype.upper()))
    return found


def _content_order(ds: Dataset) -> str:
    return f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}"


def sr_boxes(companions: Sequence[InstanceRecord], image_shapes: Mapping[str, tuple[int, int]],
             point_half_size_px: float = POINT_HALF_SIZE_PX) -> dict[str, SRBox]:
    """The lesion box per US image (SOP Instance UID -> :class:`SRBox`) drawn in the study's SRs.

    When several regions refer to the same image, the newest SR (Content Date/Time) wins and,
    within it, the first region in document order; the others are logged. Malformed SRs are
    logged and skipped.
    """
    readable: list[Dataset] = []
    for record in companions:
        try:
            ds = pydicom.dcmread(Path(record.path))
        except Exception as exc:  # unreadable file: name it, skip it
            log.error("SR %s skipped: cannot read %s as DICOM (%s)", record.sop_instance_uid, record.path, exc)
            continue
        if str(ds.get("Manufacturer", "")) == OWN_MANUFACTURER:
            log.debug("SR %s skipped: written by this project", record.sop_instance_uid)
            continue
        readable.append(ds)
    boxes: dict[str, SRBox] = {}
    for ds in sorted(readable, key=_content_order, reverse=True):
        uid = str(ds.get("SOPInstanceUID", "?"))
        try:
            found = boxes_in_sr(ds, image_shapes, point_half_size_px)
        except (MalformedSRError, ValueError, TypeError, AttributeError) as exc:
            log.error("SR %s skipped: malformed lesion region: %s", uid, exc)
            continue
        for b in found:
            if b.sop_instance_uid in boxes:
                log.info("SR %s: another region for image %s ignored (SR %s is used)", uid,
                         b.sop_instance_uid, boxes[b.sop_instance_uid].sr_sop_instance_uid)
                continue
            boxes[b.sop_instance_uid] = b
    return boxes


__all__ = ["SRBox", "MalformedSRError", "sr_boxes", "boxes_in_sr", "region_box", "POINT_HALF_SIZE_PX"]
