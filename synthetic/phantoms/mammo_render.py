"""Mammography phantom rendering: a view's anatomy, texture, lesion and acquisition chain, and a
4-view exam drawn from one seed (in memory, no DICOM).

See :mod:`synthetic.phantoms.mammography` for what is drawn and how exams are labelled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit

from cds.contracts.domain import MAMMO_CLASSES
from synthetic.phantoms.mammo_anatomy import _breast_geometry, _dome, power_law_field
from synthetic.phantoms.mammo_lesions import _add_lesion
from synthetic.phantoms.mammo_spec import (
    BILATERAL_RHO,
    DENSITY_FRACTION,
    LABEL_FOR_LESION,
    LESION_TYPES,
    LESIONS_FOR_LABEL,
    VENDORS,
    VIEWS,
    LesionSpec,
    RenderedExam,
    RenderedView,
    Vendor,
)


def render_view(rng: np.random.Generator, rows: int, cols: int, laterality: str, view: str,
                density: str, vendor: Vendor, lesion: LesionSpec | None,
                anatomy_seed: int | None = None) -> RenderedView:
    """Render one view: anatomy, texture, optional lesion, then the vendor's acquisition chain.

    ``anatomy_seed`` is shared by the left and right images of one view: they get the same breast
    shape (jittered by positioning) and glandular fields that correlate at :data:`BILATERAL_RHO`,
    so the two breasts look alike, as a woman's do, and an asymmetry is a difference between
    them. ``None`` draws everything from ``rng`` (an unpaired image).
    """
    scale = rows / 1024.0
    shared = rng if anatomy_seed is None else np.random.default_rng(anatomy_seed)
    r, pectoral, a = _breast_geometry(shared, view, rows, cols,
                                      jitter=None if anatomy_seed is None else rng)
    breast = r < 1.0
    thickness = _dome(np.minimum(r, 1.0), 0.35)
    att = (0.30 + 0.22 * thickness) * breast

    beta = shared.uniform(2.8, 3.2)
    field = power_law_field(shared, (rows, cols), beta)
    if anatomy_seed is not None:
        own = power_law_field(rng, (rows, cols), beta)
        field = BILATERAL_RHO * field + np.sqrt(1.0 - BILATERAL_RHO ** 2) * own
    envelope = np.exp(-((r / 0.85) ** 4))
    q = np.quantile(field[breast], 1.0 - DENSITY_FRACTION[density])
    gland = expit((field - q) / 0.35) * envelope
    fine = power_law_field(rng, (rows, cols), 2.0)
    att += (0.26 * gland + 0.025 * fine * (0.3 + gland)) * breast

    muscle = 0.78 + 0.03 * field
    att = np.where(pectoral, muscle, att).astype(np.float32)

    mask = np.zeros((rows, cols), np.uint8)
    if lesion is not None:
        lrng = np.random.default_rng([lesion.seed, 0 if view == "CC" else 1])
        mask = _add_lesion(lrng, lesion, att, r, pectoral, a, scale)
        mask &= breast.astype(np.uint8)

    pixels = _acquire(rng, att * vendor.contrast, breast | pectoral, vendor, scale)
    if laterality == "R":
        pixels = pixels[:, ::-1]
        mask = mask[:, ::-1]
    return RenderedView(
        laterality=laterality,
        view=view,
        pixels=np.ascontiguousarray(pixels),
        mask=np.ascontiguousarray(mask),
        label=lesion.label if lesion is not None else "normal",
        grade=lesion.grade if lesion is not None else 0,
        lesion_type=lesion.kind if lesion is not None else None,
        vendor=vendor,
    )


def _acquire(rng: np.random.Generator, att: np.ndarray, body: np.ndarray, vendor: Vendor,
             scale: float) -> np.ndarray:
    """Detector blur, heel effect, display gamma, quantum noise, quantisation to BitsStored."""
    rows, cols = att.shape
    sig = ndimage.gaussian_filter(att, vendor.blur * scale) if vendor.blur * scale > 0.3 else att
    sig = np.clip(sig, 0.0, 1.4) / 1.4
    heel = 1.0 - vendor.heel * np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]
    sig = sig * heel
    sig = vendor.offset + (1.0 - vendor.offset - 0.05) * np.power(sig, vendor.gamma)
    noise_sd = vendor.noise * scale * np.sqrt(np.clip(sig, 0.02, 1.0) / 0.5)
    sig = sig + rng.standard_normal((rows, cols), dtype=np.float32) * noise_sd
    full = (1 << vendor.bits_stored) - 1
    return np.clip(np.round(sig * full), 0, full).astype(np.uint16)


def _choose_label(rng: np.random.Generator, force_label: str | None) -> str:
    if force_label is not None:
        if force_label not in MAMMO_CLASSES:
            raise ValueError(f"force_label {force_label!r} is not one of {MAMMO_CLASSES}")
        return force_label
    return str(rng.choice(MAMMO_CLASSES))


def synthesize_exam(seed: int, rows: int = 1024, columns: int = 832, vendor: str | None = None,
                    force_label: str | None = None, force_lesion: str | None = None) -> RenderedExam:
    """Render a 4-view exam in memory (no DICOM): what training and :func:`generate_exam` share."""
    rng = np.random.default_rng(seed)
    if vendor is None:
        vendor = str(rng.choice(sorted(VENDORS)))
    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {sorted(VENDORS)}")
    vend = VENDORS[vendor]
    density = str(rng.choice(list(DENSITY_FRACTION)))
    if force_lesion is not None:
        if force_lesion not in LESION_TYPES:
            raise ValueError(f"unknown lesion type {force_lesion!r}; expected one of {LESION_TYPES}")
        label = LABEL_FOR_LESION[force_lesion]
    else:
        label = _choose_label(rng, force_label)
    lesion = None
    side = None
    if label != "normal":
        kind = force_lesion or str(rng.choice(LESIONS_FOR_LABEL[label]))
        side = str(rng.choice(["L", "R"]))
        size_range = {"calcifications": (0.035, 0.06), "asymmetry": (0.05, 0.08),
                      "architectural_distortion": (0.04, 0.06)}.get(kind, (0.035, 0.065))
        lesion = LesionSpec(
            kind=kind,
            aggressiveness=float(rng.uniform(0.0, 1.0)),
            depth=float(rng.uniform(0.3, 0.7)),
            size=float(rng.uniform(*size_range)),
            seed=int(rng.integers(0, 2**31 - 1)),
        )
    anatomy = {v: int(rng.integers(0, 2**31 - 1)) for v in ("CC", "MLO")}
    views = [
        render_view(rng, rows, columns, lat, view, density, vend, lesion if lat == side else None,
                    anatomy_seed=anatomy[view])
        for lat, view in VIEWS
    ]
    return RenderedExam(vendor=vend, density=density, exam_label=label, lesion_laterality=side,
                        views=views)
