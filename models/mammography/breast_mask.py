"""Where the breast is: lesions are looked for only there (numpy/scipy/scikit-image, no torch).

Burned-in film labels, markers and rulers lie outside the breast; a lesion outlined on them
would be nonsense. :func:`breast_mask` segments the breast on a prepared image (network
geometry, intensities percentile-scaled, tissue bright): a threshold between the dark
background and tissue (half of Otsu's threshold, so fatty tissue near the skin line stays in
even when Otsu splits fat from dense tissue), a small opening to detach labels touching the
breast through noise, the largest connected component, holes filled, and a two-pixel margin
(lesions at the skin line are kept). :func:`chest_wall_right` reads the chest-wall side from the
mask: the breast is cut by the detector edge at the chest wall, so that border column holds far
more breast than the other.
"""

from __future__ import annotations

import numpy as np


def breast_mask(prepared: np.ndarray) -> np.ndarray:
    """Boolean mask (same shape as ``prepared``) of the breast: its largest bright component."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    a = np.asarray(prepared, np.float32)
    if float(a.max() - a.min()) < 1e-6:
        return np.ones(a.shape, bool)
    lo = float(np.percentile(a, 1.0))
    t = lo + 0.5 * (float(threshold_otsu(a)) - lo)
    fg = ndimage.binary_opening(a > t, structure=np.ones((3, 3), bool))
    lab, n = ndimage.label(fg)
    if n == 0:
        return np.ones(a.shape, bool)
    sizes = np.bincount(lab.ravel())[1:]
    mask = lab == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    return ndimage.binary_dilation(mask, iterations=2)


def chest_wall_right(mask: np.ndarray, band: float = 0.05) -> bool | None:
    """True when the chest wall is on the image's right, False on the left, None if unclear."""
    cols = max(1, int(round(mask.shape[1] * band)))
    left, right = float(mask[:, :cols].mean()), float(mask[:, -cols:].mean())
    if max(left, right) < 0.05 or abs(left - right) < 0.05:
        return None
    return right > left
