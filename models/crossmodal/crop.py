"""The mammography lesion crop the alignment model reads, shared by training and runtime.

Both sides must cut the same square from the same image, so the geometry lives in one place: the
mammography network's input (:func:`models.mammography.preprocess.prepare_image`: chest wall left,
256x208, percentile-scaled), a CROP x CROP window centred on the lesion, zero outside the image.
At 256 rows over a ~287 mm field of view one network pixel is ~1.1 mm, so the window is ~54 mm:
room for the largest phantom mass with its margin.
"""

from __future__ import annotations

import numpy as np

from models.mammography.preprocess import INPUT_SHAPE

CROP = 48


def lesion_centre(box: tuple[float, float, float, float], laterality: str, rows: int,
                  columns: int) -> tuple[float, float]:
    """A source-pixel box (x0, y0, x1, y1) -> its centre (row, column) in network pixels,
    mirrored like :func:`prepare_image` for a right breast."""
    x0, y0, x1, y1 = box
    r = (y0 + y1) / 2.0 * INPUT_SHAPE[0] / rows
    c = (x0 + x1) / 2.0 * INPUT_SHAPE[1] / columns
    if laterality == "R":
        c = INPUT_SHAPE[1] - c
    return r, c


def lesion_crop(net_image: np.ndarray, centre_rc: tuple[float, float], size: int = CROP) -> np.ndarray:
    """The size x size float32 window of a network-input image centred on ``centre_rc``."""
    img = np.asarray(net_image, dtype=np.float32)
    out = np.zeros((size, size), np.float32)
    r0 = int(round(centre_rc[0])) - size // 2
    c0 = int(round(centre_rc[1])) - size // 2
    rs, cs = max(r0, 0), max(c0, 0)
    re, ce = min(r0 + size, img.shape[0]), min(c0 + size, img.shape[1])
    if re > rs and ce > cs:
        out[rs - r0:re - r0, cs - c0:ce - c0] = img[rs:re, cs:ce]
    return out
