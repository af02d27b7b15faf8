"""Similar reference pathology beside a mammography lesion, as the PDF and the case page show it.

The patches come from the cross-modal model's reference bank, built from synthetic training
slides: they show what similar findings looked like there, never this patient's tissue. Every
place that shows them uses :data:`CAPTION` word for word (the SR writer too), so no reader can
take them for the patient's pathology.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.transform import resize

from cds.contracts.domain import MammoImageFinding, SimilarPathology

log = logging.getLogger(__name__)

CAPTION = "Similar examples from the synthetic reference bank - not this patient's pathology"
SHOWN_SIDE = 96  # pixels: bank thumbnails are <= 64 px; shown a little larger, never as big as a finding


def shown_patch(patch: np.ndarray) -> np.ndarray:
    """An RGB bank patch enlarged to SHOWN_SIDE (nearest neighbour: the pixels stay honest)."""
    rgb = np.asarray(patch)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    return resize(rgb.astype(np.float32), (SHOWN_SIDE, SHOWN_SIDE, 3), order=0, preserve_range=True)


def similar_rows(img: MammoImageFinding, similar: list[SimilarPathology], work_dir: Path,
                 encode: Callable[[np.ndarray], str]) -> list[dict]:
    """Per lesion of ``img`` that has examples: its id, the bank, the model and each example's
    patch (``encode``: RGB -> data URI, the PDF's encoder), class and cosine similarity, most
    similar first."""
    ids = {les.tracking_uid: les.tracking_id for les in img.lesions}
    rows = []
    for sp in similar:
        if sp.sop_instance_uid != img.sop_instance_uid or not sp.examples:
            continue
        examples = []
        for e in sp.examples:
            try:
                uri = encode(shown_patch(e.image.load(work_dir)))
            except OSError as exc:  # the patch file is gone (pruned work folder): still list the example
                log.warning("report: similar-example patch %s of image %s unreadable (%s); listed without image",
                            e.bank_id, img.sop_instance_uid, type(exc).__name__)
                uri = ""
            examples.append({"image": uri, "label": e.label, "similarity": f"{e.similarity:.2f}",
                             "bank_id": e.bank_id})
        rows.append({"lesion": ids.get(sp.lesion_tracking_uid, sp.lesion_tracking_uid), "bank": sp.bank,
                     "model": f"{sp.model.name} {sp.model.version}", "caption": CAPTION, "examples": examples})
    return rows
