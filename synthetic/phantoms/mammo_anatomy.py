"""Mammography phantom anatomy: breast outline, pectoral muscle and power-law tissue texture.

Canonical orientation: chest wall at column 0, nipple to the right (see
:mod:`synthetic.phantoms.mammography`).
"""

from __future__ import annotations

import numpy as np


def power_law_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field whose power spectrum falls as ``1/f^beta``."""
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
    field = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-8
    return field


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates: u across columns (0 at chest wall), v down the rows."""
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return u / cols, v / rows


def _breast_geometry(rng: np.random.Generator, view: str, rows: int, cols: int,
                     jitter: np.random.Generator | None = None):
    """Breast radius map ``r`` (1 at the skin line) and the pectoral-muscle mask.

    ``rng`` is shared by the two breasts of a view (same size and shape); ``jitter`` (this image's
    own generator) then moves size and height by a few per cent, as positioning does.
    """
    u, v = _grid(rows, cols)
    a = rng.uniform(0.62, 0.84)
    if view == "CC":
        cy, b = rng.uniform(0.46, 0.54), rng.uniform(0.40, 0.46)
    else:
        cy, b = rng.uniform(0.40, 0.46), rng.uniform(0.50, 0.56)
    if jitter is not None:
        a *= jitter.uniform(0.97, 1.03)
        cy += jitter.uniform(-0.02, 0.02)
        b *= jitter.uniform(0.97, 1.03)
    theta = np.arctan2(v - cy, u)
    wobble = 1.0 + sum(
        rng.uniform(0.0, 0.025) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    r = np.sqrt((u / a) ** 2 + ((v - cy) / b) ** 2) / wobble
    pectoral = np.zeros((rows, cols), bool)
    if view == "MLO":
        px, py = rng.uniform(0.22, 0.36), rng.uniform(0.45, 0.75)
        bow = rng.uniform(-0.06, 0.06)
        edge = u / px + v / py + bow * np.sin(np.pi * np.clip(v / py, 0, 1))
        pectoral = (edge < 1.0) & (r < 1.0)
    return r, pectoral, a


def _dome(rho: np.ndarray, power: float = 0.5) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0)) ** power
