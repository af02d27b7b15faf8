"""Keyed patient keys, secrets, URL credentials, token URL scheme, SMART assertion, log scrub."""

from __future__ import annotations

import hashlib
import logging
import stat

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds.contracts.domain import PatientRef
from cds.contracts.errors import PermanentError
from cds.contracts.patient_key import install_patient_key_secret, patient_key
from cds.contracts.settings import Settings
from cds.security.http import check_token_url
from cds.security.privacy import PhiScrubFilter, scrub_text
from cds.security.site_secret import SECRET_FILE, site_secret
from cds.security.smart import ASSERTION_TYPE, token_form


def test_patient_key_is_keyed_and_stable(tmp_path):
    s = Settings(data_dir=tmp_path)
    secret = site_secret(s)
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert site_secret(Settings(data_dir=tmp_path)) == secret  # a restart reads the same secret
    k = patient_key("", "1234567", secret)
    assert k == patient_key("", "1234567", secret) and len(k) == 16
    assert k != hashlib.sha256(b"\x001234567").hexdigest()[:16]  # not the unsalted hash
    assert k != patient_key("", "1234567", b"another-site-secret-of-32-bytes!")
    install_patient_key_secret(secret)
    assert PatientRef(patient_id="1234567").key == k


def test_secret_settings_never_print(tmp_path):
    s = Settings(fhir_client_secret="hunter2-very-secret", dicomweb_password="pw-ZQX")
    assert "hunter2" not in repr(s) and "pw-ZQX" not in str(s.model_dump())
    f = tmp_path / "secret"
    f.write_text("from-file\n")
    from cds.security.secrets import secret_value

    assert secret_value(Settings(fhir_client_secret_file=f), "fhir_client_secret") == "from-file"


def test_credentials_in_urls_are_stripped(caplog):
    with caplog.at_level(logging.WARNING):
        s = Settings(fhir_base_url="https://bob:pa55word@fhir.example:8443/r4",
                     dicomweb_url="http://u:p@pacs/dicom-web")
    assert s.fhir_base_url == "https://fhir.example:8443/r4" and s.dicomweb_url == "http://pacs/dicom-web"
    assert "pa55word" not in caplog.text and "CDS_FHIR_BASE_URL" in caplog.text


def test_plain_http_token_url_refused_off_loopback():
    s = Settings()
    with pytest.raises(PermanentError, match="not https"):
        check_token_url(s, "http://auth.example/token")
    check_token_url(s, "https://auth.example/token")
    check_token_url(s, "http://127.0.0.1:9000/token")
    check_token_url(Settings(allow_http_token_url=True), "http://auth.example/token")


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_client_assertion(tmp_path, alg):
    key = rsa.generate_private_key(65537, 2048) if alg == "RS384" else ec.generate_private_key(ec.SECP384R1())
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    s = Settings(fhir_client_id="cds-client", fhir_client_assertion_key_file=pem,
                 fhir_client_assertion_alg=alg, fhir_client_assertion_kid="k1", fhir_scope="system/*.read")
    form = token_form(s, "https://auth.example/token", "unused-secret")
    assert form["client_assertion_type"] == ASSERTION_TYPE and "client_secret" not in form
    claims = jwt.decode(form["client_assertion"], key.public_key(), algorithms=[alg],
                        audience="https://auth.example/token")
    assert claims["iss"] == claims["sub"] == "cds-client" and claims["exp"] - claims["iat"] == 300
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "k1"


def test_scrub_filter_withholds_values_in_tracebacks_and_third_party_messages():
    assert "ZQX" not in scrub_text("could not convert string to float: 'ZQXDOB' b'ZQXID'")
    rec = logging.LogRecord("pydicom", logging.WARNING, __file__, 1, "Invalid value for VR DA: %r",
                            ("ZQXDOB",), None)
    PhiScrubFilter().filter(rec)
    assert "ZQX" not in rec.getMessage()
    try:
        raise ValueError("bad element b'ZQXSENTINEL'")
    except ValueError:
        import sys

        rec = logging.LogRecord("cds.intake", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    PhiScrubFilter().filter(rec)
    assert "ZQX" not in logging.Formatter().format(rec)
