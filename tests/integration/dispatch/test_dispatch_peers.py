"""Outbox dispatch against real peers on loopback: the Medplum FHIR R4 server
(conformance/peers), dcmtk storescp as the PACS, a pynetdicom SCP that refuses, and the folder."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pydicom
import pytest

from cds.contracts.handoffs import NewOutput, OutboxMeta
from cds.contracts.settings import Settings
from cds.dispatch.dispatcher import Dispatcher
from cds.store import Store
from conformance.peers.dcmtk import StoreScp
from conformance.peers.fhir_server import FhirServer
from conformance.peers.process import free_port
from tests.peers import missing


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'cds.sqlite3'}")


def _queue(store: Store, arts, destination: str) -> list[int]:
    return [store.outbox_add(NewOutput(kind=a.kind, destination=destination, key=a.key, payload_path=a.path,
                                       meta=OutboxMeta(resource_type=a.resource_type)))
            for a in arts]


def _states(store: Store) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in store.outbox_items(limit=1000):
        out[item.state] = out.get(item.state, 0) + 1
    return out


def _wait_due(seconds: float = 0.3) -> None:
    time.sleep(seconds)




def _fast(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", output_dir=tmp_path / "output", job_backoff_base_s=0.05,
                    job_backoff_max_s=0.2, **kw)


def test_folder_delivery_is_durable_and_idempotent(outputs, tmp_path):
    settings = _fast(tmp_path)
    store = _store(tmp_path)
    ids = _queue(store, outputs.all, "folder")
    d = Dispatcher(settings, store)
    assert d.run_once() == len(outputs.all)
    assert _states(store) == {"delivered": len(outputs.all)}
    written = sorted(p.name for p in (settings.output_dir).rglob("*") if p.is_file())
    assert len(written) == len(outputs.all)
    assert _queue(store, outputs.all, "folder") == ids  # same keys: same rows, nothing new
    assert d.run_once() == 0


def _count(server: FhirServer, rtype: str, query: str) -> int:
    import httpx

    r = httpx.get(f"{server.base_url}/{rtype}?{query}", timeout=10)
    r.raise_for_status()
    return len(r.json().get("entry", []))


def _query_of(path: Path) -> str:
    from cds.fhir.writeback import conditional_query

    return conditional_query(json.loads(path.read_text()))


def test_fhir_round_trip_and_second_run_creates_no_duplicates(outputs, fhir_peer, tmp_path):
    fhir_peer.reset()
    settings = _fast(tmp_path, fhir_base_url=fhir_peer.base_url)
    arts = [a for a in outputs.all if a.kind == "fhir"]
    for run in (1, 2):  # run 2: a fresh store (e.g. re-installed service) sends everything again
        store = _store(tmp_path / f"run{run}")
        _queue(store, arts, "fhir")
        assert Dispatcher(settings, store).run_once() == len(arts)
        assert _states(store) == {"delivered": len(arts)}
        responses = [i.state for i in store.outbox_items()]
        assert responses
    for a in arts:
        assert _count(fhir_peer, a.resource_type, _query_of(a.path)) == 1, a.key
    posts = [r for r in fhir_peer.requests() if r["method"] == "POST"]
    # run 2: a resource with a result identifier is found by it and, unchanged, not written
    # again (cds.fhir.upsert); the Provenance (tag only) is a conditional create answered 200
    tag_only = sum(1 for a in arts if a.resource_type == "Provenance")
    assert sorted(r["status"] for r in posts) == [200] * tag_only + [201] * len(arts)
    assert not [r for r in fhir_peer.requests() if r["method"] == "PUT"]


def test_fhir_503_then_201_delivers_exactly_once(outputs, fhir_peer, tmp_path):
    fhir_peer.reset()
    settings = _fast(tmp_path, fhir_base_url=fhir_peer.base_url)
    store = _store(tmp_path)
    art = next(a for a in outputs.all if a.resource_type == "RiskAssessment")
    (item_id,) = _queue(store, [art], "fhir")
    fhir_peer.fail_next(count=2, status=503, methods=["POST"])
    d = Dispatcher(settings, store)
    d.run_once()
    item = store.outbox_items()[0]
    assert item.state == "pending" and "503" in (item.last_error or "")
    _wait_due()
    d.run_once()
    assert store.outbox_items()[0].state == "pending"
    _wait_due()
    d.run_once()
    item = store.outbox_items()[0]
    assert item.state == "delivered" and item.attempts == 3
    assert _count(fhir_peer, "RiskAssessment", _query_of(art.path)) == 1
    assert [r["status"] for r in fhir_peer.requests() if r["method"] == "POST"] == [503, 503, 201]


def test_fhir_400_goes_to_dead_letter_with_operation_outcome(fhir_peer, tmp_path):
    settings = _fast(tmp_path, fhir_base_url=fhir_peer.base_url)
    store = _store(tmp_path)
    bad = tmp_path / "bad.json"  # written by hand, bypassing our validation, to make the server refuse it
    bad.write_text(json.dumps({"resourceType": "RiskAssessment", "subject": {"reference": "Patient/x"},
                               "identifier": [{"system": "urn:breast-cds:result", "value": "bad-1"}]}))
    store.outbox_add(NewOutput(kind="fhir", destination="fhir", key="bad-1", payload_path=bad))
    d = Dispatcher(settings, store)
    assert d.run_once() == 1
    item = store.outbox_items()[0]
    assert item.state == "dead"
    # the outcome's severity and code; its diagnostics may echo data and are withheld
    assert item.last_error.startswith("FHIR server answered 400: error: invalid")
    _wait_due()
    assert d.run_once() == 0  # never retried


def test_pacs_down_then_up_delivers_each_instance_once(outputs, tmp_path):
    if shutil.which("storescp") is None:
        missing("dcmtk not installed")
    port = free_port()
    settings = _fast(tmp_path, pacs_host="127.0.0.1", pacs_port=port, pacs_ae_title="PACS")
    store = _store(tmp_path)
    arts = [a for a in outputs.all if a.kind == "dicom"]
    _queue(store, arts, "pacs")
    d = Dispatcher(settings, store)
    d.run_once()
    assert _states(store) == {"pending": len(arts)}
    assert all("unreachable" in (i.last_error or "") for i in store.outbox_items())
    with StoreScp(tmp_path / "pacs", port=port, aet="PACS") as scp:
        _wait_due()
        d.run_once()
        assert _states(store) == {"delivered": len(arts)}
        _wait_due()
        assert d.run_once() == 0
        got = sorted(scp.received_sop_uids())
    want = sorted(str(pydicom.dcmread(a.path, stop_before_pixels=True).SOPInstanceUID) for a in arts)
    assert got == want


def test_dicom_failure_status_goes_to_dead_letter(outputs, tmp_path):
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    def refuse(event):
        return 0xA900  # Error: Data Set does not match SOP Class

    ae = AE(ae_title="REFUSER")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, refuse)])
    try:
        settings = _fast(tmp_path, pacs_host="127.0.0.1", pacs_port=port, pacs_ae_title="REFUSER")
        store = _store(tmp_path)
        art = next(a for a in outputs.all if a.resource_type == "SR")
        _queue(store, [art], "pacs")
        d = Dispatcher(settings, store)
        assert d.run_once() == 1
        item = store.outbox_items()[0]
        assert item.state == "dead" and "0xA900" in item.last_error
    finally:
        server.shutdown()


def test_context_from_fhir_server_matches_offline(outputs, fhir_peer, tmp_path):
    from cds.fhir.client import FhirClient
    from cds.fhir.context import fetch_clinical_context
    from synthetic.phantoms.clinical import clinical_resources, synthetic_patient

    fhir_peer.reset()
    settings = Settings(fhir_base_url=fhir_peer.base_url)
    with FhirClient(settings) as client:
        for r in clinical_resources():
            client.update(r)
    ctx = fetch_clinical_context(settings, synthetic_patient())
    assert ctx.values == outputs.clinical.values
    assert ctx.fhir_patient_ref == "Patient/syn-patient-1"
    assert ctx.sources["er"].reference.startswith("Observation/")
    assert "hypoechoic" in ctx.ultrasound_report_text


def test_oauth2_client_credentials_token_is_fetched_once_and_sent(fhir_peer):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs

    import httpx

    from cds.fhir.client import FhirClient

    calls = []

    class TokenHandler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            calls.append(form)
            ok = form.get("client_secret") == ["s3cret"]
            body = json.dumps({"access_token": "tok-123", "expires_in": 300} if ok else {"error": "invalid_client"})
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), TokenHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        sent = []
        http = httpx.Client(timeout=10, event_hooks={"request": [lambda r: sent.append(r.headers.get("Authorization"))]})
        settings = Settings(fhir_base_url=fhir_peer.base_url, fhir_token_url=f"http://127.0.0.1:{httpd.server_port}/token",
                            fhir_client_id="cds", fhir_client_secret="s3cret", fhir_scope="system/*.write")
        client = FhirClient(settings, http=http)
        client.search("Patient", {"_count": "1"})
        client.search("Patient", {"_count": "1"})
        assert len(calls) == 1 and calls[0]["grant_type"] == ["client_credentials"]
        assert sent[-2:] == ["Bearer tok-123", "Bearer tok-123"]
        from cds.fhir.client import FhirError

        bad = FhirClient(settings.model_copy(update={"fhir_client_secret": "wrong"}))
        with pytest.raises(FhirError, match="token endpoint .* answered 401"):
            bad.search("Patient", {})
    finally:
        httpd.shutdown()


def test_stow_rs_to_orthanc(outputs, tmp_path):
    from conformance.peers.orthanc import DICOMWEB_PLUGIN, OrthancServer
    from conformance.peers.process import orthanc_missing_reason

    reason = orthanc_missing_reason([DICOMWEB_PLUGIN])
    if reason:
        missing(reason)
    arts = [a for a in outputs.all if a.kind == "dicom"]
    with OrthancServer(tmp_path / "orthanc", plugins=[DICOMWEB_PLUGIN],
                       extra_config={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}) as orthanc:
        settings = _fast(tmp_path, dicomweb_url=f"{orthanc.base_url}/dicom-web")
        store = _store(tmp_path)
        _queue(store, arts, "pacs")
        assert Dispatcher(settings, store).run_once() == len(arts)
        assert _states(store) == {"delivered": len(arts)}
        with orthanc.client() as c:
            assert len(c.get("/instances").json()) == len(arts)
