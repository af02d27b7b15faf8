"""The slide model's training-domain values for one slide (numpy only).

Training (:mod:`models.slides.training.domain`) and the runtime compute the same values with
:func:`acquisition_values`: the base level's pixel size and the colour statistics of the tiles
read at high magnification. The slide's size is deliberately not a domain value: the two-stage
analysis reads fixed-magnification tiles, so a larger slide has more tiles, not different ones.
"""

from __future__ import annotations

import numpy as np

from models.domain import intensity_stats


def acquisition_values(um_per_px: float | None, tiles: np.ndarray) -> dict[str, float | None]:
    """Base pixel size (um) and mean/std of the stage-2 tiles' RGB values (fraction of 255)."""
    t = np.asarray(tiles)
    if t.size == 0:
        return {"pixel_spacing_um": um_per_px, "intensity_mean": None, "intensity_std": None}
    flat = t.reshape(-1, t.shape[-1]) if t.ndim >= 2 else t.reshape(-1, 1)
    mean, std = intensity_stats(flat, 255.0)
    return {"pixel_spacing_um": float(um_per_px) if um_per_px else None, "intensity_mean": mean,
            "intensity_std": std}


def slide_check(domain, um_per_px: float | None, tiles: np.ndarray, embedding: np.ndarray):  # noqa: ANN001, ANN201
    """The slide's :class:`DomainCheck` (None when the card describes no domain)."""
    if domain is None:
        return None
    return domain.check(acquisition_values(um_per_px, tiles), np.asarray(embedding, np.float64)[None, :])
