"""Certificate-bound calling AE titles on the DICOM TLS listener.

With ``tls_ae_identities`` set, an A-ASSOCIATE-RQ from a calling AE in the map is accepted only
when the TLS peer presented a certificate (verified against ``tls_ca_file``) whose subject CN or
a DNS/URI subjectAltName is the mapped identity; otherwise it gets A-ASSOCIATE-RJ (rejected
permanent, service user, "calling AE title not recognised") and a row in ``rejections``. An AE
title alone is a label anyone can type; a certificate is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cds.contracts.settings import Settings
from cds.security.tls import ae_identity_problem, peer_certificate
from cds.store import Store

log = logging.getLogger(__name__)

REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03


def identity_check(settings: Settings, store: Store) -> Callable[[Any], None]:
    """An EVT_REQUESTED handler enforcing :func:`cds.security.tls.ae_identity_problem`."""

    def on_requested(event: Any) -> None:
        assoc = event.assoc
        calling_ae = str(assoc.requestor.primitive.calling_ae_title or "").strip()
        problem = ae_identity_problem(settings, calling_ae, peer_certificate(assoc))
        if not problem:
            return
        log.warning("association refused: %s", problem)
        try:  # recorded first: the peer may look at our records as soon as it has the answer
            store.record_rejection(calling_ae, "", 0, f"association rejected: {problem}")
        except Exception:  # the refusal stands even when it cannot be recorded
            log.exception("could not record the refused association")
        assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)

    return on_requested
