"""DICOM listener: Verification and Storage SCP that acknowledges only what is durably stored.

Each C-STORE: pynetdicom streams the dataset to a temporary file in ``<data>/incoming`` (never the
whole instance in memory: a slide level can be gigabytes), the header is checked without reading
pixel data, the file is fsynced and renamed into ``<data>/spool/<study>/<series>/<sop>.dcm``,
the folder is fsynced, the instance is indexed in the store, and only then Success is returned.
A refused instance gets a specific status, a row in ``rejections`` and a copy in
``<data>/rejected`` for inspection; it never aborts the association. The BALP receipt is one
record per study per association (:class:`cds.audit.trail.AssociationReceipts`): the first
instance of each study is recorded before its Success, the rest in batches and at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, dimse_messages, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from cds.audit.trail import AssociationReceipts
from cds.contracts.settings import Settings
from cds.intake.completeness import content_complete
from cds.intake.instance_check import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
)
from cds.intake.spool import refuse, spool_instance
from cds.intake.structure import STATUS_INTERNAL
from cds.security.tls import dicom_server_context
from cds.store import Store, worker_name
from cds.store.durable import OUT_OF_SPACE
from cds.store.jobs import process_gone, process_space
from listeners.dicom_admission import RejectionLog, printable_ae, rejection_reason
from listeners.dicom_guard import NetLimits, install_guard
from listeners.dicom_tls import identity_check

log = logging.getLogger(__name__)

STORAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    # mammograms as archives also hold them: DX, and Secondary Capture with Modality MG (film,
    # priors, CBIS-DDSM); tomosynthesis is accepted so that it is reported as not analysed
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "VL Whole Slide Microscopy Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
}


class SpoolTempFile:
    """The file pynetdicom writes a received dataset into, placed in our incoming folder.

    Two reasons it replaces pynetdicom's NamedTemporaryFile: the file must be on the spool's
    filesystem so the final rename is atomic (and a multi-GB slide never lands on a RAM-backed
    /tmp), and a full disk must not raise inside pynetdicom's reader thread, which would abort
    the whole association. A write error is kept in :attr:`error`, the partial file is removed
    at once to give the space back, the rest of the stream is drained, and the handler answers
    "out of resources" for this one instance.
    """

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=directory)
        self.name = name
        self._f = os.fdopen(fd, "wb", buffering=4 << 20)
        self.error: OSError | None = None
        self.file = _NoFlush()  # pynetdicom flushes after every PDV; we flush once, at the end

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                self._f.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        try:
            self._f.close()
        except OSError:
            pass
        try:
            os.unlink(self.name)
        except OSError:
            pass

    def finish(self) -> None:
        """Flush buffered bytes; a late ENOSPC surfaces here as :attr:`error`."""
        if self.error is None and not self._f.closed:
            try:
                self._f.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        self.finish()
        if not self._f.closed:
            try:
                self._f.close()
            except OSError as exc:
                self._fail(exc)


class _NoFlush:
    def flush(self) -> None:  # noqa: D401 - pynetdicom API shape
        return None


def _spool_tempfile(*_args: Any, **_kwargs: Any) -> SpoolTempFile:
    """Factory installed into pynetdicom: finds the receiving AE through the reader thread."""
    dul = threading.current_thread()
    assoc = getattr(dul, "assoc", None)
    directory = getattr(getattr(assoc, "ae", None), "cds_incoming_dir", None)
    sink = SpoolTempFile(Path(directory) if directory else Path(tempfile.gettempdir()))
    if assoc is not None:  # removed when the connection closes unless a handler took it
        assoc.__dict__.setdefault("cds_tempfiles", []).append(sink)
    return sink


def discard_unclaimed(assoc: Any) -> None:
    """Remove the temporary files of an association that no C-STORE handler took (aborted,
    cut-off or failed transfers): nothing received stays in ``incoming/``."""
    for sink in getattr(assoc, "cds_tempfiles", []):
        if getattr(sink, "claimed", False):
            continue
        sink.close()
        try:
            os.unlink(sink.name)
        except OSError:
            pass


def install_streaming_receive() -> None:
    """Make pynetdicom stream C-STORE datasets to disk through :class:`SpoolTempFile`.

    pynetdicom exposes this only as process-wide switches; setting them is idempotent.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _spool_tempfile  # type: ignore[assignment]


