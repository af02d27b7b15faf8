"""Lymph-node slide phantom tissue: H&E-like RGB pixels and the tumour mask, drawn from one seed.

What is drawn (cortex, germinal centres, stroma, capsule, tumour clusters) and the slide-to-slide
variation are described in :mod:`synthetic.phantoms.slides`. :func:`render_tissue` draws from its
generator in a fixed order (layout, clusters, stain maps, lymphocytes, germinal-centre cells,
tumour nuclei, noise), so a seed always gives the same slide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

BASE_UM_PER_PX = 0.5
_CELL = 16  # coarse density grid cell, px

# Optical densities of the pure stains (rows: haematoxylin, eosin, residual), as in
# skimage.color (Ruifrok & Johnston), so rgb2hed separates our phantoms cleanly.
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)


@dataclass(frozen=True)
class _SlideLook:
    """Slide-to-slide variation: stain batch, scanner, how cellular the metastasis is."""

    stain: np.ndarray  # perturbed H&E stain matrix (rows: haematoxylin, eosin, residual)
    h_gain: float
    e_gain: float
    brightness: float
    cellularity: float  # tumour nuclei per 16x16 px cell (the first version always had 0.5)
    nucleus_scale: float


@dataclass(frozen=True)
class _NodeLayout:
    """The node's regions on the coarse grid (one cell = 16 px), as boolean maps."""

    tissue: np.ndarray
    capsule: np.ndarray
    stroma: np.ndarray
    germinal: np.ndarray


