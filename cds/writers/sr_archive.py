"""SR content for mammograms as archives hold them (used by :mod:`cds.writers.sr`).

Inside each image's TID 1501 group, CODE qualitative evaluations say where the image's
laterality and view came from (a DICOM attribute, PatientOrientation, free text or the pixels)
and whether it was read with the other breast's image of the same view or on its own. Each
instance of the study recognised and not analysed (tomosynthesis, magnification, spot
compression or implant-displaced view, unreadable) is a TEXT item with its reason in the report's
"Qualitative Evaluations" container.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from cds.contracts.domain import MammographyResult, MammoImageFinding

SCHEME = "99BCDS"


def _code(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning)


LATERALITY_SOURCE = _code("LATSRC", "Laterality source")
VIEW_SOURCE = _code("VIEWSRC", "View source")
SOURCE_VALUE = {"attribute": _code("SRC-ATTR", "DICOM attribute"),
                "patient_orientation": _code("SRC-PATORIENT", "Patient Orientation"),
                "text": _code("SRC-TEXT", "Free text description"),
                "pixels": _code("SRC-PIXELS", "Image pixels (chest-wall side)")}
CONTRALATERAL = _code("CONTRALAT", "Contralateral image")
PAIRED = _code("CONTRA-PAIRED", "Read with the other breast's image of the same view")
UNPAIRED = _code("CONTRA-NONE", "No image of the other breast in this view; read on its own")
NOT_ANALYSED = _code("NOTREAD", "Instance not analysed")
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def image_items(img: MammoImageFinding) -> list[hd.sr.QualitativeEvaluation]:
    """Laterality and view sources (when known) and whether the image was read paired."""
    items = []
    if img.laterality_source in SOURCE_VALUE:
        items.append(hd.sr.QualitativeEvaluation(LATERALITY_SOURCE, SOURCE_VALUE[img.laterality_source]))
    if img.view_source in SOURCE_VALUE:
        items.append(hd.sr.QualitativeEvaluation(VIEW_SOURCE, SOURCE_VALUE[img.view_source]))
    items.append(hd.sr.QualitativeEvaluation(CONTRALATERAL, PAIRED if img.paired else UNPAIRED))
    return items


def not_analysed_text(result: MammographyResult) -> list[str]:
    return [f"{n.sop_instance_uid}: not analysed, {n.reason}" + (f" ({n.detail})" if n.detail else "")
            for n in result.not_analysed]


def add_not_analysed(sr: Dataset, result: MammographyResult) -> None:
    """A TEXT item per instance not analysed, in the root's Qualitative Evaluations container."""
    notes = not_analysed_text(result)
    if not notes:
        return
    root = sr.ContentSequence
    box = next((item for item in root if item.ValueType == "CONTAINER"
                and item.ConceptNameCodeSequence[0].CodeValue == QUALITATIVE_EVALUATIONS.value), None)
    if box is None:
        box = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS,
                                         relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        box.ContentSequence = []
        root.append(box)
    for note in notes:
        box.ContentSequence.append(hd.sr.TextContentItem(
            name=NOT_ANALYSED, value=note[:1000], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
