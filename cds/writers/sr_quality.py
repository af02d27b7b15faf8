"""SR content for how sure a result is: training domain, operating point, mammography grade.

Used by :mod:`cds.writers.sr`. Inside each TID 1501 group: the operating point (a CODE) with its
threshold and expected sensitivity/specificity (measurements), the training-domain status (a
CODE), the grade probabilities and, in domain only, the most likely grade. An out-of-domain input
keeps its probabilities but gets no predicted class, grade or positive/negative decision: the
decision item says "not determined (out of training domain)". The reasons go as TEXT items in the
report's "Qualitative Evaluations" container.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.contracts.domain import Calibrated, DomainCheck, MammoImageFinding
from cds.writers.common import project_code
from reports.quality import domain_text, operating_point_text, out_of_domain

TRAINING_DOMAIN = project_code("DOMAIN", "Training domain")
IN_DOMAIN = project_code("INDOMAIN", "Within training domain")
OUT_OF_DOMAIN = project_code("OUTDOMAIN", "Out of training domain")
NOT_DETERMINED = project_code("NODECISION", "Not determined (out of training domain)")
DOMAIN_SCORE = project_code("DOMSCORE", "Training-domain embedding distance")
OPERATING_POINT = project_code("OPPOINT", "Operating point")
EXPECTED_SENSITIVITY = project_code("EXPSENS", "Expected sensitivity at operating point")
EXPECTED_SPECIFICITY = project_code("EXPSPEC", "Expected specificity at operating point")
PREDICTED_GRADE = project_code("PREDGRADE", "Most likely grade")
DOMAIN_NOTE = project_code("DOMNOTE", "Training domain note")
UNITLESS = codes.UCUM.NoUnits
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def _pointproject_code(cal: Calibrated) -> CodedConcept:
    name = cal.operating_point.name if cal.operating_point else cal.threshold_name
    short = name.upper().replace("SENSITIVITY_", "SENS-").replace("SPECIFICITY_", "SPEC-")
    return project_code(("OP-" + short)[:16], f"Operating point {name}"[:64])


def operating_point_items(cal: Calibrated) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """Expected sensitivity/specificity (when known) and the operating point's name."""
    ms = []
    op = cal.operating_point
    if op is not None and op.expected_sensitivity is not None:
        ms.append(hd.sr.Measurement(name=EXPECTED_SENSITIVITY, value=float(op.expected_sensitivity), unit=UNITLESS))
    if op is not None and op.expected_specificity is not None:
        ms.append(hd.sr.Measurement(name=EXPECTED_SPECIFICITY, value=float(op.expected_specificity), unit=UNITLESS))
    return ms, [hd.sr.QualitativeEvaluation(OPERATING_POINT, _pointproject_code(cal))]


def domain_items(domain: DomainCheck | None) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    if domain is None:
        return [], []
    ms = []
    if domain.score is not None:
        ms.append(hd.sr.Measurement(name=DOMAIN_SCORE, value=float(domain.score), unit=UNITLESS))
    value = OUT_OF_DOMAIN if out_of_domain(domain) else IN_DOMAIN
    return ms, [hd.sr.QualitativeEvaluation(TRAINING_DOMAIN, value)]


def decision_or_not(domain: DomainCheck | None, decisions: list[hd.sr.QualitativeEvaluation],
                    decision_name: CodedConcept) -> list[hd.sr.QualitativeEvaluation]:
    """``decisions`` in domain; out of it, one "not determined" decision instead."""
    if out_of_domain(domain):
        return [hd.sr.QualitativeEvaluation(decision_name, NOT_DETERMINED)]
    return decisions


def grade_items(img: MammoImageFinding, labels: list[str]) -> tuple[list[hd.sr.Measurement], list]:
    """Probability of each grade and (in domain) the most likely grade."""
    if not img.grade_probabilities:
        return [], []
    names = labels if len(labels) == len(img.grade_probabilities) else [
        f"grade {k}" for k in range(len(img.grade_probabilities))]
    ms = [hd.sr.Measurement(name=project_code(f"P-GRADE{k}", f"Probability {name}"[:64]), value=float(p), unit=UNITLESS)
          for k, (name, p) in enumerate(zip(names, img.grade_probabilities))]
    if out_of_domain(img.domain):
        return ms, []
    best = max(range(len(names)), key=lambda k: img.grade_probabilities[k])
    return ms, [hd.sr.QualitativeEvaluation(PREDICTED_GRADE, project_code(f"GRADE{best}", names[best][:64]))]


def add_notes(sr: Dataset, notes: list[str], name: CodedConcept = DOMAIN_NOTE) -> None:
    """TEXT items called ``name`` in the root's Qualitative Evaluations container (created when
    missing)."""
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
            name=name, value=note[:1000], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))


def study_notes(analysis) -> list[str]:  # noqa: ANN001 (StudyAnalysis)
    """A note per out-of-domain input and one per operating point in use."""
    notes = []
    if analysis.mammography is not None:
        for img in analysis.mammography.images:
            if out_of_domain(img.domain):
                notes.append(f"Image {img.laterality}{img.view} ({img.sop_instance_uid}): {domain_text(img.domain)}")
        notes.append("Mammography malignancy decision: " + operating_point_text(analysis.mammography.exam_malignancy))
    if analysis.slide is not None:
        if out_of_domain(analysis.slide.domain):
            notes.append(f"Slide: {domain_text(analysis.slide.domain)}")
        notes.append("Lymph-node metastasis decision: " + operating_point_text(analysis.slide.metastasis))
    return notes
