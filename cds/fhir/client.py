"""A small FHIR R4 REST client on httpx: search, read, conditional create, update.

Auth is a static bearer token or OAuth2 client credentials (token fetched on first use and
renewed shortly before it expires; held by the client instance). Every non-2xx answer raises
:class:`FhirError` carrying the HTTP status and the OperationOutcome's severity/code/location
(never its diagnostics text or a raw body), so callers (the
context reader, the dispatcher) can tell a permanent refusal (4xx) from an outage (5xx,
connection refused, timeout). Resource bodies are never logged (PHI); URLs are logged without
query strings.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import quote

import httpx

from cds.contracts.settings import Settings
from cds.security.http import check_token_url, http_client, redact_url
from cds.security.secrets import secret_value
from cds.security.smart import token_form

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class FhirError(RuntimeError):
    """A FHIR request failed. ``status`` is 0 for transport errors (no answer)."""

    def __init__(self, message: str, status: int = 0, outcome: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome

    @property
    def permanent(self) -> bool:
        """4xx (except 408 timeout and 429 too many requests) will fail again the same way."""
        return 400 <= self.status < 500 and self.status not in (408, 429)


def outcome_text(body: Any) -> str:
    """An OperationOutcome as severity, code and location per issue. ``diagnostics`` and
    ``details.text`` are never copied: servers echo the offending values (names, identifiers)
    there, unquoted, so no scrubbing can make them safe, and this text becomes a job's
    ``last_error`` and log lines."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue", []) if isinstance(body.get("issue"), list) else []:
        if not isinstance(issue, dict):
            continue
        where = issue.get("expression") or issue.get("location") or []
        where = ", ".join(w for w in where if isinstance(w, str)) if isinstance(where, list) else ""
        parts.append(f"{issue.get('severity', 'error')}: {issue.get('code', 'unknown')}"
                     + (f" (at {where})" if where else ""))
    return "; ".join(parts)


def withheld_body(r: httpx.Response) -> str:
    """What an error answer that is not an OperationOutcome may say in a message: its type and
    size; the body itself is withheld (it may echo patient data)."""
    ctype = r.headers.get("content-type", "").split(";")[0].strip() or "unknown type"
    return f"body withheld ({ctype}, {len(r.content)} bytes)"


def _oauth_error(r: httpx.Response) -> str:
    """The RFC 6749 ``error`` code of a token endpoint's refusal (a fixed vocabulary), else the
    withheld-body summary; ``error_description`` is never copied."""
    try:
        code = r.json().get("error")
    except (ValueError, AttributeError):
        code = None
    return code if isinstance(code, str) and re.fullmatch(r"[a-z_]{1,40}", code) else withheld_body(r)


class FhirClient:
    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        if not settings.fhir_base_url:
            raise ValueError("FhirClient needs settings.fhir_base_url (CDS_FHIR_BASE_URL)")
        self.base = settings.fhir_base_url.rstrip("/")
        self.settings = settings
        self.http = http or http_client(settings, "fhir", settings.fhir_timeout_s)
        self._static_token = secret_value(settings, "fhir_token")
        self._token: str = self._static_token
        self._token_expires: float = float("inf") if self._static_token else 0.0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth -------------------------------------------------------------------------------
    def _bearer(self) -> str | None:
        s = self.settings
        if self._static_token:
            return self._static_token
        if not s.fhir_token_url:
            return None
        if self._token and time.time() < self._token_expires - 30:
            return self._token
        check_token_url(s, s.fhir_token_url)
        data = token_form(s, s.fhir_token_url, secret_value(s, "fhir_client_secret"))
        try:
            r = self.http.post(s.fhir_token_url, data=data, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise FhirError(f"OAuth2 token request to {redact_url(s.fhir_token_url)} failed: "
                            f"{exc.__class__.__name__}") from exc
        if r.status_code != 200:
            raise FhirError(f"OAuth2 token endpoint {redact_url(s.fhir_token_url)} answered {r.status_code}: "
                            f"{_oauth_error(r)}", status=r.status_code)
        body = r.json()
        if "access_token" not in body:
            raise FhirError(f"OAuth2 token endpoint {redact_url(s.fhir_token_url)} returned no access_token")
        self._token = body["access_token"]
        self._token_expires = time.time() + float(body.get("expires_in", 300))
        return self._token

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Accept": FHIR_JSON}
        token = self._bearer()
        if token:
            h["Authorization"] = f"Bearer {token}"
        if extra:
            h.update(extra)
        return h

    # -- requests ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                headers: dict[str, str] | None = None) -> httpx.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.base}/{path.lstrip('/')}"
        hdrs = self._headers(headers)
        if json is not None:
            hdrs["Content-Type"] = FHIR_JSON
        try:
            r = self.http.request(method, url, params=params, json=json, headers=hdrs)
        except httpx.TimeoutException as exc:
            raise FhirError(f"FHIR {method} {redact_url(url)}: timed out after {self.settings.fhir_timeout_s}s") from exc
        except httpx.HTTPError as exc:
            raise FhirError(f"FHIR {method} {redact_url(url)}: {exc.__class__.__name__}: {exc}") from exc
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = None
            text = outcome_text(body) or withheld_body(r)
            raise FhirError(f"FHIR {method} {redact_url(url)} answered {r.status_code}: {text}", status=r.status_code,
                            outcome=text)
        log.debug("FHIR %s %s -> %d", method, redact_url(url), r.status_code)
        return r

    def search(self, resource_type: str, params: dict[str, str], max_pages: int = 20) -> list[dict]:
        """All matching resources (follows ``next`` links, up to ``max_pages``)."""
        out: list[dict] = []
        r = self.request("GET", resource_type, params=params)
        for _ in range(max_pages):
            bundle = r.json()
            out += [e["resource"] for e in bundle.get("entry", [])
                    if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                    and e["resource"].get("resourceType") == resource_type]
            nxt = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
            if not nxt:
                break
            if nxt.startswith(("http://", "https://")) and httpx.URL(nxt).host != httpx.URL(self.base).host:
                raise FhirError(f"FHIR search {resource_type}: next link points to another host "
                                f"({httpx.URL(nxt).host}); not followed (the token is not sent elsewhere)")
            r = self.request("GET", nxt)  # absolute on the server's host, or relative to the base
        else:
            log.warning("FHIR search %s: more than %d pages; the rest is not read", resource_type, max_pages)
        return out

    def read(self, resource_type: str, rid: str) -> dict:
        return self.request("GET", f"{resource_type}/{rid}").json()

    def create(self, resource: dict, if_none_exist: str | None = None) -> tuple[int, dict]:
        """POST; with ``if_none_exist`` (a search query) the server creates only when nothing
        matches (201) and otherwise returns the existing one (200)."""
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else None
        r = self.request("POST", resource["resourceType"], json=resource, headers=headers)
        return r.status_code, (r.json() if r.content else {})

    def update(self, resource: dict) -> tuple[int, dict]:
        r = self.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource)
        return r.status_code, (r.json() if r.content else {})


def token_query(name: str, system: str, value: str) -> str:
    """``name=system|value`` with the value escaped for a query string."""
    return f"{name}={quote(system, safe=':/')}|{quote(value, safe='')}"
