"""Outbox dispatch: deliver every queued output to its destination, exactly once.

Destinations: ``pacs`` (C-STORE with pynetdicom to ``pacs_ae_title@pacs_host:pacs_port``, or
STOW-RS with httpx to ``dicomweb_url``), ``fhir`` (conditional create on the resource's
identifier, or on its result tag for resources without one) and ``folder`` (copy into
``output_dir`` with fsync). An item is marked delivered only after the peer acknowledged it.
Outages (connection refused, timeouts, 5xx, DICOM "out of resources", association aborted) are
retried with exponential backoff (``job_backoff_base_s`` doubling, capped at
``job_backoff_max_s``) for as long as it takes; a permanent refusal (FHIR 4xx with its
OperationOutcome, a DICOM failure status, a STOW-RS 4xx) goes to the dead letter with the reason
and is never retried automatically.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from cds.store.durable import copy_durable
from cds.fhir.client import FhirError
from cds.contracts.settings import Settings
from cds.store import OutboxItem, Store, worker_name

log = logging.getLogger(__name__)

class Permanent(Exception):
    """The destination refused the item and will refuse it again: dead-letter it."""


class Transient(Exception):
    """The destination could not be reached or was temporarily unable: retry later."""


# ----------------------------------------------------------------------------------------------
# Delivery to each destination
# ----------------------------------------------------------------------------------------------


def deliver_folder(settings: Settings, item: OutboxItem) -> str:
    """Copy into ``output_dir/<kind>/`` under a name derived from the key (a re-copy overwrites
    the same file), via a temporary file, fsync and rename, so a crash never leaves half a file."""
    sub = item.kind if item.kind in ("dicom", "fhir", "pdf") else "other"
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in item.key)[-180:]
    target = settings.output_dir / sub / f"{safe}{item.payload_path.suffix}"
    copy_durable(item.payload_path, target)
    return f"written to {target}"


# DICOM status classes (PS3.4 Annex B): A7xx "Refused: out of resources" is transient;
# other Axxx/Cxxx failures (SOP class not supported, data set does not match, cannot
# understand) will fail again with the same object.
def _classify_dicom_status(status: int, sop_uid: str) -> str:
    if status == 0x0000:
        return "success"
    if status in (0xB000, 0xB006, 0xB007) or (status & 0xF000) == 0xB000:
        return "warning"
    if (status & 0xFF00) == 0xA700:
        raise Transient(f"PACS out of resources (status 0x{status:04X}) for {sop_uid}")
    raise Permanent(f"PACS refused {sop_uid} with status 0x{status:04X}")


def _resolve_subject(client: Any, resource: dict) -> None:
    """Turn a logical patient reference (identifier only) into ``Patient/<id>`` when the server
    knows the patient, so ``RiskAssessment?subject=Patient/<id>`` finds study-level results too.
    Left logical when the patient is not (yet) on the server."""
    subject = resource.get("subject")
    if not isinstance(subject, dict) or subject.get("reference") or not subject.get("identifier"):
        return
    ident = subject["identifier"]
    try:
        found = client.search("Patient", {"identifier": f"{ident.get('system', '')}|{ident.get('value', '')}"})
    except FhirError:
        return
    if len(found) == 1 and found[0].get("id"):
        subject["reference"] = f"Patient/{found[0]['id']}"


def deliver_cstore(settings: Settings, item: OutboxItem) -> str:
    import pydicom
    from pynetdicom import AE

    try:
        ds = pydicom.dcmread(item.payload_path)
    except Exception as exc:
        raise Permanent(f"payload {item.payload_path} is not readable DICOM: {exc}") from exc
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate(settings.pacs_host, settings.pacs_port, ae_title=settings.pacs_ae_title)
    if assoc.is_rejected:
        raise Transient(f"PACS {settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port} "
                        "rejected the association")
    if not assoc.is_established:
        raise Transient(f"PACS {settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port} "
                        "unreachable (association not established)")
    try:
        rsp = assoc.send_c_store(ds)
    finally:
        assoc.release()
    if rsp is None or "Status" not in rsp:
        raise Transient(f"no C-STORE response for {ds.SOPInstanceUID} (association aborted or timed out)")
    outcome = _classify_dicom_status(int(rsp.Status), str(ds.SOPInstanceUID))
    return f"C-STORE {outcome} (0x{int(rsp.Status):04X}) {ds.SOPInstanceUID}"


def deliver_stow(settings: Settings, item: OutboxItem, http: httpx.Client) -> str:
    boundary = uuid.uuid4().hex
    payload = item.payload_path.read_bytes()
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload
            + f"\r\n--{boundary}--\r\n".encode())
    url = settings.dicomweb_url.rstrip("/") + "/studies"
    auth = (settings.dicomweb_username, settings.dicomweb_password) if settings.dicomweb_username else None
    try:
        r = http.post(url, content=body, auth=auth, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
    except httpx.HTTPError as exc:
        raise Transient(f"STOW-RS {url}: {exc.__class__.__name__}: {exc}") from exc
    if r.status_code >= 500 or r.status_code in (408, 429):
        raise Transient(f"STOW-RS {url} answered {r.status_code}")
    if r.status_code >= 400:
        raise Permanent(f"STOW-RS {url} refused the instance ({r.status_code}): {r.text[:300]}")
    try:
        failed = r.json().get("00081198", {}).get("Value", [])
    except ValueError:
        failed = []
    if failed:
        raise Permanent(f"STOW-RS {url} reported a failed instance: {json.dumps(failed)[:300]}")
    return f"STOW-RS {r.status_code}"


def deliver_fhir(client: Any, item: OutboxItem) -> str:
    from cds.fhir.writeback import write_back

    try:
        resource = json.loads(item.payload_path.read_text())
    except (OSError, ValueError) as exc:
        raise Permanent(f"payload {item.payload_path} is not readable JSON: {exc}") from exc
    _resolve_subject(client, resource)
    try:
        status, rid = write_back(client, resource)
    except FhirError as exc:
        if exc.permanent:
            raise Permanent(exc.outcome or str(exc)) from exc
        raise Transient(str(exc)) from exc
    return f"{status} {'created' if status == 201 else 'already present'} {rid}"


# ----------------------------------------------------------------------------------------------
# The dispatcher
# ----------------------------------------------------------------------------------------------


class Dispatcher:
    """Claims due outbox items and delivers them; safe to run in several processes (leases)."""

    def __init__(self, settings: Settings, store: Store, *, worker: str | None = None,
                 lease_s: float = 120.0) -> None:
        self.settings = settings
        self.store = store
        self.worker = worker or worker_name("dispatch")
        self.lease_s = lease_s
        self._fhir: Any = None
        self._http: httpx.Client | None = None

    def close(self) -> None:
        if self._fhir is not None:
            self._fhir.close()
            self._fhir = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def _fhir_client(self) -> Any:
        if self._fhir is None:
            from cds.fhir.client import FhirClient

            self._fhir = FhirClient(self.settings)
        return self._fhir

    def _deliver(self, item: OutboxItem) -> str:
        if not item.payload_path.exists():
            raise Permanent(f"payload file {item.payload_path} is missing")
        if item.destination == "folder" or item.kind == "pdf":
            return deliver_folder(self.settings, item)
        if item.destination == "pacs":
            if self.settings.dicomweb_url:
                if self._http is None:
                    self._http = httpx.Client(timeout=self.settings.fhir_timeout_s)
                return deliver_stow(self.settings, item, self._http)
            if self.settings.pacs_host and self.settings.pacs_ae_title:
                return deliver_cstore(self.settings, item)
            raise Permanent("destination 'pacs' but neither pacs_host/pacs_ae_title nor dicomweb_url is set")
        if item.destination == "fhir":
            if not self.settings.fhir_base_url:
                raise Permanent("destination 'fhir' but fhir_base_url is not set")
            return deliver_fhir(self._fhir_client(), item)
        raise Permanent(f"unknown destination {item.destination!r}")

    def backoff(self, attempts: int) -> float:
        base = self.settings.job_backoff_base_s
        return min(base * (2 ** max(attempts - 1, 0)), self.settings.job_backoff_max_s)

    def handle(self, item: OutboxItem) -> str:
        """Deliver one claimed item and record the outcome; returns its new state."""
        try:
            response = self._deliver(item)
        except Permanent as exc:
            self.store.outbox_dead(item.id, str(exc))
            log.error("outbox %d (%s -> %s) dead-lettered: %s", item.id, item.kind, item.destination, exc)
            return "dead"
        except Transient as exc:
            if item.attempts >= self.settings.outbox_max_attempts:
                reason = f"gave up after {item.attempts} attempts: {exc}"
                self.store.outbox_dead(item.id, reason)
                log.error("outbox %d (%s -> %s) dead-lettered: %s", item.id, item.kind,
                          item.destination, reason)
                return "dead"
            delay = self.backoff(item.attempts)
            self.store.outbox_retry(item.id, str(exc), delay)
            log.warning("outbox %d (%s -> %s) attempt %d failed, retry in %.1fs: %s", item.id, item.kind,
                        item.destination, item.attempts, delay, exc)
            return "pending"
        except Exception as exc:  # an unexpected bug must not kill the loop nor lose the item
            delay = self.backoff(item.attempts)
            self.store.outbox_retry(item.id, f"{exc.__class__.__name__}: {exc}", delay)
            log.exception("outbox %d: unexpected error; retry in %.1fs", item.id, delay)
            return "pending"
        self.store.outbox_delivered(item.id, response)
        log.info("outbox %d (%s -> %s) delivered: %s", item.id, item.kind, item.destination, response)
        return "delivered"

    def run_once(self) -> int:
        """Deliver every item due now; returns how many were handled (any outcome)."""
        handled = 0
        seen: set[int] = set()
        while True:
            item = self.store.outbox_claim(self.worker, self.lease_s)
            if item is None:
                return handled
            if item.id in seen:  # failed earlier in this pass and already due again: next pass
                self.store.outbox_retry(item.id, item.last_error or "", self.backoff(item.attempts))
                return handled
            seen.add(item.id)
            self.handle(item)
            handled += 1

    def run_forever(self, stop: threading.Event, idle_s: float = 1.0) -> None:
        try:
            while not stop.is_set():
                if self.run_once() == 0:
                    stop.wait(idle_s)
        finally:
            self.close()
