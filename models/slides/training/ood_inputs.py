"""Out-of-domain slides for the slide model, and how often its domain flag fires on them.

Each kind is written by the phantom slide writer (same DICOM pyramid, JPEG tiles, 0.5 um/px)
with the rendered tissue replaced, so that only the content is out of domain:

* ``mammogram_as_slide`` / ``ultrasound_as_slide``: other phantom families, tinted with an
  H&E-like colour map so that tissue detection still finds "tissue";
* ``ihc_like``: the lymph-node phantom recoloured brown/blue (a DAB-like stain, not H&E);
* ``inverted``: the lymph-node phantom with inverted colours on the tissue.

:func:`flag_rates` analyses each with the shipped runtime and counts flags per kind.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
from skimage.transform import resize

from cds.contracts.domain import PatientRef

PATIENT = PatientRef(patient_id="OODSLIDE", issuer="phantom")
KINDS = ("mammogram_as_slide", "ultrasound_as_slide", "ihc_like", "inverted")


def _tint(gray01: np.ndarray) -> np.ndarray:
    """Grey [0,1] (1 = dense) -> H&E-like RGB uint8 on a white background."""
    g = np.clip(gray01, 0, 1)[..., None]
    white = np.array([245.0, 245.0, 245.0])
    stain = np.array([150.0, 60.0, 140.0])
    return (white * (1 - g) + stain * g).astype(np.uint8)


def _other_family(kind: str, seed: int, size: int) -> np.ndarray:
    if kind == "mammogram_as_slide":
        from synthetic.phantoms.mammography import synthesize_exam

        px = synthesize_exam(seed, 512, 416, vendor="alpha").views[0].pixels.astype(np.float64)
    else:
        import tempfile

        import pydicom

        from synthetic.phantoms.ultrasound import generate_ultrasound

        with tempfile.TemporaryDirectory() as tmp:
            px = pydicom.dcmread(generate_ultrasound(Path(tmp), seed, PATIENT).path).pixel_array.astype(np.float64)
        if px.ndim == 3:
            px = px.mean(axis=-1)
    px = resize(px, (size, size), order=1, preserve_range=True)
    lo, hi = np.percentile(px, [2, 99.5])
    return _tint((px - lo) / max(hi - lo, 1e-6))


def _recolour(kind: str, rgb: np.ndarray) -> np.ndarray:
    a = rgb.astype(np.float64)
    tissue = a.mean(axis=-1, keepdims=True) < 220
    if kind == "inverted":
        return np.where(tissue, 255 - a, a).astype(np.uint8)
    dark = 1 - a.mean(axis=-1, keepdims=True) / 255.0  # stain amount
    brown, blue = np.array([120.0, 70.0, 30.0]), np.array([90.0, 110.0, 200.0])
    out = 245 - dark * (245 - np.where(dark > 0.45, brown, blue))
    return np.where(tissue, out, a).clip(0, 255).astype(np.uint8)


def write_ood_slide(out_dir: Path, kind: str, seed: int, size: int = 2048):  # noqa: ANN201 (SlideTruth)
    """One slide of ``kind`` written as a DICOM pyramid under ``out_dir``."""
    from synthetic.phantoms import slides as slide_mod

    original = slide_mod.render_tissue

    def render(s: int, n: int, metastasis: bool, occult: bool):  # noqa: ANN202
        rgb, tumour, diameters = original(s, n, metastasis, occult)
        if kind in ("mammogram_as_slide", "ultrasound_as_slide"):
            rgb = _other_family(kind, s, n)
        else:
            rgb = _recolour(kind, rgb)
        return rgb, tumour, diameters

    with mock.patch.object(slide_mod, "render_tissue", render):
        return slide_mod.generate_slide(Path(out_dir) / f"{kind}_{seed}", seed, PATIENT, metastasis=False, size=size)


def flag_rates(model, out_dir: Path, n_per_kind: int = 3, size: int = 2048) -> dict[str, dict]:  # noqa: ANN001
    """Per kind: slides, flagged, refused (no tissue found), and the reasons."""
    from models.slides.reader import SlideReadError

    out: dict[str, dict] = {}
    for kind in KINDS:
        flagged, refused, reasons = 0, 0, []
        for k in range(n_per_kind):
            truth = write_ood_slide(out_dir, kind, 70_000 + k, size)
            try:
                result, _ = model.analyze_series(truth.level_paths, Path(out_dir) / "work")
            except SlideReadError as exc:
                refused += 1
                reasons.append([f"refused: {exc}"])
                continue
            flagged += int(result.domain is not None and not result.domain.in_domain)
            reasons.append(result.domain.reasons if result.domain else [])
        out[kind] = {"n": n_per_kind, "flagged": flagged, "refused": refused, "reasons": reasons}
    return out
