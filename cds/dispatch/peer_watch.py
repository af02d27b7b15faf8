"""Notice a peer answering again after an outage and make the work waiting for it due now.

Jobs and outputs that failed because a peer did not answer (``PeerUnreachable``) sit in the
store in capped backoff, their ``last_error`` tagged with the peer. Every
``settings.peer_probe_interval_s``, while any row waits for a peer, :class:`PeerWatch` asks that
peer a cheap question (FHIR: ``GET [base]/metadata``; PACS over DICOMweb: ``GET`` on the base
URL, over DIMSE: C-ECHO). The first answer wakes every waiting row
(:meth:`cds.store.waiting.WaitingStore.wake_waiting`): the case job runs again and the outputs
are delivered within one probe interval of the server's return, however long the outage was.
A delivery that succeeds wakes the rest of that peer's rows too (see the dispatcher).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx

from cds.contracts.errors import PermanentError
from cds.contracts.settings import Settings
from cds.security.http import Peer, http_client, redact_url
from cds.security.tls import dicom_client_tls_args
from cds.store import Store

log = logging.getLogger(__name__)


def _http_answers(settings: Settings, peer: Peer, url: str, timeout: float, name: str,
                  headers: dict[str, str] | None = None) -> bool:
    """GET ``url`` with the site CA and client certificate of ``peer``; any HTTP answer is up."""
    try:
        with http_client(settings, peer, timeout) as client:
            client.get(url, headers=headers or {})
    except PermanentError as exc:  # the TLS settings cannot be loaded
        log.info("%s probe of %s not sent: %s", name, redact_url(url), exc)
        return False
    except httpx.HTTPError as exc:
        log.info("%s probe of %s failed: %s: %s", name, redact_url(url), exc.__class__.__name__, exc)
        return False
    return True


def fhir_answers(settings: Settings) -> bool:
    """Whether the FHIR server answers HTTP at all (any status: it is up, the rest is its say)."""
    return _http_answers(settings, "fhir", settings.fhir_base_url.rstrip("/") + "/metadata",
                         min(settings.fhir_timeout_s, 5.0), "FHIR",
                         headers={"Accept": "application/fhir+json"})


def pacs_answers(settings: Settings) -> bool:
    """Whether the PACS answers: DICOMweb base URL over HTTP, else a C-ECHO (over TLS if pacs_tls)."""
    if settings.dicomweb_url:
        return _http_answers(settings, "dicomweb", settings.dicomweb_url, 5.0, "DICOMweb")
    from pynetdicom import AE

    where = f"{settings.pacs_ae_title}@{settings.pacs_host}:{settings.pacs_port}"
    try:
        tls_args = dicom_client_tls_args(settings)
    except PermanentError as exc:
        log.info("PACS C-ECHO probe of %s not sent: %s", where, exc)
        return False
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context("1.2.840.10008.1.1")
    try:
        assoc = ae.associate(settings.pacs_host, settings.pacs_port, ae_title=settings.pacs_ae_title,
                             tls_args=tls_args)
    except (OSError, RuntimeError, ValueError) as exc:
        log.info("PACS C-ECHO probe of %s failed: %s: %s", where, exc.__class__.__name__, exc)
        return False
    if not assoc.is_established:
        state = ("rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted
                 else "no association (no answer, or the TLS handshake failed)")
        log.info("PACS C-ECHO probe of %s%s failed: %s", where, " over TLS" if tls_args else "", state)
        return False
    assoc.release()
    return True


class PeerWatch:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._next_probe = 0.0

    def probes(self) -> dict[str, Callable[[Settings], bool]]:
        s = self.settings
        out: dict[str, Callable[[Settings], bool]] = {}
        if s.fhir_base_url:
            out["fhir"] = fhir_answers
        if s.pacs_configured:
            out["pacs"] = pacs_answers
        return out

    def answered(self, peer: str) -> int:
        """``peer`` answered: wake the rows waiting for it; returns how many."""
        n = self.store.wake_waiting(peer)
        if n:
            log.info("%s answers again: %d waiting job(s)/output(s) made due now", peer, n)
        return n

    def tick(self, now: float | None = None) -> int:
        """Probe each peer that has waiting rows, at most once per probe interval."""
        now = time.time() if now is None else now
        if now < self._next_probe:
            return 0
        self._next_probe = now + self.settings.peer_probe_interval_s
        woken = 0
        for peer, probe in self.probes().items():
            if self.store.waiting_on(peer) and probe(self.settings):
                woken += self.answered(peer)
        return woken
