"""Paired mammography-pathology phantoms: one synthetic patient, two modalities, shared latent factors.

The cross-modal alignment model (``models.crossmodal``) learns from the same patient's lesion crop
and tumour patches, with no pixel correspondence between them. For that to be learnable at all,
what the pathology shows must follow from the same hidden truth as what the mammogram shows. A
patient here is a set of latent factors, drawn first, from which each modality is rendered with its
own random stream:

Latent factors (:func:`draw_factors`)
    * ``label``: ``normal`` (no lesion, no pathology) or, for a lesion-bearing patient, ``benign`` /
      ``in_situ`` / ``invasive`` (the mammography network's classes);
    * ``grade`` 1-3: benign lesions are grade 1 (no pleomorphism to grade); in situ and invasive draw
      1-3 uniformly;
    * ``cellularity`` in [0, 1] (tumour cell density): benign U(0.1, 0.5), in situ U(0.3, 0.8),
      invasive U(0.5, 1.0), so cellularity carries class information in both modalities;
    * ``er_positive``: P(ER+) = 0.95 benign; for malignant 0.85 / 0.70 / 0.40 at grade 1 / 2 / 3.
      Oestrogen-receptor status is invisible on H&E and on a mammogram; it enters both images only
      through its correlation with grade (which is how it is associated in real tumours). It is
      recorded for downstream use (receptor-aware models), not drawn.

How each factor shows (mammography: :func:`render_mammo`; pathology: :func:`render_patch`)
    ============ ===================================== =========================================
    factor       mammography (one view, 512x416)       pathology (48x48 RGB, ~2 um per pixel)
    ============ ===================================== =========================================
    class        lesion type (benign: circumscribed    architecture: benign = open ducts with a
                 mass 70 % / asymmetry; in situ:       lumen and one ring of small epithelial
                 calcifications; invasive: spiculated  nuclei; in situ (DCIS) = a duct filled
                 mass 70 % / architectural distortion) with atypical cells, myoepithelial rim
                 and so the margin                     kept; invasive = nests and cords of
                                                       tumour cells scattered in stroma, no rim
    grade        aggressiveness = (grade-1)/3 + U(0,   nuclear size and pleomorphism (size spread,
                 1/3): number and length of spicules,  darker chromatin) grow with grade; grade 3
                 calcification count and pleomorphism  DCIS gets central comedo necrosis
    cellularity  lesion density: the lesion's added    nuclear density (nuclei per area of
                 attenuation is scaled by              tumour) = 0.35 + 0.65 * cellularity of the
                 0.6 + 0.6 * cellularity               maximum packing
    ============ ===================================== =========================================

The mammography view reuses the generator's anatomy, lesion drawers and vendor acquisition chain
(:mod:`synthetic.phantoms.mammo_render`, :mod:`~synthetic.phantoms.mammo_lesions`); only the
lesion-density scaling is new, so it is done here rather than by changing their signatures. The
crop is :func:`models.crossmodal.crop.lesion_crop` of :func:`models.mammography.preprocess.prepare_image`
around the lesion mask's box centre; a normal patient's crop is centred at a random point inside
the breast. Pathology patches reuse the slide phantom's stamps, Poisson placement, stain-matrix
jitter and Beer-Lambert rendering (:mod:`synthetic.phantoms.slide_tissue`), at 48x48 so one
backbone reads both modalities at the same size. Each patient's patches share one slide look
(stain batch), so the patches of a patient are alike beyond their factors, as real ones are.

Splits are by patient (:func:`split_of`): the vendor and the split are fixed by the patient index,
so every vendor has train, calibration and test patients and leave-one-vendor-out works.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.crossmodal.crop import lesion_centre, lesion_crop
from models.mammography.preprocess import prepare_image
from synthetic.phantoms.mammo_anatomy import _breast_geometry, _dome, power_law_field
from synthetic.phantoms.mammo_lesions import _add_lesion
from synthetic.phantoms.mammo_render import _acquire
from synthetic.phantoms.mammo_spec import DENSITY_FRACTION, VENDORS, LesionSpec
from synthetic.phantoms.slide_tissue import _paint, _poisson_points, _slide_look, _stamps, _to_rgb

LABELS: tuple[str, ...] = ("normal", "benign", "in_situ", "invasive")  # = MAMMO_CLASSES
PATCH_CLASSES: tuple[str, ...] = ("benign", "dcis", "invasive")
PATCH = 48
SPLITS: tuple[str, ...] = ("train", "calibration", "test")
_KINDS = {"benign": (("circumscribed_mass", "asymmetry"), (0.7, 0.3)),
          "in_situ": (("calcifications",), (1.0,)),
          "invasive": (("spiculated_mass", "architectural_distortion"), (0.7, 0.3))}
_CELLULARITY = {"benign": (0.1, 0.5), "in_situ": (0.3, 0.8), "invasive": (0.5, 1.0)}
_ER_POSITIVE = {1: 0.85, 2: 0.70, 3: 0.40}


@dataclass(frozen=True)
class Factors:
    """A patient's latent truth, shared by both modalities."""

    label: str
    grade: int  # 0 for normal
    cellularity: float  # 0 for normal
    er_positive: bool


