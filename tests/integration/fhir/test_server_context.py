"""The clinical context from FHIR servers as they come: paging (a tiny local server serving linked
Bundles, since the Medplum peer has no paging links) and search by patient and code on the
Medplum peer (conformance/peers/fhir)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cds.contracts.domain import PatientRef
from cds.contracts.settings import Settings
from cds.fhir.context import fetch_clinical_context

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SYSTEM = "urn:test:mrn"


def _patient() -> dict:
    return {"resourceType": "Patient", "id": "p1", "identifier": [{"system": SYSTEM, "value": "A1"}],
            "birthDate": "1960-05-01"}


def _obs(oid: str, code: str, quantity: dict | None = None, **value) -> dict:
    body = {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-01-01"}
    if quantity:
        body["valueQuantity"] = {"system": UCUM, **quantity}
    return {**body, **value}


class _Paged(BaseHTTPRequestHandler):
    """Observation search answered in pages of one, linked by ``next`` (absolute URLs)."""

    pages: list[list[dict]] = []
    queries: list[dict] = []

    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        url = urlparse(self.path)
        q = parse_qs(url.query)
        type(self).queries.append({"path": url.path, **{k: v[0] for k, v in q.items()}})
        if url.path.endswith("/Patient"):
            entries = [_patient()]
            link = []
        elif url.path.endswith("/Observation"):
            page = int(q.get("page", ["0"])[0])
            entries = self.pages[page]
            base = f"http://127.0.0.1:{self.server.server_address[1]}/fhir/Observation"
            link = [{"relation": "next", "url": f"{base}?page={page + 1}"}] if page + 1 < len(self.pages) else []
        else:
            entries, link = [], []
        body = json.dumps({"resourceType": "Bundle", "type": "searchset", "link": link,
                           "entry": [{"resource": r} for r in entries]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_paging_follows_next_links():
    _Paged.pages = [[_obs("er", "85329-1", {"value": 5, "code": "%"})],
                    [_obs("size", "21889-1", {"value": 2.2, "code": "cm"})],
                    [_obs("nodes", "21893-3", valueInteger=2)]]
    _Paged.queries = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Paged)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        settings = Settings(fhir_base_url=f"http://127.0.0.1:{srv.server_address[1]}/fhir",
                            fhir_patient_identifier_system=SYSTEM)
        ctx = fetch_clinical_context(settings, PatientRef(patient_id="A1"))
    finally:
        srv.shutdown()
    assert ctx.values["er"] == "positive" and ctx.values["tumour_size_mm"] == 22.0
    assert ctx.values["positive_nodes"] == 2.0  # only on the third page
    first = next(q for q in _Paged.queries if q["path"].endswith("/Observation"))
    assert first["patient"] == "Patient/p1" and "http://loinc.org|85329-1" in first["code"].split(",")




def test_search_by_patient_and_code_on_medplum(fhir_peer):
    import httpx

    fhir_peer.reset()
    base = fhir_peer.base_url
    httpx.put(f"{base}/Patient/p1", json=_patient(), timeout=10).raise_for_status()
    other = {**_patient(), "id": "p2", "identifier": [{"system": SYSTEM, "value": "B2"}]}
    httpx.put(f"{base}/Patient/p2", json=other, timeout=10).raise_for_status()
    for i in range(230):  # more unrelated Observations than one unfiltered page would hold
        httpx.put(f"{base}/Observation/noise{i}", json=_obs(f"noise{i}", "8867-4", {"value": 70, "code": "/min"}),
                  timeout=10).raise_for_status()
    httpx.put(f"{base}/Observation/er", json=_obs("er", "85329-1", {"value": 5, "code": "%"}),
              timeout=10).raise_for_status()
    httpx.put(f"{base}/Observation/ki", json=_obs("ki", "85330-9", {"value": 25, "code": "%"}),
              timeout=10).raise_for_status()
    p2obs = {**_obs("p2er", "85329-1", {"value": 0, "code": "%"}), "subject": {"reference": "Patient/p2"}}
    httpx.put(f"{base}/Observation/p2er", json=p2obs, timeout=10).raise_for_status()
    settings = Settings(fhir_base_url=base, fhir_patient_identifier_system=SYSTEM)
    ctx = fetch_clinical_context(settings, PatientRef(patient_id="A1"))
    assert ctx.values["er"] == "positive" and ctx.values["ki67"] == 25.0
    assert ctx.measured["er"].source.reference == "Observation/er"
    httpx.put(f"{base}/Patient/p3", json={**_patient(), "id": "p3"}, timeout=10).raise_for_status()
    ctx = fetch_clinical_context(settings, PatientRef(patient_id="A1"))
    assert ctx.values == {} and "ambiguous" in ctx.not_used[0].reason
