"""Mammography phantom lesions: each kind adds attenuation in place and returns its ground-truth mask.

The kinds, their labels and how aggressiveness shows are tabulated in
:mod:`synthetic.phantoms.mammography`. :func:`_add_lesion` places the lesion and dispatches to
one drawing function per kind; every draw from the lesion's generator happens in a fixed order,
so a lesion seed always gives the same lesion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from synthetic.phantoms.mammo_anatomy import _dome, power_law_field
from synthetic.phantoms.mammo_spec import LESION_TYPES, LesionSpec


@dataclass(frozen=True)
class _Placement:
    """Where a lesion sits: its centre, offsets of every pixel from it, its radius, the breast."""

    cx: float
    cy: float
    dx: np.ndarray  # column offset of every pixel from the centre
    dy: np.ndarray  # row offset of every pixel from the centre
    rad: float  # characteristic radius in pixels
    inside: np.ndarray  # float32 1 inside the breast (away from the skin line), else 0


def _lesion_centre(rng: np.random.Generator, spec: LesionSpec, r: np.ndarray, pectoral: np.ndarray,
                   a: float) -> tuple[float, float]:
    """A centre inside the breast, away from the skin line and the pectoral muscle (pixels)."""
    rows, cols = r.shape
    x = spec.depth * a * cols
    ys = [y for y in np.linspace(0.1 * rows, 0.9 * rows, 40)]
    rng.shuffle(ys)
    for y in ys:
        yi, xi = int(y), int(min(max(x, 0), cols - 1))
        if r[yi, xi] < 0.75 and not pectoral[yi, xi]:
            # keep clear of the pectoral muscle by the lesion size
            margin = int(spec.size * cols * 1.5)
            y0, y1 = max(0, yi - margin), min(rows, yi + margin)
            x0, x1 = max(0, xi - margin), min(cols, xi + margin)
            if not pectoral[y0:y1, x0:x1].any():
                return float(x), float(y)
    return float(0.45 * a * cols), float(0.62 * rows)


def _add_lesion(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray, r: np.ndarray,
                pectoral: np.ndarray, a: float, scale: float) -> np.ndarray:
    """Draw ``spec`` into ``att`` (in place); return its uint8 ground-truth mask.

    ``scale`` is rows/1024: pixel-level sizes (calcification width, line width) scale with it
    so the same exam looks alike at every resolution.
    """
    rows, cols = att.shape
    cx, cy = _lesion_centre(rng, spec, r, pectoral, a)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    at = _Placement(cx=cx, cy=cy, dx=xx - cx, dy=yy - cy, rad=spec.size * cols,
                    inside=(r < 0.98).astype(np.float32))
    draw = _LESION_DRAWERS.get(spec.kind)
    if draw is None:
        raise ValueError(f"unknown lesion type {spec.kind!r}; expected one of {LESION_TYPES}")
    return draw(rng, spec, att, at, scale)


def _draw_circumscribed_mass(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray,
                             at: _Placement, scale: float) -> np.ndarray:
    """An oval with a sharp margin; the mask is the oval."""
    dx, dy, rad = at.dx, at.dy, at.rad
    rot = rng.uniform(0, np.pi)
    ex = rad * rng.uniform(0.8, 1.2)
    ey = rad * rng.uniform(0.65, 0.9)
    xr = dx * np.cos(rot) + dy * np.sin(rot)
    yr = -dx * np.sin(rot) + dy * np.cos(rot)
    rho = np.sqrt((xr / ex) ** 2 + (yr / ey) ** 2)
    edge = expit(-(rho - 1.0) * rad / (0.8 * max(scale, 0.25)))
    att += rng.uniform(0.16, 0.26) * edge * (0.7 + 0.3 * _dome(np.minimum(rho, 1.0))) * at.inside
    return (rho < 1.0).astype(np.uint8)


def _draw_spiculated_mass(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray,
                          at: _Placement, scale: float) -> np.ndarray:
    """A lobulated core with spicules radiating from its margin; the mask is the core."""
    dx, dy, ag, inside = at.dx, at.dy, spec.aggressiveness, at.inside
    core = at.rad * (0.7 + 0.5 * ag)
    theta = np.arctan2(dy, dx)
    lobes = 1.0 + sum(
        rng.uniform(0.05, 0.14) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (3, 5, 7)
    )
    rho = np.sqrt(dx * dx + dy * dy) / (core * lobes)
    edge = expit(-(rho - 1.0) * core / (1.5 * max(scale, 0.25)))
    contrast = rng.uniform(0.18, 0.28)
    att += contrast * edge * (0.75 + 0.25 * _dome(np.minimum(rho, 1.0))) * inside
    n_spic = int(8 + 14 * ag + rng.integers(0, 4))
    length = core * (1.6 + 1.6 * ag)
    # spicules radiate from the margin, so their bases draw no bright halo outside the core
    # that the mask (the core) would not include
    _draw_rays(att, at.cx, at.cy, n_spic, core * 0.9, length, 2.2 * max(scale, 0.35),
               contrast * 0.7, rng, inside)
    return (rho < 1.0).astype(np.uint8)


def _draw_architectural_distortion(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray,
                                   at: _Placement, scale: float) -> np.ndarray:
    """Lines radiating from a point with a faint central density; the mask is their hull."""
    ag, inside = spec.aggressiveness, at.inside
    n_lines = int(10 + 12 * ag + rng.integers(0, 4))
    length = at.rad * (1.3 + 1.0 * ag)
    lines = _draw_rays(att, at.cx, at.cy, n_lines, 0.0, length, 2.4 * max(scale, 0.35),
                       rng.uniform(0.16, 0.22), rng, inside)
    # central retraction: a faint star-shaped density at the convergence point
    d = np.sqrt(at.dx * at.dx + at.dy * at.dy)
    att += 0.07 * np.exp(-((d / (0.35 * length)) ** 2)) * inside
    # the distorted region is what the lines span: the convex hull of where they are drawn at
    # half their peak strength or more, an edge the image marks
    return _hull_of(lines >= 0.5)


def _draw_asymmetry(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray,
                    at: _Placement, scale: float) -> np.ndarray:
    """A broad, textured, low-contrast density; the mask is its half-maximum region."""
    dx, dy, rad = at.dx, at.dy, at.rad
    rot = rng.uniform(0, np.pi)
    ex, ey = rad * rng.uniform(1.3, 1.8), rad * rng.uniform(0.9, 1.3)
    xr = dx * np.cos(rot) + dy * np.sin(rot)
    yr = -dx * np.sin(rot) + dy * np.cos(rot)
    rho2 = (xr / ex) ** 2 + (yr / ey) ** 2
    env = np.exp(-(rho2 ** 2) * np.log(2.0))  # plateau profile, 0.5 at rho = 1
    tex = power_law_field(rng, att.shape, 2.6)
    att += rng.uniform(0.15, 0.20) * env * (0.75 + 0.25 * np.tanh(tex)) * at.inside
    return (env >= 0.5).astype(np.uint8)


def _draw_calcifications(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray,
                         at: _Placement, scale: float) -> np.ndarray:
    """A ductal cluster of calcifications over a faint density; the mask is their dilated hull."""
    ag = spec.aggressiveness
    n = int(6 + 24 * ag + rng.integers(0, 3))
    cluster = at.rad * rng.uniform(0.7, 1.0)
    pts_arr = _calcification_points(rng, n, at.cx, at.cy, cluster)
    att += _calcification_spots(rng, att, pts_arr, ag, scale) * at.inside
    # faint associated density
    d = np.sqrt(at.dx * at.dx + at.dy * at.dy)
    att += 0.04 * np.exp(-((d / cluster) ** 2)) * at.inside
    return _calcification_mask(pts_arr, att.shape)


def _calcification_points(rng: np.random.Generator, n: int, cx: float, cy: float,
                          cluster: float) -> np.ndarray:
    """``n`` calcification centres (x, y) in a ductal (linear/branching) arrangement.

    Points lie along 1-3 random segments through the centre.
    """
    pts = []
    n_seg = 1 + int(rng.integers(0, 3))
    seg_rot = rng.uniform(0, np.pi)
    for i in range(n):
        seg = i % n_seg
        t = rng.uniform(-1, 1)
        base_ang = seg * np.pi / n_seg + seg_rot
        px = cx + t * cluster * np.cos(base_ang) + rng.normal(0, 0.18 * cluster)
        py = cy + t * cluster * np.sin(base_ang) + rng.normal(0, 0.18 * cluster)
        pts.append((px, py))
    return np.array(pts, np.float32)


def _calcification_spots(rng: np.random.Generator, att: np.ndarray, pts_arr: np.ndarray,
                         ag: float, scale: float) -> np.ndarray:
    """One small Gaussian spot per point (an array like ``att``, which is left unchanged).

    Size and pleomorphism grow with aggressiveness ``ag``.
    """
    rows, cols = att.shape
    calc = np.zeros_like(att)
    for px, py in pts_arr:
        size = 1.5 + rng.uniform(0.0, 1.0) * (0.5 + ag)  # pleomorphism grows with grade
        sigma_true = 0.9 * size * scale
        sigma = max(sigma_true, 0.7)
        amp = rng.uniform(1.2, 1.6) * (sigma_true / sigma) ** 2
        win = int(4 * sigma) + 1
        x0, x1 = max(0, int(px) - win), min(cols, int(px) + win + 1)
        y0, y1 = max(0, int(py) - win), min(rows, int(py) + win + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        gy, gx = np.mgrid[y0:y1, x0:x1]
        calc[y0:y1, x0:x1] += amp * np.exp(-((gx - px) ** 2 + (gy - py) ** 2) / (2 * sigma**2))
    return calc


def _calcification_mask(pts_arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Convex hull of the calcification centres, dilated by about 1 mm (uint8)."""
    from skimage.morphology import convex_hull_image, disk

    rows, cols = shape
    seeds = np.zeros((rows, cols), bool)
    xi = np.clip(pts_arr[:, 0].round().astype(int), 0, cols - 1)
    yi = np.clip(pts_arr[:, 1].round().astype(int), 0, rows - 1)
    seeds[yi, xi] = True
    hull = convex_hull_image(seeds)
    margin = max(1, int(round(0.012 * cols)))
    y0, y1 = max(0, yi.min() - 2 * margin), min(rows, yi.max() + 2 * margin + 1)
    x0, x1 = max(0, xi.min() - 2 * margin), min(cols, xi.max() + 2 * margin + 1)
    out = np.zeros((rows, cols), bool)
    out[y0:y1, x0:x1] = ndimage.binary_dilation(hull[y0:y1, x0:x1], disk(margin))
    return out.astype(np.uint8)


