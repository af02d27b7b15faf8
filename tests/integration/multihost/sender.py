"""A PACS-like sender (pynetdicom, from the services host): C-STORE a study, know what was acknowledged.

WHY not storescu: the test must act between two acknowledgements (SIGKILL the listener after the
second one) and know exactly which instances got Success, since those are the ones the plugin
promised to keep. A failed or unanswered instance is sent again, as a PACS's retry would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation

CALLING_AET = "MODALITY1"


def send(address: str, port: int, files: list[Path], called_aet: str,
         after_ack: Callable[[int], None] | None = None) -> list[str]:
    """One association; returns the SOP Instance UIDs acknowledged with Success, in order.

    ``after_ack(n)`` runs after the n-th Success. A connection that drops mid-way ends the send
    (what was acknowledged before stays acknowledged)."""
    ae = AE(ae_title=CALLING_AET)
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate(address, port, ae_title=called_aet)
    if not assoc.is_established:
        return []
    acked: list[str] = []
    try:
        for f in files:
            ds = dcmread(f)
            if not assoc.is_established:  # the listener went away (after_ack may have killed it)
                break
            status = assoc.send_c_store(ds)
            if not assoc.is_established or "Status" not in status or status.Status != 0x0000:
                break
            acked.append(str(ds.SOPInstanceUID))
            if after_ack is not None:
                after_ack(len(acked))
    finally:
        if assoc.is_established:
            assoc.release()
    return acked


def send_until_acked(address: str, port: int, files: list[Path], called_aet: str,
                     attempts: int = 20) -> list[str]:
    """Send the study; instances not acknowledged are sent again (whole study, one association,
    as a PACS retries) until every one got Success. Raises after ``attempts`` associations."""
    want = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    acked: set[str] = set()
    for _ in range(attempts):
        acked |= set(send(address, port, files, called_aet))
        if acked >= want:
            return sorted(acked)
        time.sleep(1.0)
    raise AssertionError(f"{len(want - acked)} of {len(want)} instances never acknowledged by "
                         f"{address}:{port} after {attempts} associations")
