"""DICOM TLS (BCP 195) in and out, mutual TLS, certificate-bound AEs; HTTPS with a site CA.

Real peers: dcmtk's echoscu/storescu over TLS against the listener; the C-STORE target over TLS
against the listener; the FHIR client against a local HTTPS server trusting only the test CA.
"""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.dispatch.targets.cstore import CStoreTarget
from cds.fhir.client import FhirClient, FhirError
from cds.store import Store
from listeners.dicom_scp import DicomListener
from tests.dicom_files import sc_file
from tests.integration.security.tls_certs import Pki, make_pki
from tests.peers import needs_tool

pytestmark = pytest.mark.peers
needs_dcmtk = needs_tool("storescu")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def listener(tmp_path: Path, pki: Pki, **kw) -> tuple[DicomListener, Store]:
    s = Settings(data_dir=tmp_path / "data", host="127.0.0.1", port=0, dicom_tls=True,
                 tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_ca_file=pki.ca, **kw)
    s.ensure_dirs()
    store = Store(s.store_url)
    lst = DicomListener(s, store)
    lst.start()
    return lst, store


def dcmtk(tool: str, port: int, *args: str, calling: str = "PACS", files: tuple[str, ...] = ()
          ) -> subprocess.CompletedProcess:
    return subprocess.run([tool, "-aet", calling, "-aec", "CDS", *args, "127.0.0.1", str(port), *files],
                          capture_output=True, text=True, timeout=60)


def tls_opts(pki: Pki, cert: tuple[Path, Path] | None) -> list[str]:
    who = ["+tls", str(cert[1]), str(cert[0])] if cert else ["+tla"]
    return [*who, "+cf", str(pki.ca)]


@needs_dcmtk
def test_dcmtk_over_tls_with_mutual_tls(tmp_path, pki):
    lst, store = listener(tmp_path, pki, tls_require_client_cert=True)
    try:
        ok = dcmtk("echoscu", lst.port, *tls_opts(pki, (pki.client_cert, pki.client_key)))
        assert ok.returncode == 0, ok.stderr
        f = sc_file(tmp_path / "a.dcm")
        sent = dcmtk("storescu", lst.port, *tls_opts(pki, (pki.client_cert, pki.client_key)), files=(str(f),))
        assert sent.returncode == 0, sent.stderr
        from pydicom import dcmread

        assert store.instance_exists(str(dcmread(f).SOPInstanceUID))
        anon = dcmtk("echoscu", lst.port, *tls_opts(pki, None))  # no client certificate
        assert anon.returncode != 0
        plain = dcmtk("echoscu", lst.port)  # no TLS at all
        assert plain.returncode != 0
    finally:
        lst.stop()


@needs_dcmtk
def test_calling_ae_bound_to_certificate(tmp_path, pki):
    lst, store = listener(tmp_path, pki, tls_ae_identities={"PACS": "pacs.example"})
    try:
        good = dcmtk("echoscu", lst.port, *tls_opts(pki, (pki.client_cert, pki.client_key)))
        assert good.returncode == 0, good.stderr
        # the same AE title with another site's certificate: A-ASSOCIATE-RJ
        spoof = dcmtk("echoscu", lst.port, *tls_opts(pki, (pki.other_cert, pki.other_key)))
        assert spoof.returncode != 0
        # A-ASSOCIATE-RJ; over TLS dcmtk sometimes reports the close that follows it instead
        assert "rejected" in spoof.stderr.lower() or "aborted" in spoof.stderr.lower(), spoof.stderr
        reasons = [r.reason for r in store.recent_rejections(10)]
        assert any("not issued to pacs.example" in r for r in reasons), reasons
        # an AE not in the map is not affected (tls_bind_all_aes is off)
        other_ae = dcmtk("echoscu", lst.port, *tls_opts(pki, (pki.other_cert, pki.other_key)), calling="OTHER")
        assert other_ae.returncode == 0, other_ae.stderr
    finally:
        lst.stop()


def test_cstore_out_over_tls(tmp_path, pki):
    lst, store = listener(tmp_path, pki, tls_require_client_cert=True)
    try:
        f = sc_file(tmp_path / "out.dcm")
        base = dict(pacs_ae_title="CDS", pacs_host="127.0.0.1", pacs_port=lst.port, pacs_tls=True,
                    pacs_tls_server_name="localhost", tls_ca_file=pki.ca, data_dir=tmp_path / "sender")
        item = OutboxItem(id=1, kind="dicom", destination="pacs", key="k", payload_path=f, state="running",
                          attempts=1, next_attempt_at=0)
        good = Settings(**base, tls_cert_file=pki.client_cert, tls_key_file=pki.client_key)
        assert "C-STORE success" in CStoreTarget(good).deliver(item)
        from cds.contracts.errors import PeerUnreachable

        with pytest.raises(PeerUnreachable):  # no client certificate toward a mutual-TLS PACS
            CStoreTarget(Settings(**base)).deliver(item)
    finally:
        lst.stop()


class _Fhir(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = json.dumps({"resourceType": "Bundle", "type": "searchset",
                           "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def https_server(pki: Pki, require_client_cert: bool) -> http.server.HTTPServer:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Fhir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        ctx.load_verify_locations(pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_fhir_client_with_site_ca_and_client_cert(pki):
    httpd = https_server(pki, require_client_cert=True)
    base = f"https://localhost:{httpd.server_port}/fhir"
    try:
        with FhirClient(Settings(fhir_base_url=base, fhir_ca_file=pki.ca, fhir_client_cert_file=pki.client_cert,
                                 fhir_client_key_file=pki.client_key)) as c:
            assert [r["id"] for r in c.search("Patient", {"identifier": "x|1"})] == ["p1"]
        with FhirClient(Settings(fhir_base_url=base)) as c, pytest.raises(FhirError):
            c.search("Patient", {"identifier": "x|1"})  # the site CA is not in the system store
        with FhirClient(Settings(fhir_base_url=base, fhir_ca_file=pki.ca)) as c, pytest.raises(FhirError):
            c.search("Patient", {"identifier": "x|1"})  # no client certificate: refused by the server
    finally:
        httpd.shutdown()
