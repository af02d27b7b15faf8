"""Lesion box and mask on a B-mode image.

Breast masses that matter for BI-RADS are hypoechoic: after speckle is smoothed away they are the
darkest compact region below the skin. The automatic box is therefore the most compact dark
connected component of the smoothed image (not touching the skin line); a posterior acoustic
shadow, which is dark too but tall and attached to the bottom, is cut off by opening and by
preferring compact components. Inside a box (given or automatic) the mask is the dark region
found by Otsu's threshold on the smoothed crop.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops


def _smooth(image: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(image.astype(float), 3.0)


def automatic_box(image: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the most lesion-like dark region; raises when there is none."""
    s = _smooth(image)
    rows = s.shape[0]
    top = int(rows * 0.06)  # skip the skin line
    body = s[top:]
    thr = body.min() + 0.45 * (np.median(body) - body.min())
    dark = np.zeros_like(s, dtype=bool)
    dark[top:] = s[top:] < thr
    dark = ndimage.binary_opening(dark, structure=np.ones((5, 5)))
    lab = label(dark)
    best, best_score = None, -np.inf
    for r in regionprops(lab, intensity_image=s):
        if r.area < 40:
            continue
        contrast = np.median(body) - r.intensity_mean
        height = r.bbox[2] - r.bbox[0]
        touches_bottom = r.bbox[2] >= rows - 2
        score = contrast * np.sqrt(r.area) * r.solidity * (0.4 if touches_bottom else 1.0) / (1 + height / rows)
        if score > best_score:
            best, best_score = r, score
    if best is None:
        raise ValueError("no hypoechoic region found for an automatic lesion box; give a box")
    y0, x0, y1, x1 = best.bbox
    pad = 4
    return (float(max(x0 - pad, 0)), float(max(y0 - pad, 0)),
            float(min(x1 + pad, image.shape[1])), float(min(y1 + pad, image.shape[0])))


def lesion_mask(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Boolean mask (full image size) of the dark lesion inside ``box``."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = image.shape
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        raise ValueError(f"lesion box {box} is smaller than 4x4 pixels or outside the {w}x{h} image")
    crop = _smooth(image)[y0:y1, x0:x1]
    inside = crop < threshold_otsu(crop) if crop.max() > crop.min() else np.ones_like(crop, bool)
    lab = label(ndimage.binary_fill_holes(inside))
    if lab.max() == 0:
        inside = np.ones_like(crop, bool)
    else:
        # The lesion is the component nearest the box centre, weighted by size.
        cy, cx = (crop.shape[0] - 1) / 2, (crop.shape[1] - 1) / 2
        comp = max(regionprops(lab), key=lambda r: r.area / (1 + np.hypot(r.centroid[0] - cy, r.centroid[1] - cx)))
        inside = lab == comp.label
    mask = np.zeros(image.shape, bool)
    mask[y0:y1, x0:x1] = inside
    return mask


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
