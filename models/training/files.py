"""File helpers for training code: the checksums a model card records for its weights."""

from __future__ import annotations

from models.weights import sha256_file

__all__ = ["sha256_file"]
