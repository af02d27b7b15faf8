"""Typed hand-offs between the stages after the models: jobs, result rows and outbox items.

Each is what one stage writes to the store and the next one reads back, so the shape is checked
at both ends instead of being a dict whose keys each reader guesses. Stored as JSON; reading a
row back validates it again, so a row written by an older version that no longer fits fails
loudly with the job id rather than deep inside a handler.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JobKind = Literal["study", "case"]
ResultKind = Literal["study_analysis", "recurrence"]
ResultStatus = Literal["ok", "no_model", "insufficient_input", "not_analysed", "disabled"]
OutputKind = Literal["dicom", "fhir", "pdf"]
Destination = Literal["folder", "pacs", "fhir"]


class StudyJobPayload(BaseModel):
    """Analyze one study's instances of one modality."""

    model_config = ConfigDict(extra="forbid")
    study_uid: str
    modality: str
    patient_key: str
    generation: int = 0  # the study's arrival generation: a late instance makes a new job


class CaseJobPayload(BaseModel):
    """Evaluate one patient's case (every study result plus the clinical context)."""

    model_config = ConfigDict(extra="forbid")
    patient_key: str
    force: bool = False  # an operator's re-evaluation: run the case models even if inputs did not change


JobPayload = StudyJobPayload | CaseJobPayload


class Job(BaseModel):
    """A claimed or listed job; ``payload`` is parsed by ``kind`` (study or otherwise case)."""

    id: int
    kind: str
    key: str
    payload: JobPayload
    state: str
    attempts: int
    max_attempts: int
    next_run_at: float
    last_error: str | None = None
    worker: str | None = None
    created_at: float | None = None
    updated_at: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _payload_by_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("payload"), dict):
            model = StudyJobPayload if data.get("kind") == "study" else CaseJobPayload
            data = {**data, "payload": model.model_validate(data["payload"])}
        return data

    @property
    def study(self) -> StudyJobPayload:
        if not isinstance(self.payload, StudyJobPayload):
            raise TypeError(f"job {self.id} ({self.kind}) has no study payload")
        return self.payload

    @property
    def case(self) -> CaseJobPayload:
        if not isinstance(self.payload, CaseJobPayload):
            raise TypeError(f"job {self.id} ({self.kind}) has no case payload")
        return self.payload


JobHandler = Callable[[Job], str | None]
"""Runs one claimed job; returns a note for the job record. Raises per ``cds.contracts.errors``."""


class NewResult(BaseModel):
    """One model's outcome for a job, as the pipeline writes it."""

    kind: ResultKind
    patient_key: str
    status: ResultStatus
    summary: str = ""
    study_uid: str | None = None
    modality: str | None = None
    model: str | None = None
    model_version: str | None = None
    body: dict[str, Any] | None = None
    seconds: float | None = None  # the model's own run time (inference), for metrics


class ResultRow(NewResult):
    """A stored result, as status pages and case jobs read it back."""

    id: int
    job_id: int | None
    created_at: float
    summary: str | None = None  # type: ignore[assignment]  # rows from older versions may lack it


class OutboxMeta(BaseModel):
    """What the dispatcher and status pages need to know about an output besides its file."""

    description: str = ""
    job_id: int | None = None
    resource_type: str = ""


class NewOutput(BaseModel):
    """One rendered output to deliver; ``key`` makes re-runs idempotent.

    A FHIR resource or PDF names the patient and is not DICOM: its bytes travel in ``payload``
    (kept in the store) rather than as a file in the data directory; ``payload_path`` then only
    gives the output's name and suffix. DICOM outputs stay files in the job's folder.
    """

    kind: OutputKind
    destination: Destination
    key: str
    payload_path: Path
    payload: bytes | None = None
    meta: OutboxMeta = Field(default_factory=OutboxMeta)


class OutboxItem(NewOutput):
    """A queued output as the dispatcher claims it."""

    id: int
    state: str
    attempts: int
    last_error: str | None = None
    next_attempt_at: float
    created_at: float | None = None
    delivered_at: float | None = None

    @property
    def available(self) -> bool:
        return self.payload is not None or self.payload_path.exists()

    def read_bytes(self) -> bytes:
        """The output's content: from the store, or from its file for a DICOM output."""
        return self.payload if self.payload is not None else self.payload_path.read_bytes()
