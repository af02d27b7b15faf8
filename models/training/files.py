"""File helpers for training code: the checksums a model card records for its weights, and card
values made JSON-safe."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.weights import sha256_file

__all__ = ["finite", "sha256_file"]


def finite(obj: Any) -> Any:
    """NaN/inf (a metric undefined on these data, e.g. AUC with one class) become JSON null."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
