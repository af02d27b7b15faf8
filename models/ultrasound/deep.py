"""Deep features of an ultrasound lesion: crop preparation (numpy) and the ONNX encoder (runtime).

The crop takes the lesion box widened by a quarter on each side and extended below by three
quarters of its height, because posterior acoustic features (shadowing, enhancement) lie under
the lesion and carry much of its BI-RADS meaning. The crop is resized to 64x64 and scaled to
[0, 1]. The encoder is a small CNN trained in :mod:`models.ultrasound.training.train`; its 32-d
penultimate layer is the feature vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.transform import resize

CROP_SIZE = 64
FEATURE_DIM = 32


def lesion_crop(image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """(64, 64) float32 crop around the lesion and its posterior region, scaled to [0, 1]."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        raise ValueError(f"lesion box {box} has no area")
    cx0, cx1 = int(max(x0 - 0.25 * w, 0)), int(min(x1 + 0.25 * w, image.shape[1]))
    cy0, cy1 = int(max(y0 - 0.25 * h, 0)), int(min(y1 + 0.75 * h, image.shape[0]))
    crop = image[cy0:cy1, cx0:cx1].astype(np.float32)
    scale = 255.0 if image.dtype == np.uint8 else max(float(image.max()), 1.0)
    return resize(crop / scale, (CROP_SIZE, CROP_SIZE), anti_aliasing=True).astype(np.float32)


class DeepEncoder:
    """onnxruntime session of the exported encoder: (N, 1, 64, 64) -> (N, 32)."""

    def __init__(self, onnx_path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def features(self, crop: np.ndarray) -> list[float]:
        (out,) = self.session.run(["features"], {"image": crop[None, None].astype(np.float32)})
        return out[0].astype(float).tolist()
