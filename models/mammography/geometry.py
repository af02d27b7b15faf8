"""Laterality, view and chest-wall side of a mammogram, and where each came from.

Tried in order, each giving a :data:`cds.contracts.domain.GeometrySource`:

1. ``attribute``: ImageLaterality (0020,0062), else Laterality (0020,0060); ViewPosition
   (0018,5101), else ViewCodeSequence (0054,0220).
2. ``patient_orientation``: PatientOrientation (0020,0020), PS3.3 C.7.6.1.1.1: the first value is
   the patient direction of the rows (increasing column index), the second of the columns
   (increasing row index). A mammogram is stored with the nipple pointing away from the chest
   wall along the rows and, by the MG IOD's convention, the lateral (CC) or superior (MLO) side
   at the top, so: first value A -> chest wall on the left (rows run towards the nipple), P ->
   chest wall on the right; second value with R (toward the patient's right, i.e. medial for a
   left breast) -> left breast, with L -> right breast; second value R or L only -> CC (axial
   plane), with F or H as well -> MLO (oblique), F or H only -> ML (lateral). Without L/R in the
   second value the first decides laterality by the display convention (A: left, P: right).
   Examples: L CC ``A\\R``, R CC ``P\\L``, L MLO ``A\\FR``, R MLO ``P\\FL``. A PatientOrientation
   that holds no patient directions (archives misuse it for ``L\\CC`` or ``RMLO``) is read as
   free text, still with the source ``patient_orientation``.
3. ``text``: words in SeriesDescription, ImageComments, ProtocolName, StudyDescription and
   PatientID (CBIS-DDSM names its images ``Calc-Test_P_00038_LEFT_CC``): LEFT/RIGHT, L/R,
   LCC/RMLO-style words, CC/MLO/ML/LM/... A field naming both sides is ignored.
4. ``pixels`` (in :func:`preprocess.read_mg`): the chest-wall side is the border column holding
   far more breast (:func:`breast_mask.chest_wall_right`); laterality follows from the display
   convention (chest wall left: left breast). The view cannot be read from pixels and stays "".

The chest-wall side decides how the image is mirrored into the network's canonical geometry; it
comes from PatientOrientation when that is stated, else from the pixels, else from laterality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pydicom

DIRECTIONS = set("APRLHF")
VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "ISO", "AT")
_COMBINED = re.compile(r"^(L|R)(" + "|".join(VIEWS) + r")$")
_SIDE_WORDS = {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}
_VIEW_MEANINGS = (("exaggerated laterally", "XCCL"), ("exaggerated medially", "XCCM"),
                  ("cranio-caudal", "CC"), ("craniocaudal", "CC"), ("medio-lateral oblique", "MLO"),
                  ("latero-medial oblique", "LMO"), ("medio-lateral", "ML"), ("latero-medial", "LM"))
TEXT_FIELDS = ("SeriesDescription", "ImageComments", "ProtocolName", "StudyDescription", "PatientID")


@dataclass(frozen=True)
class Geometry:
    laterality: str = ""
    laterality_source: str = ""
    view: str = ""
    view_source: str = ""
    chest_wall_right: bool | None = None  # None: not stated by PatientOrientation


def _view_of_code(ds: pydicom.Dataset) -> str:
    if "ViewCodeSequence" not in ds or not len(ds.ViewCodeSequence):
        return ""
    meaning = str(ds.ViewCodeSequence[0].get("CodeMeaning", "")).lower()
    return next((v for words, v in _VIEW_MEANINGS if words in meaning), "")


def from_attributes(ds: pydicom.Dataset) -> tuple[str, str]:
    lat = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").upper()
    view = str(ds.get("ViewPosition", "") or "").upper()
    return (lat if lat in ("L", "R") else ""), (view if view in VIEWS else _view_of_code(ds))


def from_text(values: list[str], *, single_letters: bool = True) -> tuple[str, str]:
    """Laterality and view named in free-text values (the first value naming each wins).

    ``single_letters=False`` for identifiers (PatientID): an MRN such as ``R-004512`` must not
    make a right breast; only LEFT/RIGHT and combined forms such as LCC count there."""
    lat = view = ""
    for value in values:
        words = [w for w in re.split(r"[^A-Z0-9]+", str(value or "").upper()) if w]
        sides, views = set(), []
        for w in words:
            m = _COMBINED.match(w)
            if m:
                sides.add(m.group(1))
                views.append(m.group(2))
            elif w in _SIDE_WORDS and (single_letters or len(w) > 1):
                sides.add(_SIDE_WORDS[w])
            elif w in VIEWS:
                views.append(w)
            elif w in ("CRANIOCAUDAL", "CRANIO"):
                views.append("CC")
            elif w == "OBLIQUE":
                views.append("MLO")
        if not lat and len(sides) == 1:
            lat = sides.pop()
        if not view and len(set(views)) == 1:
            view = views[0]
        if lat and view:
            break
    return lat, view


def from_patient_orientation(ds: pydicom.Dataset) -> tuple[str, str, bool | None]:
    """Laterality, view and chest-wall side from PatientOrientation (see the module docstring)."""
    values = [str(v).upper().strip() for v in (ds.get("PatientOrientation", []) or []) if str(v).strip()]
    if len(values) != 2 or not all(set(v) <= DIRECTIONS for v in values):
        lat, view = from_text([" ".join(values)]) if values else ("", "")
        return lat, view, None
    rows, cols = values
    has_a, has_p = "A" in rows, "P" in rows  # rows run towards the nipple: A = chest wall left
    chest_wall_right = None if has_a == has_p else has_p
    lat = "L" if "R" in cols and "L" not in cols else ("R" if "L" in cols and "R" not in cols else "")
    if not lat and chest_wall_right is not None:
        lat = "R" if chest_wall_right else "L"
    vertical = bool(set(cols) & {"F", "H"})
    side = bool(set(cols) & {"L", "R"})
    view = "MLO" if vertical and side else ("CC" if side else ("ML" if vertical else ""))
    return lat, view, chest_wall_right


def geometry(ds: pydicom.Dataset) -> Geometry:
    """Laterality and view with their sources, from the dataset alone (no pixels)."""
    lat, view = from_attributes(ds)
    lat_src = "attribute" if lat else ""
    view_src = "attribute" if view else ""
    po_lat, po_view, chest_right = from_patient_orientation(ds)
    if not lat and po_lat:
        lat, lat_src = po_lat, "patient_orientation"
    if not view and po_view:
        view, view_src = po_view, "patient_orientation"
    if not lat or not view:
        t_lat, t_view = from_text([str(ds.get(k, "") or "") for k in TEXT_FIELDS if k != "PatientID"])
        if not (t_lat and t_view):
            p_lat, p_view = from_text([str(ds.get("PatientID", "") or "")], single_letters=False)
            t_lat, t_view = t_lat or p_lat, t_view or p_view
        if not lat and t_lat:
            lat, lat_src = t_lat, "text"
        if not view and t_view:
            view, view_src = t_view, "text"
    return Geometry(lat, lat_src, view, view_src, chest_right)
