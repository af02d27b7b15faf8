"""What the PDF says about mammograms as archives hold them (used by :mod:`reports.pdf`).

Per image: where laterality and view came from, whether it was read with the other breast's
image or on its own, and the breast region lesions were looked for in (outlined in cyan on the
overlay). Per study: the instances not analysed and why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.transform import resize

from cds.contracts.domain import MammographyResult, MammoImageFinding

SOURCE_TEXT = {"attribute": "DICOM attribute", "patient_orientation": "Patient Orientation",
               "text": "free-text description", "pixels": "image pixels (chest-wall side)"}
CYAN = (0, 200, 255)


def geometry_text(img: MammoImageFinding) -> str:
    lat = SOURCE_TEXT.get(img.laterality_source, "unknown")
    view = SOURCE_TEXT.get(img.view_source, "unknown")
    paired = ("read with the other breast's image of the same view" if img.paired
              else "no image of the other breast in this view: read on its own")
    region = "; lesions looked for only inside the breast (cyan outline)" if img.breast_mask else ""
    return f"Laterality from {lat}, view from {view}; {paired}{region}."


def outline_breast(rgb: np.ndarray, img: MammoImageFinding, work_dir: Path) -> np.ndarray:
    """``rgb`` (the image at report size) with the breast mask's border drawn in cyan."""
    if img.breast_mask is None or not (Path(work_dir) / img.breast_mask.path).exists():
        return rgb
    from scipy import ndimage

    mask = img.breast_mask.load(work_dir).astype(np.float32)
    small = resize(mask, rgb.shape[:2], order=0, preserve_range=True, anti_aliasing=False) >= 0.5
    border = small & ~ndimage.binary_erosion(small, iterations=2)
    out = rgb.copy()
    out[border] = CYAN
    return out


def not_analysed_rows(result: MammographyResult) -> list[dict[str, str]]:
    return [{"uid": n.sop_instance_uid, "reason": n.reason, "detail": n.detail} for n in result.not_analysed]
