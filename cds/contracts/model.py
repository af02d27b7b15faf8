"""What a model is to the rest of the service: the two protocols and how a model says it cannot run.

A model package exposes ``load(settings) -> StudyModel | CaseModel``; the pipeline's registry
calls it and records :class:`ModelUnavailable` with its reason, which ``cds status`` and the job
record show. Keeping the protocol here lets runtimes and the pipeline meet without importing
each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from cds.contracts.domain import CaseInput, ModelIdentity, RecurrenceResult, StudyAnalysis, StudyInput
from cds.contracts.errors import ModelUnavailable

__all__ = ["CaseModel", "ModelUnavailable", "StudyModel"]


@runtime_checkable
class StudyModel(Protocol):
    """Runs on one study of one modality (mammography, slide, ultrasound)."""

    identity: ModelIdentity
    modalities: frozenset[str]

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis: ...


@runtime_checkable
class CaseModel(Protocol):
    """Runs on a patient case (everything known across studies): the recurrence model."""

    identity: ModelIdentity

    def analyze_case(self, case: CaseInput) -> RecurrenceResult: ...
