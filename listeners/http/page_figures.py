"""Figures of the case page that the PDF does not draw: the recurrence curve (inline SVG) and the
slide attention map over the slide's own thumbnail.

The mammogram overlays and the grey-based attention map come from :mod:`reports.pdf` unchanged,
so the page and the PDF show the same pictures; only what the page adds is drawn here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from skimage.transform import resize

from cds.contracts.domain import RecurrenceResult, StudyAnalysis
from reports.pdf import _fit, _image_uri, overlay

log = logging.getLogger(__name__)

W, H, PAD_L, PAD_B, PAD_T, PAD_R = 360, 200, 44, 30, 12, 12
MAX_YEARS = 10


def recurrence_curve(rec: RecurrenceResult) -> dict:
    """Points of the cumulative recurrence risk over time, in SVG coordinates.

    The model gives the absolute risk at a few horizons (3, 5, 7 years); the curve joins them from
    zero at diagnosis, a step-free reading aid rather than an extrapolation: nothing is drawn past
    the last horizon the model answers.
    """
    years = sorted(rec.absolute_risk)
    top = max(0.2, min(1.0, (max(rec.absolute_risk.values(), default=0.0) * 1.25)))
    top = float(np.ceil(top * 10) / 10)

    def xy(year: float, p: float) -> tuple[float, float]:
        x = PAD_L + (W - PAD_L - PAD_R) * year / MAX_YEARS
        y = H - PAD_B - (H - PAD_B - PAD_T) * p / top
        return round(x, 1), round(y, 1)

    pts = [xy(0, 0.0)] + [xy(y, rec.absolute_risk[y]) for y in years]
    return {
        "width": W, "height": H, "polyline": " ".join(f"{x},{y}" for x, y in pts),
        "points": [{"x": xy(y, rec.absolute_risk[y])[0], "y": xy(y, rec.absolute_risk[y])[1],
                    "label": f"{y} y: {100 * rec.absolute_risk[y]:.1f}%"} for y in years],
        "x_ticks": [{"x": xy(t, 0)[0], "label": str(t)} for t in range(0, MAX_YEARS + 1, 2)],
        "y_ticks": [{"y": xy(0, v)[1], "label": f"{100 * v:.0f}%"} for v in np.linspace(0, top, 5)],
        "x0": PAD_L, "x1": W - PAD_R, "y0": H - PAD_B, "y1": PAD_T,
        "model": f"{rec.model.name} {rec.model.version}", "group": rec.risk_group,
        "scope": rec.scope or "-",
    }


def slide_thumbnail_attention(a: StudyAnalysis, paths: list[Path]) -> str:
    """The attention map blended over the slide's lowest pyramid level, as a data URI.

    Empty when the slide's files are no longer in the spool (the grey-based map from the PDF is
    shown instead); a page must render even when a picture cannot.
    """
    s = a.slide
    if s is None or not paths or not all(p.exists() for p in paths):
        return ""
    from wsidicom import WsiDicom  # type: ignore[import-untyped]  # the slide runtime's reader (models is off-limits)

    shape = _fit((s.base_rows, s.base_columns))
    try:
        with WsiDicom.open(paths) as wsi:
            thumb = np.asarray(wsi.read_thumbnail((shape[1], shape[0])).convert("RGB"), dtype=np.float32)
    except Exception as exc:  # a broken or pruned slide still leaves the page usable
        log.warning("case page: slide %s thumbnail unreadable: %s", s.series_instance_uid, type(exc).__name__)
        return ""
    small = resize(thumb, (*shape, 3), order=1, preserve_range=True, anti_aliasing=True)
    att = s.attention_map.load(a.work_dir)
    return _image_uri(overlay(small, att, []))
