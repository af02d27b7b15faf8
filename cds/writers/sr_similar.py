"""SR content for the similar reference pathology beside mammography lesions (used by
:mod:`cds.writers.sr`).

Per lesion with examples, one CONTAINER in the report's root, titled as examples from the
synthetic reference bank and not this patient's pathology (99BCDS ``SIMREF``), holding:

- TEXT "Similar examples notice": the caption the PDF and the pages show, the bank's description
  and the alignment model's name, version and not-for-clinical-use notice;
- TEXT Tracking Identifier (DCM 112039) and UIDREF Tracking Unique Identifier (DCM 112040): the
  lesion as the report's Planar ROI group and the SEG name it;
- IMAGE Source of Measurement (DCM 121112): the mammogram the lesion was cropped from;
- one CONTAINER "Reference example" per patch, most similar first: TEXT tissue class, NUM cosine
  similarity (UCUM "1"), TEXT bank identifier.

The container sits beside the Imaging Measurements, not inside a lesion's group: the examples
are not measurements of the patient, and TID 1410 has no row for them. The alignment model is
named in the Contributing Equipment Sequence beside the mammography model.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.contracts.domain import StudyAnalysis
from cds.writers.common import TRACKING_ID, TRACKING_UID, add_contributing_equipment, project_code
from reports.similar_view import CAPTION

SIMILAR_EXAMPLES = project_code("SIMREF", "Similar examples from synthetic reference bank, not this patient")
SIMILAR_NOTICE = project_code("SIMNOTE", "Similar examples notice")
REFERENCE_EXAMPLE = project_code("SIMEX", "Reference example")
TISSUE_CLASS = project_code("SIMCLASS", "Reference patch tissue class")
COSINE = project_code("SIMCOS", "Cosine similarity in shared embedding")
BANK_ID = project_code("SIMBANKID", "Reference bank patch identifier")
SOURCE = CodedConcept.from_code(codes.DCM.SourceOfMeasurement)
CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def _example(label: str, similarity: float, bank_id: str) -> hd.sr.ContainerContentItem:
    box = hd.sr.ContainerContentItem(name=REFERENCE_EXAMPLE, relationship_type=CONTAINS)
    box.ContentSequence = [
        hd.sr.TextContentItem(name=TISSUE_CLASS, value=label[:1024], relationship_type=CONTAINS),
        hd.sr.NumContentItem(name=COSINE, value=float(similarity), unit=codes.UCUM.NoUnits,
                             relationship_type=CONTAINS),
        hd.sr.TextContentItem(name=BANK_ID, value=bank_id[:1024], relationship_type=CONTAINS),
    ]
    return box


def similar_containers(analysis: StudyAnalysis, sources: dict[str, Dataset]) -> list[hd.sr.ContainerContentItem]:
    """One container per lesion that has similar examples (see the module docstring)."""
    m = analysis.mammography
    if m is None:
        return []
    lesions = {les.tracking_uid: les for img in m.images for les in img.lesions}
    out = []
    for sp in m.similar_pathology:
        if not sp.examples:
            continue
        src = sources.get(sp.sop_instance_uid)
        lesion = lesions.get(sp.lesion_tracking_uid)
        if src is None or lesion is None:
            raise ValueError(f"similar pathology of study {analysis.study_instance_uid} names image "
                             f"{sp.sop_instance_uid} / lesion {sp.lesion_tracking_uid}, which the analysis "
                             "or its sources lack")
        notice = f"{CAPTION}. Bank: {sp.bank}. Model: {sp.model.name} {sp.model.version}."
        if sp.model.notice:
            notice += f" {sp.model.notice}"
        box = hd.sr.ContainerContentItem(name=SIMILAR_EXAMPLES, relationship_type=CONTAINS)
        box.ContentSequence = [
            hd.sr.TextContentItem(name=SIMILAR_NOTICE, value=notice[:1024], relationship_type=CONTAINS),
            hd.sr.TextContentItem(name=TRACKING_ID, value=lesion.tracking_id[:64], relationship_type=CONTAINS),
            hd.sr.UIDRefContentItem(name=TRACKING_UID, value=lesion.tracking_uid, relationship_type=CONTAINS),
            hd.sr.ImageContentItem(name=SOURCE, referenced_sop_class_uid=str(src.SOPClassUID),
                                   referenced_sop_instance_uid=str(src.SOPInstanceUID), relationship_type=CONTAINS),
            *[_example(e.label, e.similarity, e.bank_id) for e in sp.examples],
        ]
        out.append(box)
    return out


def add_similar(sr: Dataset, analysis: StudyAnalysis, sources: dict[str, Dataset]) -> None:
    """Append the similar-examples containers to the report's root and name the alignment
    model(s) in the Contributing Equipment Sequence."""
    boxes = similar_containers(analysis, sources)
    if not boxes:
        return
    sr.ContentSequence.extend(boxes)
    models = {sp.model.device_uid: sp.model for sp in analysis.mammography.similar_pathology if sp.examples}
    add_contributing_equipment(sr, list(models.values()), analysis.created_at)
