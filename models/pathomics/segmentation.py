"""Nuclear segmentation of H&E tiles: colour deconvolution, threshold, distance transform, watershed.

Haematoxylin stains nuclei, so the haematoxylin optical density from Ruifrok-Johnston colour
deconvolution (``skimage.color.rgb2hed``) is the channel to threshold; touching nuclei are then
split by a watershed on the distance transform seeded at its local maxima (one per nucleus).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

MIN_H_THRESHOLD = 0.05  # haematoxylin OD below this is never nuclear (a tile with no nuclei)
MIN_NUCLEUS_UM2 = 8.0
NUCLEUS_MIN_RADIUS_UM = 2.0  # closest two nucleus centres may lie (peak separation)


def hematoxylin(tile: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density of an RGB uint8 tile (float, about 0..0.3 for our stains)."""
    if tile.ndim != 3 or tile.shape[2] < 3:
        raise ValueError(f"expected an RGB tile (H, W, 3), got shape {tile.shape}")
    return rgb2hed(tile[..., :3])[..., 0]


def segment_nuclei(tile: np.ndarray, um_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Label image of nuclei (0 = background) and the haematoxylin channel it was derived from."""
    if um_per_px <= 0:
        raise ValueError(f"um_per_px must be positive, got {um_per_px}")
    h = gaussian(hematoxylin(tile), sigma=max(0.5, 0.5 / um_per_px), preserve_range=True)
    try:
        thr = max(float(threshold_otsu(h)), MIN_H_THRESHOLD)
    except ValueError:
        thr = MIN_H_THRESHOLD
    mask = h > thr
    min_px = max(4, int(MIN_NUCLEUS_UM2 / (um_per_px**2)))
    mask = remove_small_objects(mask, max_size=min_px - 1)
    mask = ndi.binary_fill_holes(mask)
    if not mask.any():
        return np.zeros(mask.shape, np.int32), h
    dist = ndi.distance_transform_edt(mask)
    min_dist = max(2, int(round(NUCLEUS_MIN_RADIUS_UM / um_per_px)))
    coords = peak_local_max(dist, min_distance=min_dist, labels=mask.astype(np.int32), exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(coords.T)] = np.arange(1, len(coords) + 1)
    labels = watershed(-dist, markers, mask=mask)
    # Drop watershed fragments that fell below the minimum nucleus size.
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes < min_px)
    labels[np.isin(labels, small[small > 0])] = 0
    return labels.astype(np.int32), h
