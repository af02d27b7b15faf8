"""The keyed patient key: HMAC-SHA256 of issuer and Patient ID under a site secret.

An unsalted hash of a Patient ID is not a pseudonym: the space of MRNs is small enough to
enumerate in seconds. The key in logs, file names and the store is therefore an HMAC under a
secret that only this site holds (generated on first start into the data folder, 0600, or
supplied in settings; see :mod:`cds.security.site_secret`). The application installs that secret
once at start with :func:`install_patient_key_secret`; the contracts layer only holds it.

Before a secret is installed (a unit test building a :class:`~cds.contracts.domain.PatientRef`
on its own), a random per-process secret is used: keys are stable within the process and still
not reversible, but not across restarts, which only a service with its data folder needs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

KEY_HEX_CHARS = 16  # 64 bits: collisions are negligible for a site's patients; unguessable without the secret


class _KeyState:
    """The installed secret (one per process: the service has one data folder)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secret: bytes | None = None


_STATE = _KeyState()


def install_patient_key_secret(secret: bytes) -> None:
    """Make ``secret`` the HMAC key of every patient key computed from now on."""
    if len(secret) < 16:
        raise ValueError("the patient-key secret must be at least 16 bytes")
    with _STATE.lock:
        _STATE.secret = bytes(secret)


def _secret() -> bytes:
    with _STATE.lock:
        if _STATE.secret is None:
            _STATE.secret = secrets.token_bytes(32)
        return _STATE.secret


def patient_key(issuer: str, patient_id: str, secret: bytes | None = None) -> str:
    """HMAC-SHA256(secret, issuer NUL patient_id), first :data:`KEY_HEX_CHARS` hex digits."""
    mac = hmac.new(secret if secret is not None else _secret(),
                   f"{issuer}\x00{patient_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:KEY_HEX_CHARS]
