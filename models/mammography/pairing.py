"""Bilateral pairing: each mammogram is read with the contralateral image of the same view.

Used by the runtime (:func:`models.mammography.runtime.exam_input`) and by training data
(:mod:`models.mammography.training.data`), so both build the network's two input channels alike.
"""

from __future__ import annotations

import numpy as np


def bilateral_input(images: np.ndarray, contralateral: np.ndarray) -> np.ndarray:
    """The network input (n, 2, H, W): each prepared image with its contralateral image.

    Both are in the canonical orientation (chest wall left; :func:`prepare_image` mirrors R
    images), so the two breasts of a view lie roughly on top of each other and a density present
    in one and absent in the other, a focal asymmetry, is a difference between the channels.
    Where an exam lacks the other breast's view, the image is its own contralateral (training
    shows the network such pairs too).
    """
    return np.stack([images, contralateral], axis=1).astype(np.float32)


def contralateral_rows(keys: list[tuple[str, str, str]]) -> np.ndarray:
    """For rows keyed (study, view, laterality): the row of the other breast's same view, else self.

    An image whose view is unknown is its own pair: pairing it with any other-side image could put
    a CC beside an MLO, which the network would read as an asymmetry."""
    first: dict[tuple[str, str, str], int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    other = {"L": "R", "R": "L"}
    return np.array([first.get((st, vw, other.get(lat, "")), i) if vw else i
                     for i, (st, vw, lat) in enumerate(keys)], np.int64)