@dataclass(frozen=True)
class PairedPatient:
    """One rendered patient: the mammography crop and, for a lesion, its tumour patches."""

    factors: Factors
    vendor: str
    crop: np.ndarray  # float32 (48, 48), lesion_crop of the network input
    patches: np.ndarray  # uint8 (k, 48, 48, 3); (0, 48, 48, 3) for a normal patient
    lesion_kind: str  # "" for normal

    @property
    def patch_label(self) -> int:
        """Index into :data:`PATCH_CLASSES` (-1: no pathology)."""
        return LABELS.index(self.factors.label) - 1


def draw_factors(rng: np.random.Generator, label: str) -> Factors:
    """The latent factors of a patient of class ``label`` (rules in the module docstring)."""
    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {LABELS}")
    if label == "normal":
        return Factors("normal", 0, 0.0, bool(rng.random() < 0.8))
    grade = 1 if label == "benign" else int(rng.integers(1, 4))
    cell = float(rng.uniform(*_CELLULARITY[label]))
    p_er = 0.95 if label == "benign" else _ER_POSITIVE[grade]
    return Factors(label, grade, cell, bool(rng.random() < p_er))


def render_mammo(rng: np.random.Generator, f: Factors, vendor: str, rows: int = 512,
                 cols: int = 416) -> tuple[np.ndarray, str]:
    """One view of the patient's lesion breast (or a normal breast) -> (48x48 crop, lesion kind).

    Mirrors :func:`synthetic.phantoms.mammo_render.render_view` for one unpaired image, plus the
    cellularity -> lesion-density rule: the lesion's added attenuation is rescaled.
    """
    scale = rows / 1024.0
    view = str(rng.choice(["CC", "MLO"]))
    laterality = str(rng.choice(["L", "R"]))
    density = str(rng.choice(list(DENSITY_FRACTION)))
    r, pectoral, a = _breast_geometry(rng, view, rows, cols, jitter=None)
    breast = r < 1.0
    att = (0.30 + 0.22 * _dome(np.minimum(r, 1.0), 0.35)) * breast
    beta = rng.uniform(2.8, 3.2)
    field = power_law_field(rng, (rows, cols), beta)
    q = np.quantile(field[breast], 1.0 - DENSITY_FRACTION[density])
    gland = 1.0 / (1.0 + np.exp(-(field - q) / 0.35)) * np.exp(-((r / 0.85) ** 4))
    fine = power_law_field(rng, (rows, cols), 2.0)
    att += (0.26 * gland + 0.025 * fine * (0.3 + gland)) * breast
    att = np.where(pectoral, 0.78 + 0.03 * field, att).astype(np.float32)
    kind = ""
    if f.label != "normal":
        kinds, probs = _KINDS[f.label]
        kind = str(rng.choice(kinds, p=probs))
        size_range = {"calcifications": (0.035, 0.06), "asymmetry": (0.05, 0.08),
                      "architectural_distortion": (0.04, 0.06)}.get(kind, (0.035, 0.065))
        ag = float(np.clip((f.grade - 1) / 3.0 + rng.uniform(0.0, 1.0 / 3.0), 0.0, 1.0))
        spec = LesionSpec(kind=kind, aggressiveness=ag, depth=float(rng.uniform(0.3, 0.7)),
                          size=float(rng.uniform(*size_range)), seed=int(rng.integers(0, 2**31 - 1)))
        before = att.copy()
        mask = _add_lesion(np.random.default_rng(spec.seed), spec, att, r, pectoral, a, scale)
        att = (before + (0.6 + 0.6 * f.cellularity) * (att - before)).astype(np.float32)
        ys, xs = np.nonzero(mask & breast)
        if len(ys) == 0:  # a lesion clipped away entirely: centre on where it was placed
            ys, xs = np.nonzero(mask)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    else:
        inner = np.argwhere((r < 0.7) & ~pectoral)
        y, x = inner[rng.integers(len(inner))]
        box = (float(x), float(y), float(x + 1), float(y + 1))
    pixels = _acquire(rng, att * VENDORS[vendor].contrast, breast | pectoral, VENDORS[vendor], scale)
    # the geometry is drawn chest-wall-left; a right breast is stored mirrored, as render_view does
    if laterality == "R":
        pixels = pixels[:, ::-1]
        box = (cols - box[2], box[1], cols - box[0], box[3])
    net = prepare_image(pixels, laterality)
    return lesion_crop(net, lesion_centre(box, laterality, rows, cols)), kind


