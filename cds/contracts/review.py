"""Who uses the HTTP surface, and a clinician's assessment of an AI result (IHE AIRA-style).

These are the hand-offs between the HTTP layer (which authenticates and parses), the review
stage (which records the assessment and queues the SR and FHIR updates) and the store.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    """Roles of the HTTP surface. ``admin`` may do everything; clinician and operator also view."""

    viewer = "viewer"
    clinician = "clinician"  # reviews AI results
    operator = "operator"  # requeues jobs and outputs, switches models, re-evaluates cases
    sender = "sender"  # a modality or archive storing instances over STOW-RS (nothing else)
    admin = "admin"


class Principal(BaseModel):
    """An authenticated user or script; ``name`` is what audit records and assessments show."""

    model_config = ConfigDict(frozen=True)

    name: str
    roles: frozenset[Role]
    method: str = Field(description="'oidc' or 'api-token'")
    display_name: str = ""  # a person's name for the assessment SR's observer (OIDC 'name' claim)

    def has(self, role: Role) -> bool:
        if Role.admin in self.roles or role in self.roles:
            return True
        return role is Role.viewer and bool(self.roles & {Role.clinician, Role.operator})


class ReviewOutcome(StrEnum):
    """AIRA's assessment types: the result is accepted as is, modified, or rejected."""

    accepted = "accepted"
    modified = "modified"
    rejected = "rejected"


class ReviewRequest(BaseModel):
    """One assessment of one stored result (``results.id``) by a clinician."""

    model_config = ConfigDict(extra="forbid")

    outcome: ReviewOutcome
    reason: str = Field("", max_length=1000, description="Why; required for 'modified' and 'rejected'.")
    decision: str | None = Field(
        None, max_length=64, description="'modified': the clinician's decision instead of the AI's "
        "(e.g. 'benign' for a mammography exam the model called suspicious).")
    removed_lesions: list[int] = Field(
        default_factory=list, description="'modified': indices of the AI's lesions the clinician removes.")


class ReviewRow(BaseModel):
    """An assessment as the store keeps it."""

    id: int
    result_id: int
    patient_key: str | None = None
    study_uid: str | None = None
    model: str | None = None
    model_version: str | None = None
    outcome: ReviewOutcome
    reason: str = ""
    decision: str | None = None
    removed_lesions: list[int] = Field(default_factory=list)
    reviewer: str
    reviewer_display: str = ""
    created_at: float
    sr_uid: str = ""  # SOP Instance UID of the assessment SR sent to the PACS