_LESION_DRAWERS = {
    "circumscribed_mass": _draw_circumscribed_mass,
    "spiculated_mass": _draw_spiculated_mass,
    "architectural_distortion": _draw_architectural_distortion,
    "asymmetry": _draw_asymmetry,
    "calcifications": _draw_calcifications,
}

def _hull_of(region: np.ndarray) -> np.ndarray:
    """Filled convex hull of a boolean image (uint8); empty in, empty out."""
    from skimage.morphology import convex_hull_image

    if not region.any():
        return np.zeros(region.shape, np.uint8)
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = np.zeros(region.shape, np.uint8)
    out[y0:y1, x0:x1] = convex_hull_image(region[y0:y1, x0:x1])
    return out


def _draw_rays(att: np.ndarray, cx: float, cy: float, n: int, start: float, length: float,
               width: float, contrast: float, rng: np.random.Generator,
               inside: np.ndarray) -> np.ndarray:
    """Thin tapering lines radiating from (cx, cy): spicules or distortion lines.

    Adds them to ``att`` and returns their relative strength (0..1) as a full-size map, from
    which a mask of the region they span can be taken.
    """
    rows, cols = att.shape
    strength = np.zeros((rows, cols), np.float32)
    reach = int(start + length + 3 * width) + 1
    x0, x1 = max(0, int(cx) - reach), min(cols, int(cx) + reach + 1)
    y0, y1 = max(0, int(cy) - reach), min(rows, int(cy) + reach + 1)
    if x0 >= x1 or y0 >= y1:
        return strength
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    acc = np.zeros_like(dx)
    for k in range(n):
        ang = 2 * np.pi * k / n + rng.uniform(-0.25, 0.25)
        ln = length * rng.uniform(0.6, 1.0)
        along = dx * np.cos(ang) + dy * np.sin(ang)
        across = -dx * np.sin(ang) + dy * np.cos(ang)
        t = np.clip((along - start) / ln, 0.0, 1.0)
        w = width * (1.0 - 0.7 * t)
        line = np.exp(-(across**2) / (2 * w * w)) * ((along > start) & (along < start + ln))
        acc = np.maximum(acc, line * (1.0 - 0.6 * t))
    acc *= inside[y0:y1, x0:x1]
    att[y0:y1, x0:x1] += contrast * acc
    strength[y0:y1, x0:x1] = acc
    return strength
