"""One current answer per question: stable FHIR identifiers and DICOM predecessor references.

FHIR: the case's RiskAssessment (recurrence) and DiagnosticReport (the PDF report) carry one
identifier per patient and question (:func:`question_key`), not per evaluation, so the FHIR
write-back finds the earlier resource by identifier and updates it in place (RiskAssessment
``final`` -> ``amended``; the previous version stays in the resource's history). Each carries an
evaluation stamp (:func:`stamp`, a ``meta.tag``) so that an older evaluation delivered late never
overwrites a newer one. The DiagnosticReport names every RiskAssessment it summarises with the
R4 core extension ``workflow-supportingInfo`` (context DiagnosticReport, Reference(Any)):
``DiagnosticReport.result`` admits only Observations in R4, and R4 has no ``supportingInfo``.

DICOM: objects in a PACS are never changed, so the new case SR lists the SR it replaces in its
Predecessor Documents Sequence (0040,A360; SR Document General Module).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from cds.contracts.domain import PatientRef, RecurrenceResult

EVALUATION_SYSTEM = "urn:breast-cds:evaluated"
SUPPORTING_INFO = "http://hl7.org/fhir/StructureDefinition/workflow-supportingInfo"


def question_key(patient: PatientRef, question: str) -> str:
    """The FHIR identifier value of the patient's current answer to ``question``."""
    return f"case/{patient.key}/{question}"


def stamp(resource: dict[str, Any], when: datetime) -> dict[str, Any]:
    """Tag ``resource`` with its evaluation time (UTC, fixed width: compares as text)."""
    code = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    meta = resource.setdefault("meta", {})
    meta["tag"] = [t for t in meta.get("tag", []) if t.get("system") != EVALUATION_SYSTEM]
    meta["tag"].append({"system": EVALUATION_SYSTEM, "code": code, "display": "evaluation time"})
    return resource


def evaluation_of(resource: dict[str, Any]) -> str:
    """The evaluation stamp of ``resource`` ("" when it has none)."""
    return next((t.get("code", "") for t in (resource.get("meta") or {}).get("tag", [])
                 if t.get("system") == EVALUATION_SYSTEM), "")


def supporting_info(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``workflow-supportingInfo`` extension per RiskAssessment (logical reference)."""
    return [{"url": SUPPORTING_INFO, "valueReference": {"type": t["type"], "identifier": t["identifier"]}}
            for t in targets if t.get("type") == "RiskAssessment"]


def why_they_differ(primary: RecurrenceResult, other: RecurrenceResult) -> str:
    """One sentence on why two recurrence variants can disagree on the same case."""
    def name(r: RecurrenceResult) -> str:
        return {"clinical": "the clinical model", "multimodal": "the multimodal model"}.get(r.scope, r.model.name)
    return (f"{name(other).capitalize()} ({other.model.name} {other.model.version}) gives group "
            f"{other.risk_group}, 5-year risk {other.absolute_risk.get(5, float('nan')):.0%}, beside "
            f"{name(primary)} (primary). They can differ: the clinical model reads clinical variables "
            "only and was trained on real GBSG2 patients; the multimodal model adds slide and "
            "ultrasound features and was trained on a semi-synthetic cohort, so imaging findings "
            "can move a case across the risk-group cut-off.")


def add_predecessor(ds: Dataset, previous: Path) -> bool:
    """List the SR at ``previous`` in ``ds``'s Predecessor Documents Sequence; False when the
    previous file is unreadable or is ``ds`` itself."""
    try:
        old = pydicom.dcmread(previous, stop_before_pixels=True)
    except Exception:  # a payload that cannot be read names nothing; the new SR stands alone
        return False
    if str(old.SOPInstanceUID) == str(ds.SOPInstanceUID):
        return False
    sop = Dataset()
    sop.ReferencedSOPClassUID = old.SOPClassUID
    sop.ReferencedSOPInstanceUID = old.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = old.SeriesInstanceUID
    series.ReferencedSOPSequence = [sop]
    study = Dataset()
    study.StudyInstanceUID = old.StudyInstanceUID
    study.ReferencedSeriesSequence = [series]
    ds.PredecessorDocumentsSequence = [study]
    return True
