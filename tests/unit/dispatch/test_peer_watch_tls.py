"""Peer probes use the site TLS settings (CA, client certificate, DICOM TLS) and log failures."""

from __future__ import annotations

import logging

import httpx

from cds.contracts.settings import Settings
from cds.dispatch import peer_watch


def test_fhir_probe_uses_site_client_and_logs_failure(tmp_path, monkeypatch, caplog):
    calls = []

    def handler(request):
        raise httpx.ConnectError("certificate verify failed", request=request)

    def fake_client(settings, peer, timeout):
        calls.append(peer)
        return httpx.Client(transport=httpx.MockTransport(handler))

    monkeypatch.setattr(peer_watch, "http_client", fake_client)
    s = Settings(data_dir=tmp_path, fhir_base_url="https://fhir.example/r4?x=secret")
    with caplog.at_level(logging.INFO, logger="cds.dispatch.peer_watch"):
        assert peer_watch.fhir_answers(s) is False
    assert calls == ["fhir"]
    assert "certificate verify failed" in caplog.text and "secret" not in caplog.text

    monkeypatch.setattr(peer_watch, "http_client", lambda settings, peer, timeout: (
        calls.append(peer), httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(401))))[1])
    assert peer_watch.fhir_answers(s) is True
    s2 = Settings(data_dir=tmp_path, dicomweb_url="https://pacs.example/dicomweb")
    assert peer_watch.pacs_answers(s2) is True and calls[-1] == "dicomweb"


def test_cecho_probe_passes_tls_args_and_logs(tmp_path, monkeypatch, caplog):
    sentinel = (object(), "pacs.example")
    monkeypatch.setattr(peer_watch, "dicom_client_tls_args", lambda s: sentinel)
    seen = {}

    class Assoc:
        is_established = False
        is_rejected = False
        is_aborted = False

    def fake_associate(self, host, port, ae_title=None, tls_args=None, **kw):
        seen["tls_args"] = tls_args
        return Assoc()

    import pynetdicom

    monkeypatch.setattr(pynetdicom.AE, "associate", fake_associate)
    s = Settings(data_dir=tmp_path, pacs_host="pacs.example", pacs_port=2762, pacs_ae_title="PACS")
    with caplog.at_level(logging.INFO, logger="cds.dispatch.peer_watch"):
        assert peer_watch.pacs_answers(s) is False
    assert seen["tls_args"] is sentinel
    assert "PACS@pacs.example:2762" in caplog.text and "over TLS" in caplog.text
