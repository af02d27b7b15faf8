"""Deterministic DICOM UIDs derived from a string (the same string always gives the same UID)."""

from __future__ import annotations

import hashlib


def derived_uid(entropy: str) -> str:
    """A "2.25." UID from the first 128 bits of the SHA-256 of ``entropy``."""
    digest = hashlib.sha256(entropy.encode()).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))
