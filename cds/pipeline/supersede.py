"""What a case re-evaluation replaces, and which recurrence answer is the case's primary one.

One current answer per question: each case evaluation renders one PDF and one DiagnosticReport
with every model's latest result for the patient. In FHIR the case's resources have one
identifier per patient and question, so a re-evaluation updates them in place (the dispatcher's
upsert, ``cds.fhir.writeback``). DICOM objects cannot be updated in a PACS, so the new ones name
the ones they replace: this module finds the previous evaluation's DICOM outputs in the store
(the outbox rows of the patient's last case job) for the writers to reference.
"""

from __future__ import annotations

from pathlib import Path

from cds.contracts.domain import RecurrenceResult
from cds.store import Store


def previous_dicom_outputs(store: Store, patient_key: str, job_id: int) -> dict[str, Path]:
    """Output role (the key's last part: ``case-sr``, ``encapsulated-pdf``) -> DICOM payload of
    the patient's previous case evaluation; empty for the first one (or a re-run of this job)."""
    last = store.case_last_job(patient_key)
    if last is None or last == job_id:
        return {}
    return {item.key.rsplit("/", 1)[-1]: item.payload_path for item in store.outbox_of_job(last)
            if item.kind == "dicom" and item.payload_path.exists()}


def choose_recurrence(results: list[RecurrenceResult], primary: str
                      ) -> tuple[RecurrenceResult | None, list[RecurrenceResult]]:
    """The primary answer (``settings.recurrence_primary`` when that variant answered, else the
    first) and the others, shown beside it."""
    if not results:
        return None, []
    lead = next((r for r in results if r.scope == primary), results[0])
    return lead, [r for r in results if r is not lead]
