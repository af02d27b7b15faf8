"""What the stages call: one AuditEvent per receipt, query, disclosure and read.

Records go to ``<data_dir>/audit/audit.jsonl`` (see :mod:`cds.audit.chain`) and, when
``audit_syslog_host`` is set, as RFC 5424 syslog to the ATNA repository. Writing the trail never
fails the caller's work: a failure is logged (without patient data) and the work goes on; the
local record is written before the forward is tried.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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


_held: ContextVar[list[dict[str, Any]] | None] = ContextVar("cds_audit_held", default=None)


@contextmanager
def holding() -> Iterator[list[dict[str, Any]]]:
    """Hold the records made in this context (this thread) instead of writing them.

    WHY: a job's records (the FHIR queries of a case job) belong to the job: the worker runs the
    handler inside ``holding()`` and stages what it holds with the job's outcome, in one store
    transaction (``Store.finish_job(..., audit=...)``); :func:`cds.audit.drain.drain`
    then appends them. Records of a thread the handler starts are not held (context variables do
    not cross into new threads): they are written directly, as outside any job.
    """
    held: list[dict[str, Any]] = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def record(settings: Settings, event: dict[str, Any]) -> None:
    """Append ``event`` to the chain and forward it (or hold it, inside :func:`holding`); never raises."""
    if not settings.audit_enabled:
        return
    held = _held.get()
    if held is not None:
        held.append(event)
        return
    try:
        append(audit_path(settings), event)
    except Exception as exc:  # the audit trail must not stop clinical work; say so loudly
        # the message of an append failure is the OS error and the log path: no patient data
        log.error("audit record %s could not be written: %s: %s", event.get("id"),
                  exc.__class__.__name__, exc)
        return
    forward(settings, event)


def forward(settings: Settings, event: dict[str, Any]) -> None:
    """Send a record already in the local chain to the syslog repository, when one is set; never raises."""
    if settings.audit_syslog_host:
        try:
            send_syslog(settings, event)
        except OSError as exc:
            log.warning("audit record %s not forwarded to syslog %s:%s: %s", event.get("id"),
                        settings.audit_syslog_host, settings.audit_syslog_port, exc.strerror or exc)


def audit_receipt(settings: Settings, *, patient_key: str, study_uid: str, sop_uid: str = "",
                  calling_ae: str, peer_address: str = "", outcome: str = "0", reason: str = "",
                  sop_uids: Sequence[str] = ()) -> None:
    """Instances of one study received over DICOM (or STOW-RS, or read in by ``cds analyze``).

    One "DICOM Instances Transferred" event names the study with its number of instances and each
    SOP Instance UID (``sop_uid`` for one, ``sop_uids`` for a batch), as DICOM PS3.15 A.5.3.13
    lists the instances of a study transferred in one association.
    """
    uids = [u for u in (sop_uid, *sop_uids) if u]
    record(settings, ev.audit_event(
        type_=ev.INSTANCES_TRANSFERRED, subtypes=[], action="C", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, calling_ae, network=peer_address, network_type="2"),
                ev.agent(ev.DESTINATION_ROLE, settings.ae_title, network=os.uname().nodename, network_type="1")],
        entities=[e for e in (ev.patient_entity(patient_key) if patient_key else None,
                              ev.study_entity(study_uid, len(uids)) if study_uid else None) if e]
        + [ev.object_entity(u, "SOP Instance UID", "3", "Report") for u in uids],
        outcome=outcome, outcome_desc=reason))


RECEIPT_BATCH_INSTANCES = 200  # instances named in one receipt record at most
RECEIPT_BATCH_AGE_S = 5.0  # a study's pending receipts are written once this old (on the next instance)


class AssociationReceipts:
    """The receipt records of one DICOM association: one per study, not one per instance.

    WHY: IHE ATNA/BALP's "DICOM Instances Transferred" is an event per study per association that
    lists the instances, and writing (flock + fsync) one record per instance cost about 15 % of a
    small instance's handling. What a crash costs, honestly: the first instance of each study in an
    association is recorded before it is acknowledged, so every transfer of a study leaves a
    record; later instances are recorded in batches (at most :data:`RECEIPT_BATCH_INSTANCES`, or
    once :data:`RECEIPT_BATCH_AGE_S` old at the next instance) and at the end of the association
    (released, aborted or cut). If the process dies mid-association, the instances of the last
    unwritten batch are missing from the trail; they are still in the store's index with their
    calling AE title and time of receipt.

    Handlers of one association run on its own thread, but the end of a connection may be seen
    on another: a lock keeps the batches whole.
    """

    def __init__(self, settings: Settings, calling_ae: str, peer_address: str = "") -> None:
        self.settings = settings
        self.calling_ae = calling_ae
        self.peer_address = peer_address
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._pending: dict[str, tuple[str, list[str], float]] = {}  # study -> (patient, uids, since)

    def received(self, *, patient_key: str, study_uid: str, sop_uid: str) -> None:
        """Note one instance stored; call before acknowledging it."""
        with self._lock:
            if study_uid not in self._seen:  # first of the study in this association: now
                self._seen.add(study_uid)
                self._write(patient_key, study_uid, [sop_uid])
                return
            key, uids, since = self._pending.get(study_uid, (patient_key, [], time.monotonic()))
            uids.append(sop_uid)
            self._pending[study_uid] = (key, uids, since)
            if len(uids) >= RECEIPT_BATCH_INSTANCES or time.monotonic() - since >= RECEIPT_BATCH_AGE_S:
                del self._pending[study_uid]
                self._write(key, study_uid, uids)

    def close(self) -> None:
        """Write every pending batch (the association ended, however it ended)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            for study_uid, (key, uids, _) in pending.items():
                self._write(key, study_uid, uids)

    def _write(self, patient_key: str, study_uid: str, uids: list[str]) -> None:
        audit_receipt(self.settings, patient_key=patient_key, study_uid=study_uid, sop_uids=uids,
                      calling_ae=self.calling_ae, peer_address=self.peer_address)


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
    """A result delivered to the PACS, the FHIR server or the output folder (see :func:`disclosure_event`)."""
    record(settings, disclosure_event(
        settings, patient_key=patient_key, destination=destination, peer=peer, output_kind=output_kind,
        output_key=output_key, response=response, patient_unknown=patient_unknown))


def disclosure_event(settings: Settings, *, patient_key: str, destination: str, peer: str,
                     output_kind: str, output_key: str, response: str,
                     patient_unknown: str = "") -> dict[str, Any]:
    """The disclosure record of a delivered result, built but not written (the dispatcher stages it
    with the output's ``delivered`` state).

    ``patient_unknown`` (why the patient could not be found) marks a disclosure whose patient is
    unknown with an explicit patient entity rather than leaving the patient out silently.
    """
    if patient_key:
        patients = [ev.patient_entity(patient_key)]
    elif patient_unknown:
        patients = [ev.unknown_patient_entity(patient_unknown)]
    else:
        patients = []
    return ev.audit_event(
        type_=ev.EXPORT, subtypes=[ev.DISCLOSE], action="R", observer=_observer(settings),
        agents=[ev.agent(ev.SOURCE_ROLE, settings.ae_title, requestor=True),
                ev.agent(ev.DESTINATION_ROLE, destination, network=peer)],
        entities=patients + [ev.object_entity(output_key, f"{output_kind}: {response}"[:200])],
        profile="IHE.BasicAudit.PrivacyDisclosure.Source")


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
