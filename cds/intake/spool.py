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

from cds.contracts.domain import InstanceRecord
from cds.contracts.settings import Settings
from cds.intake.instance_check import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    InstanceMeta,
    InstanceProblem,
    inspect_instance,
)
from cds.store import Store
from cds.store.durable import OUT_OF_SPACE, move_durable

log = logging.getLogger(__name__)


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
    """Record a refusal (kept in <data>/rejected for inspection) and return its status."""
    quarantine = ""
    if tmp is not None and tmp.exists():
        rejected = settings.data_dir / "rejected"
        try:
            rejected.mkdir(parents=True, exist_ok=True)
            target = rejected / f"{int(time.time() * 1000)}_{tmp.name}"
            os.replace(tmp, target)
            quarantine = str(target)
        except OSError:
            pass
    log.warning("instance %s refused with 0x%04X: %s", sop_uid or "(unknown)", status, reason)
    try:
        store.record_rejection(calling_ae, sop_uid, status, reason, quarantine)
    except Exception:  # the store may itself be out of space; the status still goes back
        log.exception("could not record the refusal of %s", sop_uid)
    return status


def spool_instance(settings: Settings, store: Store, tmp: Path, calling_ae: str, *,
                   command_sop_class: str, command_sop_instance: str) -> IntakeOutcome:
    """Check, spool and index one received file; the file at ``tmp`` is moved or quarantined."""
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
    if store.instance_exists(meta.sop_instance_uid):
        store.record_instance(record, meta.patient)  # counts the duplicate, keeps the first copy
        log.info("duplicate instance %s acknowledged (already stored)", meta.sop_instance_uid)
        return IntakeOutcome(STATUS_SUCCESS, "duplicate", meta, duplicate=True)

    dest = settings.spool_dir / meta.study_instance_uid / meta.series_instance_uid / f"{meta.sop_instance_uid}.dcm"
    try:
        size = tmp.stat().st_size
        move_durable(tmp, dest)
        store.record_instance(
            record.model_copy(update={"path": dest.resolve(), "size_bytes": size}),
            meta.patient, accession=meta.accession_number, study_date=meta.study_date,
        )
    except Exception as exc:  # not acknowledged: the sender keeps it and retries
        if dest.exists() and not store.instance_exists(meta.sop_instance_uid):
            try:
                dest.unlink()
            except OSError:
                pass
        status = _status_for(exc)
        reason = f"could not store the instance: {exc}"
        refuse(settings, store, calling_ae, meta.sop_instance_uid, status, reason,
               tmp if tmp.exists() else None)
        return IntakeOutcome(status, reason, meta)
    log.info("stored %s (%s, study %s, %d bytes)", meta.sop_instance_uid, meta.modality,
             meta.study_instance_uid, size)
    return IntakeOutcome(STATUS_SUCCESS, "", meta)
