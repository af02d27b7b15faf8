"""The disclosure record of one delivered output: which patient's result went where."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from cds.audit.trail import disclosure_event
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.store import Store

log = logging.getLogger(__name__)


def _peer(settings: Settings, destination: str) -> str:
    if destination == "pacs":
        if settings.dicomweb_url:
            return settings.dicomweb_url
        return f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"
    if destination == "fhir":
        return settings.fhir_base_url
    return str(settings.output_dir)


def delivery_event(settings: Settings, store: Store, item: OutboxItem, response: str) -> dict[str, Any] | None:
    """The disclosure record of the delivery of ``item``, or None when the audit trail is off.

    Built before the transaction that marks the item delivered, which stages it (the dispatcher);
    never raises for an unreadable job: when the job that made the output cannot be read, the
    disclosure is still recorded, marked "patient unknown", and the outbox and job ids are logged
    so the patient can be traced.
    """
    if not settings.audit_enabled:
        return None
    job_id = item.meta.job_id
    patient_key, unknown = "", ""
    try:
        job = store.job(job_id) if job_id is not None else None
    except (sqlite3.Error, ValueError) as exc:  # unreadable row (ValidationError is a ValueError)
        job, unknown = None, f"job {job_id} could not be read ({exc.__class__.__name__})"
    if job is not None:
        patient_key = getattr(job.payload, "patient_key", "") or ""
        if not patient_key:
            unknown = f"job {job_id} names no patient"
    elif not unknown:
        unknown = f"job {job_id} not found" if job_id is not None else "output has no job"
    if unknown:
        log.warning("disclosure of outbox item %s (job %s) recorded with patient unknown: %s",
                    item.id, job_id, unknown)
    return disclosure_event(settings, patient_key=patient_key, destination=item.destination,
                            peer=_peer(settings, item.destination), output_kind=item.kind,
                            output_key=item.key, response=response, patient_unknown=unknown)