def _nuclei(rng: np.random.Generator, region: np.ndarray, per_cell: float, radius: float,
            spread: float, h: tuple[float, float], H: np.ndarray, cell: int = 6) -> int:
    """Paint Poisson-placed nuclei (``per_cell`` per cell x cell px) inside ``region``; returns count."""
    n_c = PATCH // cell
    dens = region.reshape(n_c, cell, n_c, cell).mean(axis=(1, 3)).astype(np.float32)
    pts = _poisson_points(rng, dens, cell, mean_per_cell=per_cell)
    pts = pts[region[np.clip(pts[:, 0], 0, PATCH - 1), np.clip(pts[:, 1], 0, PATCH - 1)]]
    sizes = [(radius * rng.uniform(1.0 - spread, 1.0 + spread),
              radius * rng.uniform(0.7 - spread / 2, 1.0)) for _ in range(6)]
    st = _stamps([(max(a, 0.8), max(b, 0.7)) for a, b in sizes], list(rng.uniform(0, np.pi, 6)))
    _paint(H, pts, rng.integers(0, len(st), len(pts)), st, rng.uniform(*h, len(pts)).astype(np.float32))
    return len(pts)


def _disc(cy: float, cx: float, rad: float) -> np.ndarray:
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    return np.hypot(yy - cy, xx - cx) <= rad


def render_patch(rng: np.random.Generator, f: Factors, look_seed: int) -> np.ndarray:
    """One 48x48 RGB H&E-like patch of the patient's lesion (rules in the module docstring)."""
    if f.label == "normal":
        raise ValueError("a normal patient has no pathology")
    look = _slide_look(look_seed)
    E = (0.34 + 0.06 * rng.standard_normal((PATCH, PATCH))).astype(np.float32)
    H = np.full((PATCH, PATCH), 0.03, np.float32)
    stroma_nuc = np.ones((PATCH, PATCH), bool)
    pleo = 0.15 + 0.15 * f.grade  # size spread of the tumour nuclei
    rad = 1.4 + 0.35 * f.grade
    dark = (0.55 + 0.08 * f.grade, 0.75 + 0.08 * f.grade)
    pack = 0.35 + 0.65 * f.cellularity
    if f.label == "benign":
        for _ in range(int(rng.integers(1, 3))):
            cy, cx, rr = rng.uniform(10, 38), rng.uniform(10, 38), rng.uniform(8, 13)
            ring = _disc(cy, cx, rr) & ~_disc(cy, cx, rr - 2.5)
            E[_disc(cy, cx, rr - 2.5)] = 0.05  # open lumen
            stroma_nuc &= ~_disc(cy, cx, rr)
            H[ring] = 0.12
            _nuclei(rng, ring, 5.0 * pack, 1.3, 0.1, (0.55, 0.7), H)
    elif f.label == "in_situ":
        cy, cx, rr = rng.uniform(18, 30), rng.uniform(18, 30), rng.uniform(14, 20)
        duct = _disc(cy, cx, rr - 1.5)
        stroma_nuc &= ~_disc(cy, cx, rr)
        E[duct] = 0.22
        H[_disc(cy, cx, rr) & ~duct] = 0.6  # myoepithelial rim
        filled = duct & ~_disc(cy, cx, 0.35 * rr) if f.grade == 3 else duct
        if f.grade == 3:
            E[_disc(cy, cx, 0.35 * rr)] = 0.5  # comedo necrosis: pale pink debris
        H[duct] = 0.1
        _nuclei(rng, filled, 1.4 * pack, rad, pleo, dark, H)
    else:
        nests = np.zeros((PATCH, PATCH), bool)
        for _ in range(int(rng.integers(5, 9))):
            nests |= _disc(rng.uniform(0, PATCH), rng.uniform(0, PATCH), rng.uniform(4, 9))
        stroma_nuc &= ~nests
        E[nests] = 0.26
        H[nests] = 0.1
        _nuclei(rng, nests, 2.2 * pack, rad, pleo, dark, H)
    _nuclei(rng, stroma_nuc, 0.12, 1.0, 0.2, (0.45, 0.6), H)  # sparse fibroblasts
    return _to_rgb(rng, H, np.clip(E, 0.0, 1.0), look)


