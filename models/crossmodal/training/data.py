"""Paired-phantom data for the cross-modal model: render once, cache as .npz, slice by split/vendor.

The cache lives under ``weights/cache`` (ignored by git with everything else in ``weights/`` but
the shipped files); its name carries the data version, seed and size, so a changed generator or
size renders afresh instead of reusing stale arrays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from synthetic.phantoms.paired import paired_arrays

log = logging.getLogger(__name__)

DATA_VERSION = 1
Arrays = dict[str, np.ndarray]


def cache_path(cache_dir: Path, n_patients: int, seed: int, n_patches: int) -> Path:
    return cache_dir / f"paired_v{DATA_VERSION}_seed{seed}_n{n_patients}_k{n_patches}.npz"


def load_or_render(cache_dir: Path | None, n_patients: int, seed: int, n_patches: int = 4) -> Arrays:
    """The paired data set, from the cache when present, else rendered (and cached if a dir is given)."""
    path = cache_path(cache_dir, n_patients, seed, n_patches) if cache_dir else None
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    t0 = time.monotonic()
    data = paired_arrays(n_patients, seed=seed, n_patches=n_patches)
    log.info("rendered %d paired phantoms in %.0f s", n_patients, time.monotonic() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)
    return data


def subset(data: Arrays, splits: tuple[str, ...], vendors: tuple[str, ...] | None = None) -> Arrays:
    """The patients of the given splits (and vendors, when given)."""
    sel = np.isin(data["splits"], splits)
    if vendors is not None:
        sel &= np.isin(data["vendors"], vendors)
    return {k: v[sel] for k, v in data.items()}


def patches_to_input(patches: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., h, w, 3) -> float32 (..., 3, h, w) centred near zero (what the path stem reads)."""
    x = patches.astype(np.float32) / 255.0
    return np.moveaxis((x - 0.7) / 0.2, -1, -3)


def crops_to_input(crops: np.ndarray) -> np.ndarray:
    """(N, 48, 48) lesion crops -> (N, 1, 48, 48) float32 (the ONNX input, unchanged values)."""
    return np.ascontiguousarray(crops[:, None].astype(np.float32))
