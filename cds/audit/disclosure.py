"""The disclosure record of one delivered output: which patient's result went where."""

from __future__ import annotations

from cds.audit.trail import audit_disclosure
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.store import Store


def _peer(settings: Settings, destination: str) -> str:
    if destination == "pacs":
        if settings.dicomweb_url:
            return settings.dicomweb_url
        return f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"
    if destination == "fhir":
        return settings.fhir_base_url
    return str(settings.output_dir)


def audit_delivery(settings: Settings, store: Store, item: OutboxItem, response: str) -> None:
    """Record the delivery of ``item`` (never raises: the output is delivered either way)."""
    patient_key = ""
    try:
        job = store.job(item.meta.job_id) if item.meta.job_id is not None else None
        patient_key = getattr(job.payload, "patient_key", "") if job is not None else ""
    except Exception:  # a missing job row must not hide the disclosure itself
        patient_key = ""
    audit_disclosure(settings, patient_key=patient_key, destination=item.destination,
                     peer=_peer(settings, item.destination), output_kind=item.kind,
                     output_key=item.key, response=response)