def _upsample(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of a small 2-D map to (out_h, out_w), pixel-centre aligned, edges clamped.

    PIL's float ("F" mode) resampler: linear in the output size and about ten times faster than a
    spline zoom, so rendering a 16k-pixel phantom stays affordable.
    """
    img = Image.fromarray(np.ascontiguousarray(a, np.float32), mode="F")
    return np.asarray(img.resize((out_w, out_h), Image.Resampling.BILINEAR), np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, coarse: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: random values on a coarse grid, upsampled smoothly."""
    grid = rng.standard_normal((coarse, coarse)).astype(np.float32)
    return np.clip(_upsample(grid, size, size) / 1.5, -1.5, 1.5)


def _blob(rng: np.random.Generator, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """A boolean, irregular blob (radius modulated by angular harmonics) inside a size x size grid.

    Only the blob's bounding window is computed, so a small cluster on a big slide stays cheap.
    """
    out = np.zeros((size, size), bool)
    reach = int(radius * 1.4) + 2
    y0, y1 = max(0, int(cy) - reach), min(size, int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(size, int(cx) + reach + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    r = np.hypot(dy, dx)
    mod = np.ones_like(theta)
    for k in (2, 3, 5):
        mod = mod + rng.uniform(0.03, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    out[y0:y1, x0:x1] = r <= radius * mod
    return out


def _stamps(radii: list[tuple[float, float]], angles: list[float]) -> list[np.ndarray]:
    """Offsets (dy, dx) of the pixels of filled ellipses: one rasterised stamp per shape."""
    out = []
    for (a, b), ang in zip(radii, angles):
        m = int(math.ceil(max(a, b))) + 1
        yy, xx = np.mgrid[-m : m + 1, -m : m + 1]
        c, s = math.cos(ang), math.sin(ang)
        u = (xx * c + yy * s) / a
        v = (-xx * s + yy * c) / b
        inside = u * u + v * v <= 1.0
        out.append(np.stack([yy[inside], xx[inside]], axis=1))
    return out


def _paint(
    target: np.ndarray,
    centres: np.ndarray,
    shapes: np.ndarray,
    stamps: list[np.ndarray],
    values: np.ndarray,
) -> None:
    """Write ``values[i]`` into ``target`` over stamp ``shapes[i]`` centred at ``centres[i]``."""
    h, w = target.shape
    for s_idx, stamp in enumerate(stamps):
        sel = shapes == s_idx
        if not sel.any():
            continue
        c = centres[sel]
        ys = (c[:, None, 0] + stamp[None, :, 0]).ravel()
        xs = (c[:, None, 1] + stamp[None, :, 1]).ravel()
        vals = np.repeat(values[sel], len(stamp))
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        target[ys[ok], xs[ok]] = vals[ok]


def _poisson_points(rng: np.random.Generator, density: np.ndarray, scale: int, mean_per_cell: float) -> np.ndarray:
    """Random points whose local rate follows ``density`` (a coarse map, one cell = scale px)."""
    counts = rng.poisson(np.clip(density, 0, None) * mean_per_cell)
    cy, cx = np.nonzero(counts)
    reps = counts[cy, cx]
    cy = np.repeat(cy, reps)
    cx = np.repeat(cx, reps)
    jitter = rng.uniform(0, scale, size=(len(cy), 2))
    return np.stack([cy * scale + jitter[:, 0], cx * scale + jitter[:, 1]], axis=1).astype(np.int64)


def render_tissue(
    seed: int, size: int, metastasis: bool, occult: bool
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Render one lymph-node section; returns (RGB uint8 HxWx3, tumour mask bool HxW, diameters in um)."""
    rng = np.random.default_rng(seed)
    look = _slide_look(seed)
    cell = _CELL
    n_cells = size // cell
    layout = _node_layout(rng, n_cells)
    tissue = _up(layout.tissue, size)
    stroma = _up(layout.stroma, size) & tissue
    tumour, diameters = _tumour_clusters(rng, size, layout, tissue, metastasis, occult)
    E, H = _stain_maps(rng, size, n_cells, tissue, stroma, tumour)
    _paint_lymphocytes(rng, H, layout, tumour)
    _paint_germinal_cells(rng, H, layout)
    if tumour.any():
        _paint_tumour_nuclei(rng, H, tumour, look)
    return _to_rgb(rng, H, E, look), tumour, diameters


def _slide_look(seed: int) -> _SlideLook:
    """Slide-to-slide variation, from its own stream: the tissue layout of a seed does not change."""
    vary = np.random.default_rng([seed, 1])
    stain = _RGB_FROM_HED * vary.uniform(0.9, 1.1, (3, 3)).astype(np.float32)
    stain /= np.linalg.norm(stain, axis=1, keepdims=True)
    h_gain, e_gain = vary.uniform(0.8, 1.2, 2)
    brightness = float(vary.uniform(235.0, 250.0))
    cellularity = float(vary.uniform(0.25, 0.5))  # tumour nuclei per 16x16 px cell (was 0.5)
    nucleus_scale = float(vary.uniform(0.85, 1.0))
    return _SlideLook(stain=stain, h_gain=h_gain, e_gain=e_gain, brightness=brightness,
                      cellularity=cellularity, nucleus_scale=nucleus_scale)


def _node_layout(rng: np.random.Generator, n_cells: int) -> _NodeLayout:
    """Node outline (ellipse-ish blob), capsule band and internal structure at coarse resolution."""
    c_yy, c_xx = np.mgrid[:n_cells, :n_cells]
    ry, rx = rng.uniform(0.36, 0.46, 2) * n_cells
    cy, cx = n_cells / 2 + rng.uniform(-0.04, 0.04, 2) * n_cells
    wobble = _smooth_noise(rng, n_cells, 6) * 0.08
    rad = np.hypot((c_yy - cy) / ry, (c_xx - cx) / rx) + wobble
    tissue_c = rad <= 1.0
    capsule_c = tissue_c & (rad > 0.93)
    stroma_c = capsule_c | (tissue_c & (np.abs(_smooth_noise(rng, n_cells, 5)) < 0.07))
    germinal_c = np.zeros_like(tissue_c)
    for _ in range(rng.integers(1, 4)):
        ang, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.75)
        gy, gx = cy + rr * ry * math.sin(ang), cx + rr * rx * math.cos(ang)
        germinal_c |= _blob(rng, n_cells, gy, gx, rng.uniform(0.06, 0.11) * n_cells)
    germinal_c &= tissue_c & ~stroma_c
    return _NodeLayout(tissue=tissue_c, capsule=capsule_c, stroma=stroma_c, germinal=germinal_c)


def _up(a: np.ndarray, size: int) -> np.ndarray:
    """Coarse boolean map to full resolution with smooth (bilinear, thresholded) edges."""
    return _upsample(a, size, size) >= 0.5


def _tumour_clusters(rng: np.random.Generator, size: int, layout: _NodeLayout, tissue: np.ndarray,
                     metastasis: bool, occult: bool) -> tuple[np.ndarray, list[float]]:
    """Tumour clusters as one full-resolution mask, and their diameters in um (none without metastasis)."""
    cell = _CELL
    tumour = np.zeros((size, size), bool)
    diameters: list[float] = []
    if metastasis:
        n = 1 if occult else int(rng.integers(1, 4))
        inner = np.argwhere(layout.tissue & ~layout.capsule)
        for _ in range(n):
            d_um = rng.uniform(80.0, 180.0) if occult else rng.uniform(250.0, 700.0)
            r_px = d_um / BASE_UM_PER_PX / 2
            py, px = inner[rng.integers(len(inner))] * cell + cell // 2
            blob = _blob(rng, size, py, px, r_px) & tissue
            tumour |= blob
            diameters.append(float(d_um))
    return tumour, diameters


def _stain_maps(rng: np.random.Generator, size: int, n_cells: int, tissue: np.ndarray,
                stroma: np.ndarray, tumour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eosin (stroma, cytoplasm) and haematoxylin background concentrations, before nuclei."""
    E = np.zeros((size, size), np.float32)
    low = _smooth_noise(rng, size, 24)
    E[tissue] = 0.16 + 0.04 * low[tissue]
    fibre = _upsample(rng.standard_normal((n_cells * 4, n_cells // 2)), size, size)
    E[stroma] = 0.36 + 0.08 * fibre[stroma]
    E[tumour] = 0.30 + 0.05 * low[tumour]
    H = np.zeros((size, size), np.float32)
    H[tissue] = 0.04
    H[tumour] = 0.10  # basophilic tinge of tumour cytoplasm
    return E, H


def _paint_lymphocytes(rng: np.random.Generator, H: np.ndarray, layout: _NodeLayout,
                       tumour: np.ndarray) -> None:
    """Lymphocytes: small, round, dark, dense; sparser in germinal centres and stroma."""
    cell, size = _CELL, H.shape[0]
    dens = np.where(layout.stroma, 0.12, np.where(layout.germinal, 0.35, 1.0)) * layout.tissue
    lym = _poisson_points(rng, dens, cell, mean_per_cell=1.1)
    lym = lym[~tumour[np.clip(lym[:, 0], 0, size - 1), np.clip(lym[:, 1], 0, size - 1)]]
    lym_radii = [(r, r * rng.uniform(0.85, 1.0)) for r in (5.5, 6.0, 6.5, 7.0)]
    lym_st = _stamps(lym_radii, list(rng.uniform(0, np.pi, 4)))
    _paint(H, lym, rng.integers(0, len(lym_st), len(lym)), lym_st, rng.uniform(0.85, 1.1, len(lym)).astype(np.float32))


def _paint_germinal_cells(rng: np.random.Generator, H: np.ndarray, layout: _NodeLayout) -> None:
    """Germinal-centre cells (centroblasts/macrophages): medium, paler nuclei — a benign mimic."""
    gc = _poisson_points(rng, layout.germinal.astype(np.float32), _CELL, mean_per_cell=0.9)
    gc_st = _stamps([(9, 8), (10, 8), (8, 7)], list(rng.uniform(0, np.pi, 3)))
    _paint(H, gc, rng.integers(0, 3, len(gc)), gc_st, rng.uniform(0.45, 0.6, len(gc)).astype(np.float32))


def _paint_tumour_nuclei(rng: np.random.Generator, H: np.ndarray, tumour: np.ndarray,
                         look: _SlideLook) -> None:
    """Tumour nuclei: large, pleomorphic, vesicular (chromatin texture) and crowded."""
    cell, size = _CELL, H.shape[0]
    n_cells = size // cell
    ys, xs = np.nonzero(tumour.any(axis=1))[0], np.nonzero(tumour.any(axis=0))[0]
    y0, y1 = (ys[0] // cell) * cell, -(-(ys[-1] + 1) // cell) * cell
    x0, x1 = (xs[0] // cell) * cell, -(-(xs[-1] + 1) // cell) * cell
    box = tumour[y0:y1, x0:x1]  # tumour fraction per coarse cell, computed on its bounding box only
    t_cells = np.zeros((n_cells, n_cells), np.float32)
    t_cells[y0 // cell : y1 // cell, x0 // cell : x1 // cell] = box.reshape(
        box.shape[0] // cell, cell, box.shape[1] // cell, cell).mean(axis=(1, 3))
    tn = _poisson_points(rng, t_cells, cell, mean_per_cell=look.cellularity)
    tn = tn[tumour[np.clip(tn[:, 0], 0, size - 1), np.clip(tn[:, 1], 0, size - 1)]]
    nucleus_scale = look.nucleus_scale
    shapes = [(rng.uniform(10, 15) * nucleus_scale, rng.uniform(7, 11) * nucleus_scale) for _ in range(10)]
    t_st = _stamps(shapes, list(rng.uniform(0, np.pi, 10)))
    _paint(H, tn, rng.integers(0, 10, len(tn)), t_st, rng.uniform(0.55, 0.8, len(tn)).astype(np.float32))
    grain = np.tile(rng.uniform(0.7, 1.3, (256, 256)).astype(np.float32), (size // 256 + 1, size // 256 + 1))[:size, :size]
    nuc_t = tumour & (H > 0.3)
    H[nuc_t] *= grain[nuc_t]


def _to_rgb(rng: np.random.Generator, H: np.ndarray, E: np.ndarray, look: _SlideLook) -> np.ndarray:
    """Blur and scale the stain maps, then Beer-Lambert to RGB with tiled sensor noise (uint8)."""
    size = H.shape[0]
    H = ndi.gaussian_filter(H, 0.9)
    E = ndi.gaussian_filter(E, 0.9)
    H *= np.float32(look.h_gain)
    E *= np.float32(look.e_gain)

    stain, brightness = look.stain, look.brightness
    rgb = np.empty((size, size, 3), np.uint8)
    noise = rng.normal(0, 3.0, (256, 256, 3)).astype(np.float32)
    for y0 in range(0, size, 512):
        h = H[y0 : y0 + 512, :, None]
        e = E[y0 : y0 + 512, :, None]
        od = h * stain[0] + e * stain[1] + 0.02
        strip = brightness * np.exp(-od * 2.3)
        nz = np.tile(noise, (strip.shape[0] // 256 + 1, size // 256 + 1, 1))[: strip.shape[0], :size]
        rgb[y0 : y0 + 512] = np.clip(strip + nz, 0, 255).astype(np.uint8)
    return rgb
