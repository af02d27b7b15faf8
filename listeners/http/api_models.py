"""The API's response models (declared, so the OpenAPI document states exactly what comes back)."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from cds.store.admin import ModelActivity
from cds.store.rows import StudyRow

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing, newest first. ``next_cursor``: pass it as ``cursor`` for the next page."""

    items: list[T]
    limit: int
    offset: int
    next_cursor: str | None = None


class StudyOut(StudyRow):
    """A study as the API shows it: today every column the store tracks (nothing internal there)."""


class CaseOut(BaseModel):
    patient_key: str
    updated_at: float | None = None
    fingerprint: str | None = None
    evaluated_at: float | None = None
    last_job_id: int | None = None


class JobOut(BaseModel):
    id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    next_run_at: float
    lease_until: float | None = None
    worker: str | None = None
    last_error: str | None = None
    created_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None


class ResultOut(BaseModel):
    id: int
    job_id: int | None = None
    kind: str | None = None
    patient_key: str | None = None
    study_uid: str | None = None
    modality: str | None = None
    model: str | None = None
    model_version: str | None = None
    status: str | None = None
    summary: str | None = None
    created_at: float | None = None
    seconds: float | None = Field(None, description="The model's inference time.")


class OutboxOut(BaseModel):
    """An output to deliver; its payload (which can name the patient) is never listed."""

    id: int
    kind: str
    destination: str
    key: str
    meta: dict[str, Any] = Field(default_factory=dict)
    state: str
    attempts: int
    last_error: str | None = None
    next_attempt_at: float
    created_at: float | None = None
    delivered_at: float | None = None


class RefusalOut(BaseModel):
    id: int
    at: float | None = None
    calling_ae: str | None = None
    sop_uid: str | None = None
    status: int | None = None
    reason: str | None = None


class ModelOut(BaseModel):
    """A model the settings name: loaded (with its card), failed to load (why), or disabled."""

    name: str
    version: str = ""
    state: Literal["loaded", "failed", "disabled"]
    enabled: bool = Field(description="False when an operator switched it off (model_switches).")
    why: str = ""
    card: dict[str, Any] | None = None
    activity: ModelActivity | None = None


class ModelSwitch(BaseModel):
    """An operator's switch of a model (persisted; the pipeline reads it before each run)."""

    model_config = {"extra": "forbid"}

    enabled: bool
    reason: str = Field("", max_length=500)
