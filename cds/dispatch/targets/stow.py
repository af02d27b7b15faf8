"""STOW-RS (PS3.18) to the PACS's DICOMweb endpoint with httpx."""

from __future__ import annotations

import uuid

import httpx

from cds.contracts.errors import PeerUnreachable, PermanentError
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.fhir.client import withheld_body
from cds.security.http import http_client, redact_url
from cds.security.secrets import secret_value


def _failure_reasons(failed: list) -> str:
    """The DICOM Failure Reason codes (0008,1197) of a STOW-RS FailedSOPSequence; nothing else
    of the answer (it may echo attributes) goes into a message."""
    reasons = []
    for item in failed if isinstance(failed, list) else []:
        values = ((item or {}).get("00081197") or {}).get("Value") if isinstance(item, dict) else None
        code = values[0] if isinstance(values, list) and values else None
        reasons.append(f"0x{code:04X}" if isinstance(code, int) else "no reason given")
    return "failure reason " + ", ".join(reasons) if reasons else "no reason given"


class StowTarget:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http = http_client(settings, "dicomweb", settings.fhir_timeout_s)

    def deliver(self, item: OutboxItem) -> str:
        s = self.settings
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + item.payload_path.read_bytes() + f"\r\n--{boundary}--\r\n".encode())
        url = s.dicomweb_url.rstrip("/") + "/studies"
        auth = (s.dicomweb_username, secret_value(s, "dicomweb_password")) if s.dicomweb_username else None
        try:
            r = self._http.post(url, content=body, auth=auth, headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json"})
        except httpx.HTTPError as exc:
            raise PeerUnreachable("pacs", f"STOW-RS {redact_url(url)}: {exc.__class__.__name__}: {exc}") from exc
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise PeerUnreachable("pacs", f"STOW-RS {redact_url(url)} answered {r.status_code}")
        if r.status_code >= 400:
            raise PermanentError(f"STOW-RS {redact_url(url)} refused the instance ({r.status_code}): "
                                 f"{withheld_body(r)}")
        try:
            failed = r.json().get("00081198", {}).get("Value", [])
        except ValueError:
            failed = []
        if failed:
            raise PermanentError(f"STOW-RS {redact_url(url)} reported a failed instance: {_failure_reasons(failed)}")
        return f"STOW-RS {r.status_code}"

    def close(self) -> None:
        self._http.close()
