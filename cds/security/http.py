"""HTTPS clients toward FHIR and DICOMweb: site CA bundle, client certificate, TLS 1.2+.

``verify`` is an SSLContext built from the site CA file (or the system CAs) with TLS 1.2 as the
floor; ``cert`` is the client certificate for mutual TLS. A token endpoint over plain http is
refused (the client secret or assertion would travel in clear) unless it is on loopback or
``allow_http_token_url`` says so.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Literal

import httpx

from cds.contracts.errors import PermanentError
from cds.contracts.settings import Settings
from cds.security.tls import BCP195_TLS12_SUITES

Peer = Literal["fhir", "dicomweb"]


def https_context(settings: Settings, peer: Peer) -> ssl.SSLContext:
    ca = getattr(settings, f"{peer}_ca_file")
    cert = getattr(settings, f"{peer}_client_cert_file")
    key = getattr(settings, f"{peer}_client_key_file")
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(BCP195_TLS12_SUITES)
        if cert:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentError(f"{peer} TLS settings (CA {ca}, client certificate {cert}) cannot be "
                             f"loaded: {exc}") from exc
    return ctx


def http_client(settings: Settings, peer: Peer, timeout: float) -> httpx.Client:
    """An httpx client that trusts the site CA and presents the client certificate, if set."""
    return httpx.Client(timeout=timeout, verify=https_context(settings, peer))


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token_url(settings: Settings, url: str) -> None:
    """Refuse a plain-http token endpoint off this machine unless the site allowed it."""
    parsed = httpx.URL(url)
    if parsed.scheme == "https" or settings.allow_http_token_url or is_loopback(parsed.host):
        return
    raise PermanentError(
        f"OAuth2 token URL {parsed.scheme}://{parsed.host}{parsed.path} is not https: the client "
        "credentials would be sent in clear; use https or set CDS_ALLOW_HTTP_TOKEN_URL=true")


def redact_url(url: str | httpx.URL) -> str:
    """A URL for messages: scheme, host, port and path; never the query (identifiers) or userinfo."""
    u = httpx.URL(str(url))
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}" if u.scheme else u.path
