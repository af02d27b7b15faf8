"""What a review assesses: the AI outputs a result's job queued, found in the outbox.

A job's outbox rows carry keys ``<study or case>/<model>/<version>/<type>``; the rows of the
reviewed result's model and version are its SR (TID 1500, ``sr`` or ``case-sr``), its SEGs and its
RiskAssessment(s). DICOM outputs are files (their SOP Instance UIDs are read from them); a
RiskAssessment's identifier is read from its stored payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from cds.contracts.domain import StudyAnalysis
from cds.contracts.handoffs import OutboxItem, ResultRow
from cds.review.errors import InvalidReview
from cds.store import Store
from cds.writers.assessment_sr import RemovedFinding


@dataclass
class AiOutputs:
    """The outputs of one result, as queued (any delivery state)."""

    sr: list[OutboxItem] = field(default_factory=list)
    segs: list[OutboxItem] = field(default_factory=list)
    risks: list[OutboxItem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.sr or self.risks)


def ai_outputs(store: Store, result: ResultRow) -> AiOutputs:
    """The SR, SEG and RiskAssessment rows the result's job queued for the result's model."""
    found = AiOutputs()
    if result.job_id is None or not result.model:
        return found
    marker = f"/{result.model}/{result.model_version}/"
    for item in store.outbox_of_job(result.job_id):
        if marker not in item.key:
            continue
        kind = item.key.rsplit("/", 1)[-1]
        if item.kind == "dicom" and kind in ("sr", "case-sr"):
            found.sr.append(item)
        elif item.kind == "dicom" and kind.startswith("seg-"):
            found.segs.append(item)
        elif item.kind == "fhir" and item.meta.resource_type == "RiskAssessment":
            found.risks.append(item)
    return found


def read_dicom(item: OutboxItem) -> Dataset:
    """The header of a queued DICOM output; a specific error when its file is gone."""
    try:
        return pydicom.dcmread(item.payload_path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise InvalidReview(f"the AI output {item.key} (outbox {item.id}) cannot be read from "
                            f"{item.payload_path.name}: {exc.__class__.__name__}; the result cannot be "
                            "referenced from an assessment") from exc


def read_resource(item: OutboxItem) -> dict[str, Any]:
    try:
        resource: dict[str, Any] = json.loads(item.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidReview(f"the AI output {item.key} (outbox {item.id}) is not readable JSON") from exc
    return resource


def lesions_of(result: ResultRow) -> list[RemovedFinding]:
    """The result's lesions in the order the API numbers them (0-based, image by image)."""
    if result.kind != "study_analysis" or not result.body:
        return []
    analysis = StudyAnalysis.model_validate(result.body)
    if analysis.mammography is None:
        return []
    return [RemovedFinding(lesion.tracking_id, lesion.tracking_uid)
            for img in analysis.mammography.images for lesion in img.lesions]


def review_sr_path(work_dir: Path, review_id: int) -> Path:
    """Where the assessment SR of one review is kept (DICOM files stay files, like the AI's)."""
    return work_dir / "reviews" / f"review-{review_id}" / "assessment-sr.dcm"
