"""C-STORE to the PACS with pynetdicom (``pacs_ae_title@pacs_host:pacs_port``)."""

from __future__ import annotations

from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from cds.contracts.errors import PeerUnreachable, PermanentError, TransientError
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.security.tls import dicom_client_tls_args


def classify_dicom_status(status: int, sop_uid: str) -> str:
    """PS3.4 Annex B: A7xx "Refused: out of resources" is transient; other Axxx/Cxxx failures (SOP
    class not supported, data set does not match, cannot understand) fail again with the same
    object."""
    if status == 0x0000:
        return "success"
    if status in (0xB000, 0xB006, 0xB007) or (status & 0xF000) == 0xB000:
        return "warning"
    if (status & 0xFF00) == 0xA700:
        raise TransientError(f"PACS out of resources (status 0x{status:04X}) for {sop_uid}")
    raise PermanentError(f"PACS refused {sop_uid} with status 0x{status:04X}")


# What the plugin sends: proposing them all at once lets one association carry a study's SEGs, SR
# and Encapsulated PDF in a row instead of one association (a handshake, ~50 ms) per object.
OUTPUT_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
)
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class CStoreTarget:
    """C-STORE each output; the association stays open while the dispatcher has more to send and is
    released when it goes idle (:meth:`idle`), or at once for an object it cannot carry."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._assoc: Any = None

    @property
    def _peer(self) -> str:
        s = self.settings
        return f"PACS {s.pacs_ae_title}@{s.pacs_host}:{s.pacs_port}"

    def _associate(self, ds: pydicom.Dataset) -> Any:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        syntaxes = [str(ds.file_meta.TransferSyntaxUID)] + [t for t in TRANSFER_SYNTAXES if t != ds.file_meta.TransferSyntaxUID]
        classes = [str(ds.SOPClassUID)] + [c for c in OUTPUT_SOP_CLASSES if c != ds.SOPClassUID]
        for uid in classes:
            ae.add_requested_context(uid, syntaxes)
        assoc = ae.associate(s.pacs_host, s.pacs_port, ae_title=s.pacs_ae_title,
                             tls_args=dicom_client_tls_args(s))  # DICOM TLS (BCP 195) when pacs_tls
        if assoc.is_rejected:
            raise PeerUnreachable("pacs", f"{self._peer} rejected the association")
        if not assoc.is_established:
            raise PeerUnreachable("pacs", f"{self._peer} unreachable (association not established)")
        return assoc

    def _carries(self, ds: pydicom.Dataset) -> bool:
        """The open association is alive and accepted this object's class in its transfer syntax."""
        assoc = self._assoc
        if assoc is None or not assoc.is_established:
            return False
        return any(cx.abstract_syntax == ds.SOPClassUID and cx.transfer_syntax[0] == ds.file_meta.TransferSyntaxUID
                   for cx in assoc.accepted_contexts)

    def deliver(self, item: OutboxItem) -> str:
        try:
            ds = pydicom.dcmread(item.payload_path)
        except Exception as exc:
            raise PermanentError(f"payload {item.payload_path} is not readable DICOM: {exc}") from exc
        if not self._carries(ds):
            self.idle()
            self._assoc = self._associate(ds)
        try:
            rsp = self._assoc.send_c_store(ds)
        except ValueError as exc:  # pynetdicom: no accepted presentation context for this object
            self.idle()
            raise PermanentError(f"{self._peer} accepted no presentation context for SOP class "
                                 f"{ds.SOPClassUID} in {ds.file_meta.TransferSyntaxUID}: {exc}") from exc
        if rsp is None or "Status" not in rsp:
            self.idle()
            raise TransientError(
                f"no C-STORE response for {ds.SOPInstanceUID} (association aborted or timed out)")
        outcome = classify_dicom_status(int(rsp.Status), str(ds.SOPInstanceUID))
        return f"C-STORE {outcome} (0x{int(rsp.Status):04X}) {ds.SOPInstanceUID}"

    def idle(self) -> None:
        """Release the open association (nothing more to send now, or it cannot carry the next)."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()

    def close(self) -> None:
        self.idle()
