"""Typed rows the store's listing and lookup queries return (its own tables, read back as is)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class StudyRow(BaseModel):
    """One study as the ``studies`` table tracks it."""

    study_uid: str
    patient_key: str | None = None
    accession: str | None = None
    study_date: str | None = None
    first_received: float | None = None
    last_received: float | None = None
    state: str
    generation: int
    stable_at: float | None = None
    n_instances: int


class InstanceRow(BaseModel):
    """One indexed instance, with its spool path and how often it arrived again."""

    sop_uid: str
    sop_class: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    modality: str | None = None
    path: Path
    transfer_syntax: str | None = None
    size: int | None = None
    calling_ae: str | None = None
    received_at: float | None = None
    generation: int | None = None
    duplicates: int


class RejectionRow(BaseModel):
    """A refused instance, a refused association or a set of SOP classes refused at negotiation."""

    id: int
    at: float | None = None
    calling_ae: str | None = None
    sop_uid: str | None = None
    status: int | None = None
    reason: str | None = None
    quarantine_path: str | None = None


class CaseOverviewRow(BaseModel):
    """A patient's case with how many studies and which modalities it has, for ``cds status``."""

    patient_key: str
    updated_at: float | None = None
    fingerprint: str | None = None
    evaluated_at: float | None = None
    last_job_id: int | None = None
    n_studies: int
    modalities: str | None = None
