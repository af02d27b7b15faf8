"""What the stages call: one AuditEvent per receipt, query, disclosure and read.

Records go to ``<data_dir>/audit/audit.jsonl`` (see :mod:`cds.audit.chain`) and, when
``audit_syslog_host`` is set, as RFC 5424 syslog to the ATNA repository. Writing the trail never
fails the caller's work: a failure is logged (without patient data) and the work goes on; the
local record is written before the forward is tried.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cds.audit import events as ev
from cds.audit.chain import append
from cds.audit.syslog import send_syslog
from cds.contracts.settings import Settings

log = logging.getLogger(__name__)


def audit_path(settings: Settings) -> Path:
    return settings.data_dir / "audit" / "audit.jsonl"


def _observer(settings: Settings) -> str:
    return settings.audit_source_id or settings.ae_title


def record(settings: Settings, event: dict[str, Any]) -> None:
    """Append ``event`` to the chain and forward it; never raises."""
    if not settings.audit_enabled:
        return
    try:
        append(audit_path(settings), event)
    except Exception as exc:  # the audit trail must not stop clinical work; say so loudly
        # the message of an append failure is the OS error and the log path: no patient data
        log.error("audit record %s could not be written: %s: %s", event.get("id"),
                  exc.__class__.__name__, exc)
        return
    if settings.audit_syslog_host:
        try:
            send_syslog(settings, event)
        except OSError as exc:
            log.warning("audit record %s not forwarded to syslog %s:%s: %s", event.get("id"),
                        settings.audit_syslog_host, settings.audit_syslog_port, exc.strerror or exc)


def audit_receipt(settings: Settings, *, patient_key: str, study_uid: str, sop_uid: str,
                  calling_ae: str, peer_address: str = "", outcome: str = "0", reason: str = "") -> None:
    """An instance received over DICOM (or read in by ``cds analyze``) into the spool."""
    record(settings, ev.audit_event(
        type_=ev.INSTANCES_TRANSFERRED, subtypes=[], action="C", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, calling_ae, network=peer_address, network_type="2"),
                ev.agent(ev.DESTINATION_ROLE, settings.ae_title, network=os.uname().nodename, network_type="1")],
        entities=[e for e in (ev.patient_entity(patient_key) if patient_key else None,
                              ev.study_entity(study_uid, 1) if study_uid else None,
                              ev.object_entity(sop_uid, "SOP Instance UID", "3", "Report")) if e],
        outcome=outcome, outcome_desc=reason))


def audit_query(settings: Settings, *, patient_key: str, server: str, resource_types: list[str],
                fhir_patient_ref: str = "", outcome: str = "0") -> None:
    """Clinical context read from FHIR (a server's base URL, or an offline bundle folder)."""
    record(settings, ev.audit_event(
        type_=ev.REST_TYPE, subtypes=[ev.SEARCH], action="E", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, settings.ae_title, requestor=True),
                ev.agent(ev.DESTINATION_ROLE, server, network=server)],
        entities=[ev.patient_entity(patient_key, fhir_patient_ref)]
        + [ev.object_entity(t, "searched by patient", "24", "Query") for t in resource_types],
        outcome=outcome, profile="IHE.BasicAudit.PatientQuery"))


def audit_disclosure(settings: Settings, *, patient_key: str, destination: str, peer: str,
                     output_kind: str, output_key: str, response: str, patient_unknown: str = "") -> None:
    """A result delivered to the PACS, the FHIR server or the output folder.

    ``patient_unknown`` (why the patient could not be found) marks a disclosure whose patient is
    unknown with an explicit patient entity rather than leaving the patient out silently.
    """
    if patient_key:
        patients = [ev.patient_entity(patient_key)]
    elif patient_unknown:
        patients = [ev.unknown_patient_entity(patient_unknown)]
    else:
        patients = []
    record(settings, ev.audit_event(
        type_=ev.EXPORT, subtypes=[ev.DISCLOSE], action="R", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, settings.ae_title, requestor=True),
                ev.agent(ev.DESTINATION_ROLE, destination, network=peer)],
        entities=patients + [ev.object_entity(output_key, f"{output_kind}: {response}"[:200])],
        profile="IHE.BasicAudit.PrivacyDisclosure.Source"))


def audit_read(settings: Settings, *, user: str, what: str, patient_keys: list[str]) -> None:
    """Patient data shown to a person (``cds status``) or read by a tool."""
    record(settings, ev.audit_event(
        type_=ev.REST_TYPE, subtypes=[ev.READ], action="R", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, user, requestor=True),
                ev.agent(ev.DESTINATION_ROLE, settings.ae_title)],
        entities=[ev.patient_entity(k) for k in patient_keys[:200]]
        + [ev.object_entity(what, "read")], profile="IHE.BasicAudit.PatientRead"))


def audit_assessment(settings: Settings, *, user: str, patient_key: str, study_uid: str, review_id: int,
                     result_id: int, outcome: str) -> None:
    """A clinician's assessment of an AI result recorded (IHE AIRA): who assessed which result of
    which study, and how. The reason and decision texts are not copied (free text may name the
    patient); they are in the store and the assessment SR."""
    record(settings, ev.audit_event(
        type_=ev.REST_TYPE, subtypes=[ev.CREATE], action="C", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, user, requestor=True),
                ev.agent(ev.DESTINATION_ROLE, settings.ae_title)],
        entities=([ev.patient_entity(patient_key)] if patient_key else [])
        + ([ev.study_entity(study_uid)] if study_uid else [])
        + [ev.object_entity(f"review/{review_id}", f"result {result_id} {outcome}")],
        profile="IHE.BasicAudit.Create"))