def split_of(i: int) -> str:
    """Patient ``i``'s split: 2 of every 4 train, 1 calibrates, 1 tests (independent of vendor)."""
    k = (i // len(VENDORS)) % 4
    return SPLITS[0] if k < 2 else SPLITS[k - 1]


def patient(i: int, seed: int, n_patches: int = 4, rows: int = 512, cols: int = 416) -> PairedPatient:
    """Patient ``i`` of data set ``seed``: the vendor cycles fastest, then the class (1 in 4 normal)."""
    vendors = sorted(VENDORS)
    vendor = vendors[i % len(vendors)]
    label = LABELS[(i // (4 * len(vendors))) % len(LABELS)]
    rng = np.random.default_rng([seed, i])
    f = draw_factors(rng, label)
    crop, kind = render_mammo(np.random.default_rng([seed, i, 1]), f, vendor, rows, cols)
    if label == "normal":
        patches = np.zeros((0, PATCH, PATCH, 3), np.uint8)
    else:
        prng = np.random.default_rng([seed, i, 2])
        look = int(prng.integers(0, 2**31 - 1))
        patches = np.stack([render_patch(prng, f, look) for _ in range(n_patches)])
    return PairedPatient(factors=f, vendor=vendor, crop=crop, patches=patches, lesion_kind=kind)


def paired_arrays(n_patients: int, seed: int = 0, n_patches: int = 4) -> dict[str, np.ndarray]:
    """Render ``n_patients`` into flat arrays (what training caches as .npz).

    Keys: ``crops`` (N,48,48) f32, ``labels`` (N,) mammography class, ``patches`` (N,k,48,48,3)
    uint8 (zeros for normal), ``patch_labels`` (N,) (-1 normal), ``vendors`` (N,) str, ``splits``
    (N,) str, ``grades``, ``cellularity``, ``er_positive``, ``lesion_kinds``, ``patient_ids``.
    """
    rows = [patient(i, seed, n_patches) for i in range(n_patients)]
    patches = np.zeros((n_patients, n_patches, PATCH, PATCH, 3), np.uint8)
    for j, p in enumerate(rows):
        if len(p.patches):
            patches[j] = p.patches
    return {
        "crops": np.stack([p.crop for p in rows]).astype(np.float32),
        "labels": np.array([LABELS.index(p.factors.label) for p in rows], np.int64),
        "patches": patches,
        "patch_labels": np.array([p.patch_label for p in rows], np.int64),
        "vendors": np.array([p.vendor for p in rows]),
        "splits": np.array([split_of(i) for i in range(n_patients)]),
        "grades": np.array([p.factors.grade for p in rows], np.int64),
        "cellularity": np.array([p.factors.cellularity for p in rows], np.float32),
        "er_positive": np.array([p.factors.er_positive for p in rows]),
        "lesion_kinds": np.array([p.lesion_kind for p in rows]),
        "patient_ids": np.array([f"s{seed}-p{i:05d}" for i in range(n_patients)]),
    }
