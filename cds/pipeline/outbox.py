"""Render a job's outputs with the writers and queue each in the outbox.

Where an output goes is decided here, once, from the settings: DICOM to the PACS when one is
configured, FHIR resources to the FHIR server when one is configured, everything else (and the
PDF always) to the output folder. The outbox key makes a re-run queue nothing twice.
"""

from __future__ import annotations

from pathlib import Path

from cds.contracts.domain import ClinicalContext, PatientRef, RecurrenceResult, StudyAnalysis
from cds.contracts.handoffs import Destination, NewOutput, OutboxMeta, OutputKind
from cds.contracts.settings import Settings
from cds.store import Store
from cds.writers import outputs as writers
from cds.writers.outputs import OutputArtifact


def destination_for(settings: Settings, kind: OutputKind) -> Destination:
    if kind == "dicom" and settings.pacs_configured:
        return "pacs"
    if kind == "fhir" and settings.fhir_base_url:
        return "fhir"
    return "folder"


def source_files(store: Store, analyses: list[StudyAnalysis]) -> dict[str, Path]:
    """SOP Instance UID -> spooled file for every study the analyses came from."""
    return {i.sop_instance_uid: i.path for a in analyses
            for i in store.study_instances(a.study_instance_uid)}


def queue(settings: Settings, store: Store, job_id: int, artifacts: list[OutputArtifact]) -> int:
    """Put each artifact in the outbox. FHIR resources and the PDF name the patient: their bytes
    go into the store and their files are removed once it committed, so no patient data stays in a
    non-DICOM file of the data directory."""
    for a in artifacts:
        in_store = a.kind != "dicom"
        store.outbox_add(NewOutput(
            kind=a.kind, destination=destination_for(settings, a.kind), key=a.key, payload_path=a.path,
            payload=a.path.read_bytes() if in_store else None,
            meta=OutboxMeta(description=a.description, job_id=job_id, resource_type=a.resource_type)))
        if in_store:
            a.path.unlink(missing_ok=True)
    return len(artifacts)


def queue_study_outputs(settings: Settings, store: Store, job_id: int, out_dir: Path,
                        analyses: list[StudyAnalysis]) -> int:
    """Queue each output as soon as it is written (a SEG goes out while the SR is built)."""
    sources = source_files(store, analyses)
    return sum(queue(settings, store, job_id, [art]) for analysis in analyses
               for art in writers.iter_study_outputs(settings, analysis, out_dir, sources=sources))


def queue_case_outputs(settings: Settings, store: Store, job_id: int, out_dir: Path, *,
                       patient: PatientRef, analyses: list[StudyAnalysis], clinical: ClinicalContext,
                       recurrence: RecurrenceResult | None,
                       alternatives: list[RecurrenceResult] | None = None,
                       replaces: dict[str, Path] | None = None) -> int:
    sources = source_files(store, analyses)
    artifacts = writers.case_outputs(settings, patient, analyses, clinical, recurrence, out_dir,
                                     sources=sources, alternatives=alternatives, replaces=replaces)
    return queue(settings, store, job_id, artifacts)
