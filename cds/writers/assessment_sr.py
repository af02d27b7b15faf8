"""A clinician's assessment of an AI result as a DICOM Comprehensive SR (IHE AIRA-style).

The PACS never changes the AI's SR and SEG; a clinician's accept / modify / reject is a new SR in
the same study that points at them. Content tree (root CONTAINER, all children CONTAINS unless
said otherwise):

- observation context (HAS OBS CONTEXT): Observer Type = Person (DCM 121005/121006), Person
  Observer Name (DCM 121008) and login (DCM 128774) of the clinician;
- "Assessment type" (CODE): Accepted / Modified / Rejected;
- one "Assessed AI result" (COMPOSITE) per assessed object, by SOP Class and SOP Instance UID:
  the AI's TID 1500 SR and each SEG;
- "Reason for assessment" (TEXT), when given;
- modified: "Clinician decision" (TEXT) and, per finding the clinician removed, a "Removed
  finding" CONTAINER with its Tracking Identifier (DCM 112039) and Tracking Unique Identifier
  (DCM 112040), as the AI's SR and SEG name it.

The IHE AIRA supplement's own template and codes could not be confirmed from a text we hold, so
the document title, the assessment concepts and their values use the project's scheme 99BCDS
(declared in the Coding Scheme Identification Sequence); the observer and tracking concepts are
the DCM codes above. No template identifier is claimed. The clinician is also the Verifying
Observer: the document is VERIFIED and COMPLETE, unlike the AI's own SR (UNVERIFIED).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from cds.writers.common import SCHEME, TRACKING_ID, TRACKING_UID, derived_uid, project_code

SERIES_NUMBER = 9401  # beside the AI's own result series (9101-9301)
TITLE = project_code("AIRA", "AI result assessment")
ASSESSMENT_TYPE = project_code("ASSESSTYPE", "Assessment type")
ASSESSMENT_VALUE = {"accepted": project_code("ACCEPTED", "Accepted"),
                    "modified": project_code("MODIFIED", "Modified"),
                    "rejected": project_code("REJECTED", "Rejected")}
ASSESSED = project_code("ASSESSED", "Assessed AI result")
REASON = project_code("ASSESSREASON", "Reason for assessment")
DECISION = project_code("CLINDECISION", "Clinician decision")
REMOVED = project_code("REMOVED", "Removed finding")
CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


@dataclass(frozen=True)
class RemovedFinding:
    tracking_id: str
    tracking_uid: str


@dataclass(frozen=True)
class Assessment:
    """What the clinician decided about one AI result (the SR's content, nothing about files)."""

    outcome: str  # accepted | modified | rejected
    observer_name: str  # the clinician's name as DICOM PN (``Family^Given`` or one component)
    login: str
    when: datetime
    reason: str = ""
    decision: str | None = None
    removed: list[RemovedFinding] = field(default_factory=list)


def person_name(display: str) -> str:
    """A display name ("Jane Smith", "Smith, Jane") as DICOM PN ``Smith^Jane``; anything else as
    family name only (``jsmith^``: the trailing caret says a single component is meant). PN
    components may not hold ``^``/``=``/``\\``, and are at most 64 characters."""
    clean = " ".join(display.replace("^", " ").replace("=", " ").replace("\\", " ").split())[:64]
    if "," in clean:
        family, _, given = clean.partition(",")
        return f"{family.strip()}^{given.strip()}".strip("^")
    parts = clean.split(" ")
    return f"{parts[-1]}^{' '.join(parts[:-1])}" if len(parts) > 1 else f"{clean}^" if clean else ""


def _content(a: Assessment, assessed: list[Dataset]) -> hd.sr.ContainerContentItem:
    person = hd.sr.PersonObserverIdentifyingAttributes(name=a.observer_name or "unknown", login_name=a.login[:64])
    context = hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Person, observer_identifying_attributes=person))
    items: list = [hd.sr.CodeContentItem(ASSESSMENT_TYPE, ASSESSMENT_VALUE[a.outcome], relationship_type=CONTAINS)]
    items += [hd.sr.CompositeContentItem(ASSESSED, ds.SOPClassUID, ds.SOPInstanceUID, relationship_type=CONTAINS)
              for ds in assessed]
    if a.reason:
        items.append(hd.sr.TextContentItem(REASON, a.reason, relationship_type=CONTAINS))
    if a.decision:
        items.append(hd.sr.TextContentItem(DECISION, a.decision, relationship_type=CONTAINS))
    for r in a.removed:
        box = hd.sr.ContainerContentItem(REMOVED, relationship_type=CONTAINS)
        box.ContentSequence = [hd.sr.TextContentItem(TRACKING_ID, r.tracking_id[:64], relationship_type=CONTAINS),
                               hd.sr.UIDRefContentItem(TRACKING_UID, r.tracking_uid, relationship_type=CONTAINS)]
        items.append(box)
    root = hd.sr.ContainerContentItem(TITLE)
    root.ContentSequence = [*context, *items]
    return root


def assessment_sr(a: Assessment, assessed: list[Dataset], *, key: str, manufacturer: str,
                  organization: str, previous: Dataset | None = None) -> hd.sr.ComprehensiveSR:
    """The assessment SR of one review, in the study of ``assessed`` (the AI's SR first, then its
    SEGs, read without pixel data). ``key`` (``review:<id>``) makes its UIDs; ``previous`` is the
    assessment SR this one supersedes (listed as its predecessor)."""
    if not assessed:
        raise ValueError("an assessment SR needs the AI result it assesses")
    studies = {str(ds.StudyInstanceUID) for ds in assessed}
    if len(studies) != 1:
        raise ValueError(f"assessed objects span {len(studies)} studies; an assessment SR belongs to one")
    sr = hd.sr.ComprehensiveSR(
        evidence=assessed, content=_content(a, assessed),
        series_instance_uid=derived_uid(key, "series"), series_number=SERIES_NUMBER,
        sop_instance_uid=derived_uid(key, "instance"), instance_number=1,
        manufacturer=manufacturer[:64], is_complete=True, is_final=True, is_verified=True,
        verifying_observer_name=a.observer_name or "unknown", verifying_organization=organization[:64] or "unknown",
        previous_versions=[previous] if previous is not None else None,
        series_description="AI result assessment (clinician)",
    )
    sr.ContentDate = a.when.strftime("%Y%m%d")
    sr.ContentTime = a.when.strftime("%H%M%S")
    ident = Dataset()
    ident.CodingSchemeDesignator = SCHEME
    ident.CodingSchemeName = "breast-cds private concepts"
    ident.CodingSchemeResponsibleOrganization = "breast-cds open-source project"
    sr.CodingSchemeIdentificationSequence = [ident]
    return sr


def save(sr: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(path, enforce_file_format=True)
    return path