class SharedPortServer(ThreadedAssociationServer):
    """The association server with SO_REUSEPORT (``CDS_LISTEN_REUSE_PORT``): several listener
    processes bind one port and the kernel balances new associations between them."""

    def server_bind(self) -> None:  # pynetdicom binds in its own server_bind (no allow_reuse_port)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class DicomListener:
    """The Storage SCP bound to one store and data folder."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.server: Any = None
        self.rejections = RejectionLog(store, settings.dicom_rejection_record_interval_s)
        settings.ensure_dirs()
        self.incoming = settings.incoming_dir / worker_name("listen")  # this process's transfers

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.cds_incoming_dir = str(self.incoming)  # read by _spool_tempfile
        ae.maximum_pdu_size = self.settings.max_pdu
        ae.acse_timeout = self.settings.dicom_acse_timeout_s
        ae.network_timeout = self.settings.dicom_network_timeout_s
        ae.dimse_timeout = self.settings.dicom_dimse_timeout_s
        ae.maximum_associations = self.settings.dicom_max_associations
        ae.require_called_aet = self.settings.dicom_require_called_ae
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for uid in STORAGE_SOP_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        if self.settings.allowed_aes:
            ae.require_calling_aet = list(self.settings.allowed_aes)
        return ae

    def start(self) -> None:
        """Start serving in background threads (returns at once)."""
        install_streaming_receive()
        self._clean_incoming()
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
            (evt.EVT_RELEASED, self._on_released),
        ]
        if self.settings.tls_ae_identities:  # calling AE titles bound to certificate identities
            handlers.append((evt.EVT_REQUESTED, identity_check(self.settings, self.store)))
        self.server = self._make_ae().make_server(
            (self.settings.host, self.settings.port), evt_handlers=handlers,
            ssl_context=dicom_server_context(self.settings),  # DICOM TLS, BCP 195 (cds.security.tls)
            server_class=SharedPortServer if self.settings.listen_reuse_port else ThreadedAssociationServer,
        )
        self.server.ae._servers.append(self.server)  # as AE.start_server does: its shutdown() removes it
        threading.Thread(target=make_target(self.server.serve_forever), name="cds-dicom-accept", daemon=True).start()
        install_guard(self.server, NetLimits.from_settings(self.settings),
                      lambda peer, reason: self.rejections.record(peer, "", reason))
        log.info("DICOM listener %s on %s:%s", self.settings.ae_title, self.settings.host,
                 self.settings.port)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1]) if self.server else self.settings.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _clean_incoming(self) -> None:
        """Partial files of transfers cut by a crash were never acknowledged: remove them.

        Each listener process receives into its own folder (named by :func:`worker_name`), so on a
        shared spool one listener's start never removes another's transfers in flight; the folders
        of dead listeners this one can see are removed, the rest age out (retention)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        space = process_space()
        for folder in self.settings.incoming_dir.iterdir():
            if folder.is_dir() and folder != self.incoming and process_gone(folder.name, space):
                shutil.rmtree(folder, ignore_errors=True)

    # -- handlers ---------------------------------------------------------------------------
    def _on_rejected(self, event: Any) -> None:
        assoc = event.assoc
        diagnostic, reason = rejection_reason(assoc, self.settings.ae_title, self.settings.allowed_aes)
        peer = str(getattr(assoc.requestor, "address", "") or "")
        calling = printable_ae(getattr(assoc.requestor.primitive, "calling_ae_title", ""))
        self.rejections.record(peer, calling, reason, diagnostic)

    def _on_accepted(self, event: Any) -> None:
        """Record, once per association, the SOP classes we refused at negotiation.

        A sender that proposes every storage class (dcmtk storescu does) gets most of them
        refused; one row per association keeps the record readable.
        """
        refused = sorted({cx.abstract_syntax for cx in event.assoc.rejected_contexts})
        if not refused:
            return
        shown = ", ".join(refused[:8]) + (f" and {len(refused) - 8} more" if len(refused) > 8 else "")
        reason = f"SOP class not accepted ({len(refused)} proposed): {shown}"
        ae = event.assoc.requestor.ae_title
        log.info("calling AE %r: %s", ae, reason)
        # A PACS proposes the same classes on every association: record a refusal set once a day.
        if not self.store.rejection_recorded_since(ae, reason, time.time() - 86400):
            self.store.record_rejection(ae, "", 0x0122, reason)

    def _on_store(self, event: Any) -> int:
        """Every C-STORE ends with a status and, unless Success, a recorded reason."""
        sink = getattr(event.request, "_dataset_file", None)
        if sink is not None:
            sink.claimed = True
        try:
            return self._store(event)
        except Exception as exc:  # never pynetdicom's unrecorded 0xC211
            log.exception("C-STORE handling failed unexpectedly")
            path = getattr(sink, "name", None)
            return refuse(self.settings, self.store, printable_ae(event.assoc.requestor.ae_title),
                          str(getattr(event.request, "AffectedSOPInstanceUID", "") or ""),
                          STATUS_INTERNAL, f"internal error while receiving ({type(exc).__name__})",
                          Path(path) if path and Path(path).exists() else None)

    def _store(self, event: Any) -> int:
        calling_ae = printable_ae(event.assoc.requestor.ae_title)
        req = event.request
        sop_uid = str(req.AffectedSOPInstanceUID or "")
        sink = getattr(req, "_dataset_file", None)
        if isinstance(sink, SpoolTempFile):
            sink.finish()
            if sink.error is not None:
                status = STATUS_OUT_OF_RESOURCES if sink.error.errno in OUT_OF_SPACE else STATUS_PROCESSING_FAILURE
                return refuse(self.settings, self.store, calling_ae, sop_uid, status,
                              f"could not write the instance to disk: {sink.error.strerror}", None)
        outcome = spool_instance(self.settings, self.store, Path(event.dataset_path), calling_ae,
                                 command_sop_class=str(req.AffectedSOPClassUID),
                                 command_sop_instance=sop_uid, receipts=self._receipts(event.assoc))
        if outcome.ok and outcome.meta is not None:
            studies: set[str] = getattr(event.assoc, "_cds_studies", set())
            studies.add(outcome.meta.study_instance_uid)
            event.assoc._cds_studies = studies  # read at release; the association is ours alone
        return outcome.status

    def _receipts(self, assoc: Any) -> AssociationReceipts:
        """The association's receipt records (one per study, see AssociationReceipts)."""
        receipts = getattr(assoc, "_cds_receipts", None)
        if receipts is None:
            peer = str(getattr(assoc.requestor, "address", "") or "")
            receipts = AssociationReceipts(self.settings, printable_ae(assoc.requestor.ae_title), peer)
            assoc._cds_receipts = receipts  # the association is ours alone
        return receipts

    def _on_conn_close(self, event: Any) -> None:
        """However the connection ended: pending receipt records written, unclaimed temp files gone."""
        try:
            receipts = getattr(event.assoc, "_cds_receipts", None)
            if receipts is not None:
                receipts.close()
        finally:
            discard_unclaimed(event.assoc)

    def _on_released(self, event: Any) -> None:
        """The sender released the association normally: the studies it sent are complete.

        Orthanc's routing (and most PACS forwarding rules) sends a whole stable study in one
        association, so waiting another stable age after the release only adds latency. An
        aborted association proves nothing and leaves its studies to the stable age.
        """
        receipts = getattr(event.assoc, "_cds_receipts", None)
        if receipts is not None:  # the trail names every instance before the study is promoted
            receipts.close()
        studies = sorted(getattr(event.assoc, "_cds_studies", ()))
        if not (self.settings.complete_on_release and studies):
            return
        try:
            complete = [uid for uid in studies if self._content_complete(uid)]
            for uid in self.store.promote_studies(complete, self.settings.job_max_attempts):
                log.info("study %s complete (association released): jobs queued", uid)
        except Exception:  # the stable age still promotes them
            log.exception("promoting studies at association release failed")

    def _content_complete(self, study_uid: str) -> bool:
        by_modality: dict[str, list[Path]] = {}
        for rec in self.store.study_instances(study_uid):
            by_modality.setdefault(rec.modality, []).append(rec.path)
        if content_complete(by_modality):
            return True
        log.info("study %s released without the four standard mammography views: waits for the "
                 "stable age", study_uid)
        return False
