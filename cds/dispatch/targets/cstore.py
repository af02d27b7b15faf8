"""C-STORE to the PACS with pynetdicom (``pacs_ae_title@pacs_host:pacs_port``)."""

from __future__ import annotations

import pydicom
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


class CStoreTarget:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def deliver(self, item: OutboxItem) -> str:
        s = self.settings
        try:
            ds = pydicom.dcmread(item.payload_path)
        except Exception as exc:
            raise PermanentError(f"payload {item.payload_path} is not readable DICOM: {exc}") from exc
        ae = AE(ae_title=s.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
        peer = f"PACS {s.pacs_ae_title}@{s.pacs_host}:{s.pacs_port}"
        assoc = ae.associate(s.pacs_host, s.pacs_port, ae_title=s.pacs_ae_title,
                             tls_args=dicom_client_tls_args(s))  # DICOM TLS (BCP 195) when pacs_tls
        if assoc.is_rejected:
            raise PeerUnreachable("pacs", f"{peer} rejected the association")
        if not assoc.is_established:
            raise PeerUnreachable("pacs", f"{peer} unreachable (association not established)")
        try:
            rsp = assoc.send_c_store(ds)
        except ValueError as exc:  # pynetdicom: no accepted presentation context for this object
            raise PermanentError(f"{peer} accepted no presentation context for SOP class "
                                 f"{ds.SOPClassUID} in {ds.file_meta.TransferSyntaxUID}: {exc}") from exc
        finally:
            assoc.release()
        if rsp is None or "Status" not in rsp:
            raise TransientError(
                f"no C-STORE response for {ds.SOPInstanceUID} (association aborted or timed out)")
        outcome = classify_dicom_status(int(rsp.Status), str(ds.SOPInstanceUID))
        return f"C-STORE {outcome} (0x{int(rsp.Status):04X}) {ds.SOPInstanceUID}"

    def close(self) -> None:
        pass
