"""DICOM TLS per PS3.15 Annex B (the BCP 195 profiles) and certificate-bound AE titles.

Profiles (``CDS_TLS_PROFILE``):

- ``bcp195-nd`` (default) and ``bcp195``: TLS 1.2 or newer, never less (the non-downgrading
  profile refuses anything older), with the BCP 195 / RFC 7525 recommended suites: ECDHE or DHE
  key exchange with AES-GCM (TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_GCM_SHA{256,384},
  TLS_DHE_RSA_WITH_AES_{128,256}_GCM_SHA{256,384}); TLS 1.3 with its AEAD suites.
- ``bcp195-ex``: the Extended profile: TLS 1.2 only with ECDHE AES-256-GCM-SHA384; TLS 1.3.
- ``tls13``: TLS 1.3 only.

Compression and renegotiation are off (Python's ssl defaults), session tickets are not needed.
The listener verifies client certificates against ``tls_ca_file`` (required with
``tls_require_client_cert``, i.e. mutual TLS); a calling AE listed in ``tls_ae_identities`` must
present a certificate whose subject CN or a DNS/URI subjectAltName equals the mapped identity.
"""

from __future__ import annotations

import ssl
from typing import Any

from cds.contracts.errors import PermanentError
from cds.contracts.settings import Settings

BCP195_TLS12_SUITES = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
))
BCP195_EX_TLS12_SUITES = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"


def apply_profile(ctx: ssl.SSLContext, profile: str) -> ssl.SSLContext:
    """Restrict ``ctx`` to the versions and suites of a PS3.15 BCP 195 profile."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if profile == "tls13" else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_EX_TLS12_SUITES if profile == "bcp195-ex" else BCP195_TLS12_SUITES)
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: Any, key: Any, what: str) -> None:
    try:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentError(f"{what}: certificate {cert} / key {key} cannot be loaded: {exc}") from exc


def _load_ca(ctx: ssl.SSLContext, ca: Any, what: str) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise PermanentError(f"{what}: CA bundle {ca} cannot be loaded: {exc}") from exc


def dicom_server_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when DICOM TLS is off."""
    if not settings.dicom_tls:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise PermanentError("CDS_DICOM_TLS needs CDS_TLS_CERT_FILE and CDS_TLS_KEY_FILE")
    ctx = apply_profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings.tls_profile)
    _load_chain(ctx, settings.tls_cert_file, settings.tls_key_file, "DICOM TLS listener")
    if settings.tls_ca_file:
        _load_ca(ctx, settings.tls_ca_file, "DICOM TLS listener")
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.tls_require_client_cert else ssl.CERT_OPTIONAL
    elif settings.tls_require_client_cert or settings.tls_ae_identities:
        raise PermanentError("mutual DICOM TLS (CDS_TLS_REQUIRE_CLIENT_CERT or CDS_TLS_AE_IDENTITIES) "
                             "needs CDS_TLS_CA_FILE, the CA that client certificates chain to")
    return ctx


def dicom_client_tls_args(settings: Settings) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom ``tls_args`` for C-STORE out, or None when the PACS is reached without TLS."""
    if not settings.pacs_tls:
        return None
    ctx = apply_profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), settings.tls_profile)
    if settings.tls_ca_file:
        _load_ca(ctx, settings.tls_ca_file, "C-STORE over TLS")
    else:
        ctx.load_default_certs()
    if settings.tls_cert_file and settings.tls_key_file:
        _load_chain(ctx, settings.tls_cert_file, settings.tls_key_file, "C-STORE over TLS")
    return ctx, settings.pacs_tls_server_name or settings.pacs_host


def certificate_identities(cert: dict[str, Any] | None) -> set[str]:
    """Subject CNs and DNS/URI subjectAltNames of a peer certificate (``getpeercert()`` form)."""
    if not cert:
        return set()
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"}
    names |= {value for kind, value in cert.get("subjectAltName", ()) if kind in ("DNS", "URI")}
    return names


def peer_certificate(assoc: Any) -> dict[str, Any] | None:
    """The verified certificate of an association's peer (None without TLS or certificate)."""
    sock = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    getter = getattr(sock, "getpeercert", None)
    return getter() if callable(getter) else None


def ae_identity_problem(settings: Settings, calling_ae: str, cert: dict[str, Any] | None) -> str:
    """Why ``calling_ae`` may not associate with this certificate; empty when it may."""
    expected = settings.tls_ae_identities.get(calling_ae.strip())
    if expected is None:
        if settings.tls_bind_all_aes and settings.tls_ae_identities:
            return f"calling AE {calling_ae!r} is not bound to a certificate identity"
        return ""
    if cert is None:
        return f"calling AE {calling_ae!r} must present a certificate ({expected}); none was verified"
    if expected not in certificate_identities(cert):
        return f"calling AE {calling_ae!r} presented a certificate not issued to {expected}"
    return ""
