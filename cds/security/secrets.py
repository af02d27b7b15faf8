"""Secrets from settings: a ``SecretStr`` value or the file named by its ``*_file`` twin.

The value is read only when it is about to be used, and never formatted into a message.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from cds.contracts.errors import PermanentError
from cds.contracts.settings import Settings


def secret_value(settings: Settings, name: str) -> str:
    """The secret ``name`` (e.g. ``fhir_client_secret``): its file when set, else its value."""
    path: Path | None = getattr(settings, f"{name}_file", None)
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PermanentError(f"CDS_{name.upper()}_FILE {path} cannot be read: {exc.strerror}") from exc
    value = getattr(settings, name, "")
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
