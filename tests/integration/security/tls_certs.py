"""Test PKI made at test time with `cryptography`: a CA, a server and client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_cert: Path  # a second client, CN other.example
    other_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _issue(ca_key, ca_name, cn: str, dns: list[str], ips: list[str], usage, out: Path, stem: str):
    key = rsa.generate_private_key(65537, 2048)
    now = dt.datetime.now(dt.UTC)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, out / f"{stem}.key")
    return out / f"{stem}.pem", out / f"{stem}.key"


def make_pki(out: Path) -> Pki:
    out.mkdir(parents=True, exist_ok=True)
    ca_key = rsa.generate_private_key(65537, 2048)
    ca_name = _name("CDS Test CA")
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server = _issue(ca_key, ca_name, "localhost", ["localhost"], ["127.0.0.1"],
                    ExtendedKeyUsageOID.SERVER_AUTH, out, "server")
    client = _issue(ca_key, ca_name, "pacs.example", ["pacs.example"], [],
                    ExtendedKeyUsageOID.CLIENT_AUTH, out, "client")
    other = _issue(ca_key, ca_name, "other.example", ["other.example"], [],
                   ExtendedKeyUsageOID.CLIENT_AUTH, out, "other")
    return Pki(out / "ca.pem", *server, *client, *other)
