"""Security and privacy settings: DICOM TLS, HTTPS trust and client certificates, SMART Backend
Services, secrets, the patient-key secret, retention and the audit trail.

:class:`SecuritySettings` is a base of :class:`cds.contracts.settings.Settings`: the fields are
ordinary flat ``CDS_*`` settings, kept here so the settings module stays readable. Secrets are
``SecretStr`` (never printed: ``repr`` shows ``**********``) or read from a ``*_file``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

log = logging.getLogger(__name__)

TlsProfile = Literal["bcp195-nd", "bcp195", "bcp195-ex", "tls13"]


class SecuritySettings(BaseSettings):
    """The security fields of the one settings object (see the module docstring)."""

    # --- DICOM TLS (PS3.15 Annex B, BCP 195 profiles) ---------------------------------------
    dicom_tls: bool = Field(False, description="Listener accepts only DICOM TLS (needs tls_cert_file/tls_key_file).")
    tls_profile: TlsProfile = Field(
        "bcp195-nd", description="PS3.15 TLS profile for DICOM in and out: 'bcp195-nd' (Non-downgrading "
        "BCP 195: TLS 1.2+ with the BCP 195 AEAD suites, TLS 1.3), 'bcp195' (same suites), 'bcp195-ex' "
        "(Extended: TLS 1.2 ECDHE AES-256-GCM only, TLS 1.3) or 'tls13' (TLS 1.3 only).")
    tls_cert_file: Path | None = Field(None, description="Our certificate chain (PEM), for the listener and as client cert on C-STORE out.")
    tls_key_file: Path | None = Field(None, description="Private key (PEM) of tls_cert_file.")
    tls_ca_file: Path | None = Field(None, description="CA bundle (PEM) that DICOM peers' certificates must chain to.")
    tls_require_client_cert: bool = Field(False, description="Mutual TLS on the listener: refuse a peer without a certificate from tls_ca_file.")
    tls_ae_identities: dict[str, str] = Field(
        default_factory=dict,
        description="Calling AE title -> certificate identity (subject CN or a DNS/URI SAN) it must present; "
        "checked on the association request (A-ASSOCIATE-RJ 'calling AE not recognised' otherwise). "
        "CDS_TLS_AE_IDENTITIES='{\"PACS\": \"pacs.example.org\"}'.")
    tls_bind_all_aes: bool = Field(False, description="With tls_ae_identities: refuse calling AEs that are not in the map.")
    pacs_tls: bool = Field(False, description="C-STORE out over DICOM TLS (verifies the PACS against tls_ca_file).")
    pacs_tls_server_name: str = Field("", description="Name the PACS certificate must carry; empty = pacs_host.")
    # --- HTTPS toward FHIR and DICOMweb ----------------------------------------------------------
    fhir_ca_file: Path | None = Field(None, description="Site CA bundle (PEM) to verify the FHIR server and token endpoint; empty = system CAs.")
    fhir_client_cert_file: Path | None = Field(None, description="Client certificate (PEM) presented to FHIR (mutual TLS).")
    fhir_client_key_file: Path | None = Field(None, description="Private key (PEM) of fhir_client_cert_file.")
    dicomweb_ca_file: Path | None = Field(None, description="Site CA bundle (PEM) to verify the DICOMweb server.")
    dicomweb_client_cert_file: Path | None = Field(None, description="Client certificate (PEM) presented to DICOMweb.")
    dicomweb_client_key_file: Path | None = Field(None, description="Private key (PEM) of dicomweb_client_cert_file.")
    allow_http_token_url: bool = Field(False, description="Accept an OAuth2 token URL over plain http to a non-loopback host (the secret travels in clear).")
    # --- secrets as files (one of the value or the file) ----------------------------------------
    fhir_token_file: Path | None = Field(None, description="File holding the static bearer token.")
    fhir_client_secret_file: Path | None = Field(None, description="File holding the OAuth2 client secret.")
    dicomweb_password_file: Path | None = Field(None, description="File holding the DICOMweb password.")
    # --- SMART Backend Services (private_key_jwt) ------------------------------------------------
    fhir_client_assertion_key_file: Path | None = Field(
        None, description="Private key (PEM) signing a SMART Backend Services client assertion "
        "(private_key_jwt) instead of sending a client secret.")
    fhir_client_assertion_alg: Literal["RS384", "ES384"] = Field("RS384", description="JWS algorithm of the assertion.")
    fhir_client_assertion_kid: str = Field("", description="Key id (kid) registered with the authorization server (JWKS).")
    # --- privacy ---------------------------------------------------------------------------------
    patient_key_secret: SecretStr = Field(SecretStr(""), description="HMAC secret of patient keys (32+ chars); empty = <data_dir>/site-secret.key, made on first start (0600).")
    patient_key_secret_file: Path | None = Field(None, description="File holding the patient-key secret.")
    retention_interval_s: float = Field(3600.0, ge=0, description="How often the cleaner runs (0 = never).")
    retention_incoming_s: float = Field(3600.0, gt=0, description="Unacknowledged partial receives older than this are removed (well above the receive timeout).")
    retention_rejected_days: float = Field(30.0, gt=0, description="Refused instances kept in <data_dir>/rejected this long.")
    retention_work_days: float = Field(7.0, gt=0, description="Work folders of finished jobs kept this long.")
    retention_spool_days: float = Field(0.0, ge=0, description="Spooled instances removed after this many days once their jobs are done and outputs delivered (0 = keep).")
    # --- audit trail (IHE BALP AuditEvent, hash-chained) -----------------------------------------
    audit_enabled: bool = Field(True, description="Write the audit trail <data_dir>/audit/audit.jsonl.")
    audit_source_id: str = Field("", description="AuditEvent.source.observer name; empty = the AE title.")
    audit_syslog_host: str = Field("", description="Forward each record as RFC 5424 syslog to this host (ATNA repository).")
    audit_syslog_port: int = Field(514)
    audit_syslog_protocol: Literal["udp", "tcp"] = Field("udp")

    @field_validator("fhir_base_url", "dicomweb_url", "fhir_token_url", mode="before", check_fields=False)
    @classmethod
    def _strip_url_credentials(cls, value: Any, info: Any) -> Any:
        """Credentials written into a URL would reach logs, ``cds status`` and the store: they are
        removed here, with a message naming the setting (never the credentials)."""
        return strip_url_credentials(value, f"CDS_{info.field_name.upper()}")


def strip_url_credentials(value: Any, setting: str) -> Any:
    """``value`` without a ``user:password@`` part (logged once, without the credentials)."""
    if not isinstance(value, str) or "@" not in value:
        return value
    parts = urlsplit(value)
    if not parts.username and not parts.password:
        return value
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    log.warning("%s carried credentials in its URL; they were removed and are not used. Put them "
                "in CDS_FHIR_CLIENT_SECRET(_FILE), CDS_FHIR_TOKEN(_FILE) or "
                "CDS_DICOMWEB_USERNAME + CDS_DICOMWEB_PASSWORD(_FILE)", setting)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
