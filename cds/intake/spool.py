"""Accepting one instance file into the spool and the store: shared by the DICOM listener and
`cds analyze`, so both refuse the same bad input with the same status and record.

Order matters and is the durability contract: check the header, fsync and rename into the spool,
fsync the folder, index in the store; only then may the caller acknowledge.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cds.audit.trail import AssociationReceipts, audit_receipt
from cds.contracts.domain import InstanceRecord
from cds.contracts.settings import Settings
from cds.contracts.uids import is_valid_uid
from cds.intake.instance_check import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    InstanceMeta,
    InstanceProblem,
    inspect_instance,
)
from cds.intake.spool_paths import place_new, spool_path
from cds.intake.structure import STATUS_INTERNAL
from cds.security.privacy import scrub_text
from cds.store import Store
from cds.store.durable import OUT_OF_SPACE

log = logging.getLogger(__name__)

ORPHAN_AGE_S = 300.0  # an unindexed spool file older than this was left by a crash


@dataclass(frozen=True)
class IntakeOutcome:
    status: int
    reason: str = ""
    meta: InstanceMeta | None = None
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status == STATUS_SUCCESS


def _status_for(exc: BaseException) -> int:
    if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE:
        return STATUS_OUT_OF_RESOURCES
    if "disk is full" in str(exc) or "database or disk is full" in str(exc):
        return STATUS_OUT_OF_RESOURCES
    return STATUS_PROCESSING_FAILURE


def refuse(settings: Settings, store: Store, calling_ae: str, sop_uid: str, status: int,
           reason: str, tmp: Path | None) -> int:
    """Record a refusal (kept in <data>/rejected for inspection) and return its status.

    ``sop_uid`` comes from the peer: it is logged and recorded only if it is a valid UID.
    """
    sop_uid = sop_uid if is_valid_uid(sop_uid) else ""
    reason = scrub_text(reason)  # parser messages can quote raw element values (patient data)
    quarantine = ""
    if tmp is not None and tmp.exists():
        rejected = settings.data_dir / "rejected"
        try:
            rejected.mkdir(parents=True, exist_ok=True)
            target = rejected / f"{int(time.time() * 1000)}_{tmp.name}"
            os.replace(tmp, target)
            quarantine = str(target)
        except OSError:
            tmp.unlink(missing_ok=True)  # never leave a received file behind in incoming/
    log.warning("instance %s refused with 0x%04X: %s", sop_uid or "(unknown)", status, reason)
    try:
        store.record_rejection(calling_ae, sop_uid, status, reason, quarantine)
    except Exception:  # the store may itself be out of space; the status still goes back
        log.exception("could not record the refusal of %s", sop_uid)
    return status


def spool_instance(settings: Settings, store: Store, tmp: Path, calling_ae: str, *,
                   command_sop_class: str, command_sop_instance: str,
                   receipts: AssociationReceipts | None = None) -> IntakeOutcome:
    """Check, spool and index one received file; the file at ``tmp`` is moved or quarantined.

    Whatever goes wrong, the answer is a status with a recorded reason, never an exception. The
    BALP receipt goes to ``receipts`` (one record per study per association, the DICOM listener)
    or, without it, is written for this instance alone (STOW-RS, ``cds analyze``).
    """
    try:
        outcome = _spool_checked(settings, store, tmp, calling_ae, command_sop_class=command_sop_class,
                                 command_sop_instance=command_sop_instance)
    except Exception as exc:  # a bug or an unforeseen input: refused, recorded, file quarantined
        log.exception("intake of an instance failed unexpectedly")
        reason = f"internal error while checking the instance ({type(exc).__name__})"
        refuse(settings, store, calling_ae, command_sop_instance, STATUS_INTERNAL, reason,
               tmp if tmp.exists() else None)
        return IntakeOutcome(STATUS_INTERNAL, reason)
    if outcome.ok and outcome.meta is not None and not outcome.duplicate:  # BALP receipt record
        meta = outcome.meta
        if receipts is not None:
            receipts.received(patient_key=meta.patient.key, study_uid=meta.study_instance_uid,
                              sop_uid=meta.sop_instance_uid)
        else:
            audit_receipt(settings, patient_key=meta.patient.key, calling_ae=calling_ae,
                          study_uid=meta.study_instance_uid, sop_uid=meta.sop_instance_uid)
    return outcome


def _spool_checked(settings: Settings, store: Store, tmp: Path, calling_ae: str, *,
                   command_sop_class: str, command_sop_instance: str) -> IntakeOutcome:
    try:
        meta = inspect_instance(tmp, command_sop_class=command_sop_class,
                                command_sop_instance=command_sop_instance)
    except InstanceProblem as problem:
        refuse(settings, store, calling_ae, command_sop_instance, problem.status, problem.reason, tmp)
        return IntakeOutcome(problem.status, problem.reason)

    record = InstanceRecord(
        sop_instance_uid=meta.sop_instance_uid, sop_class_uid=meta.sop_class_uid,
        study_instance_uid=meta.study_instance_uid, series_instance_uid=meta.series_instance_uid,
        modality=meta.modality, path=tmp, transfer_syntax_uid=meta.transfer_syntax_uid,
        calling_ae=calling_ae,
    )
    # No "already indexed?" query first: a duplicate finds its spool file taken (place_new is
    # False) or, sent under other Study/Series UIDs, is refused by the index (record_instance is
    # False); one query less for every instance that is not a duplicate.
    dest = spool_path(settings.spool_dir, meta.study_instance_uid, meta.series_instance_uid,
                      meta.sop_instance_uid)
    placed = False
    try:
        size = tmp.stat().st_size
        placed = place_new(tmp, dest)
        if not placed:  # another association is storing this very instance, or a crash left it
            return _existing_file(settings, store, tmp, calling_ae, record, meta)
        indexed = store.record_instance(
            record.model_copy(update={"path": dest, "size_bytes": size}),
            meta.patient, accession=meta.accession_number, study_date=meta.study_date,
        )
        if not indexed:  # stored before under other Study/Series UIDs: that first copy stays
            dest.unlink(missing_ok=True)
            log.info("duplicate instance %s acknowledged (already stored)", meta.sop_instance_uid)
            return IntakeOutcome(STATUS_SUCCESS, "duplicate", meta, duplicate=True)
    except Exception as exc:  # not acknowledged: the sender keeps it and retries
        if placed and not store.instance_exists(meta.sop_instance_uid):
            try:
                dest.unlink()
            except OSError:
                pass
        status = _status_for(exc)
        reason = f"could not store the instance: {type(exc).__name__} {getattr(exc, 'strerror', '') or ''}".strip()
        refuse(settings, store, calling_ae, meta.sop_instance_uid, status, reason,
               tmp if tmp.exists() else None)
        return IntakeOutcome(status, reason, meta)
    log.info("stored %s (%s, study %s, %d bytes)", meta.sop_instance_uid, meta.modality,
             meta.study_instance_uid, size)
    return IntakeOutcome(STATUS_SUCCESS, "", meta)


def _existing_file(settings: Settings, store: Store, tmp: Path, calling_ae: str,
                   record: InstanceRecord, meta: InstanceMeta) -> IntakeOutcome:
    """The spool file exists already: acknowledged duplicate if indexed, else a retryable refusal.

    An indexed file was acknowledged and is never replaced. An unindexed one is either being
    indexed by another association right now (refused for now: the sender retries) or, when older
    than :data:`ORPHAN_AGE_S`, left by a crash between placing and indexing: never acknowledged,
    so the new copy takes its place.
    """
    if store.instance_exists(meta.sop_instance_uid):
        tmp.unlink(missing_ok=True)
        store.record_instance(record, meta.patient)
        log.info("duplicate instance %s acknowledged (already stored)", meta.sop_instance_uid)
        return IntakeOutcome(STATUS_SUCCESS, "duplicate", meta, duplicate=True)
    dest = spool_path(settings.spool_dir, meta.study_instance_uid, meta.series_instance_uid,
                      meta.sop_instance_uid)
    try:
        orphan = time.time() - dest.stat().st_mtime > ORPHAN_AGE_S
    except FileNotFoundError:
        orphan = True
    if orphan:
        log.warning("replacing the unindexed spool file of %s left by a crash", meta.sop_instance_uid)
        dest.unlink(missing_ok=True)
        if place_new(tmp, dest):
            size = dest.stat().st_size
            store.record_instance(record.model_copy(update={"path": dest, "size_bytes": size}),
                                  meta.patient, accession=meta.accession_number, study_date=meta.study_date)
            return IntakeOutcome(STATUS_SUCCESS, "", meta)
    reason = ("an instance with this SOP Instance UID is being stored by another association "
              "or awaits indexing; not replaced, send it again later")
    refuse(settings, store, calling_ae, meta.sop_instance_uid, STATUS_OUT_OF_RESOURCES, reason, None)
    tmp.unlink(missing_ok=True)
    return IntakeOutcome(STATUS_OUT_OF_RESOURCES, reason, meta)
