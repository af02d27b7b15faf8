"""Whether a study's content says it is complete, so that it need not wait for the stable age.

Used when the sender releases the association: a PACS forwarding a stable study sends it whole,
but a modality may send each image in its own association. For mammography the content decides:
the four standard views (RCC, LCC, RMLO, LMLO) must be there, read from the attributes that
state them (Image Laterality or Laterality, View Position or the View Code Sequence). An exam
without them, or one whose views are named only in free text, waits for the stable age as before.
Other modalities have no content rule: the release completes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pydicom

STANDARD_VIEWS = frozenset({("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")})
_TAGS = ["ImageLaterality", "Laterality", "ViewPosition", "ViewCodeSequence"]


def _view(path: Path) -> tuple[str, str] | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
    except Exception:  # unreadable header: the view is unknown, the stable age decides
        return None
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()
    view = str(ds.get("ViewPosition", "") or "").upper()
    if not view and "ViewCodeSequence" in ds and len(ds.ViewCodeSequence):
        meaning = str(ds.ViewCodeSequence[0].get("CodeMeaning", "")).lower()
        view = ("MLO" if "medio-lateral oblique" in meaning
                else "CC" if "cranio-caudal" in meaning or "craniocaudal" in meaning else "")
    return side, view


def mammography_complete(paths: Iterable[Path]) -> bool:
    """True when the instances at ``paths`` hold all four standard views."""
    seen = {v for v in (_view(p) for p in paths) if v is not None}
    return STANDARD_VIEWS <= seen


def content_complete(modality_paths: dict[str, list[Path]]) -> bool:
    """Whether a study with these instances (modality -> spool paths) is complete by content."""
    mg = modality_paths.get("MG")
    return mammography_complete(mg) if mg else True
