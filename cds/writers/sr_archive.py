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
from pydicom.dataset import Dataset

from cds.contracts.domain import MammographyResult, MammoImageFinding
from cds.writers.common import project_code
from cds.writers.sr_quality import add_notes

LATERALITY_SOURCE = project_code("LATSRC", "Laterality source")
VIEW_SOURCE = project_code("VIEWSRC", "View source")
SOURCE_VALUE = {"attribute": project_code("SRC-ATTR", "DICOM attribute"),
                "patient_orientation": project_code("SRC-PATORIENT", "Patient Orientation"),
                "text": project_code("SRC-TEXT", "Free text description"),
                "pixels": project_code("SRC-PIXELS", "Image pixels (chest-wall side)")}
CONTRALATERAL = project_code("CONTRALAT", "Contralateral image")
PAIRED = project_code("CONTRA-PAIRED", "Read with the other breast's image of the same view")
UNPAIRED = project_code("CONTRA-NONE", "No image of the other breast in this view; read on its own")
NOT_ANALYSED = project_code("NOTREAD", "Instance not analysed")


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
    add_notes(sr, not_analysed_text(result), NOT_ANALYSED)
