"""The site secret of patient keys: from settings, a file, or made once in the data folder.

``<data_dir>/site-secret.key`` holds 32 random bytes (hex), created 0600 with O_EXCL on first
start, so the same patient gets the same key after every restart and the key cannot be reversed
by enumerating Patient IDs without this file. Losing the file changes every key (the store's
patient rows then no longer group with new arrivals): back it up with the store.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cds.contracts.errors import PermanentError
from cds.contracts.patient_key import install_patient_key_secret
from cds.contracts.settings import Settings
from cds.security.secrets import secret_value

SECRET_FILE = "site-secret.key"


def _read_or_create(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
    os.chmod(path, 0o600)
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 32:
        raise PermanentError(f"patient-key secret {path} is shorter than 32 characters")
    return text.encode()


def site_secret(settings: Settings) -> bytes:
    value = secret_value(settings, "patient_key_secret")
    if value:
        if len(value) < 32:
            raise PermanentError("CDS_PATIENT_KEY_SECRET must be at least 32 characters")
        return value.encode()
    return _read_or_create(settings.data_dir / SECRET_FILE)


def install_site_patient_key(settings: Settings) -> None:
    """Install the site secret as the HMAC key of patient keys for this process."""
    install_patient_key_secret(site_secret(settings))
