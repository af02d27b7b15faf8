"""Seeded synthetic 4-view mammography exams written as Digital Mammography X-Ray DICOM.

No real mammograms can be obtained here, so the mammography model trains and is tested on these
phantoms. Everything is drawn from one ``numpy.random.Generator`` seeded by the caller, so the same
seed gives the same pixels, masks, labels and UIDs.

Anatomy (canonical orientation: chest wall at column 0, nipple to the right; right-breast images
are mirrored so that, as in clinical hanging, the chest wall of an R image is on the right):

* breast outline: a lobulated half-ellipse from the chest wall; intensity falls off towards the
  skin line (compressed thickness);
* MLO views add the pectoral muscle, a bright triangle in the upper chest-wall corner, and an
  outline that reaches the top edge (axillary tail);
* fibroglandular tissue: a Gaussian random field with a power-law spectrum ``1/f^beta``
  (``beta`` ~ 3, as measured on real mammograms), thresholded softly at the quantile that gives the
  BI-RADS density category (A: ~8 %, B: ~30 %, C: ~55 %, D: ~80 % of the breast area).

Vendors act as acquisition domains (leave-one-vendor-out evaluation): each has its own bit depth
(12 or 14), quantum-noise level, display gamma, detector blur (resolution), contrast and a
heel-effect gradient. See :data:`VENDORS`.

Lesions and the labelling rule (one lesion, in one breast, visible in both of its views; the
contralateral breast is normal)::

    lesion type                    label      grade (ordinal 0..3)
    -----------------------------  ---------  --------------------------------------------------
    none                           normal     0
    circumscribed mass             benign     0   (oval, sharp margin, no spicules)
    focal asymmetry                benign     0   (broad, low-contrast density, no mass margin)
    microcalcification cluster     in_situ    1 + min(2, floor(3 * a)), a = aggressiveness
                                              (a sets the number of calcifications: 6..32,
                                              and their pleomorphism)
    spiculated mass                invasive   1 + min(2, floor(3 * a)); a sets core size and
                                              spicule count/length
    architectural distortion       invasive   1 + min(2, floor(3 * a)); a sets the number and
                                              length of the radiating lines

The grade encodes visible aggressiveness, so it is learnable from the image; normal and benign
images have grade 0. Ground-truth masks: the mass outline (core, without spicules), the convex hull
of the calcifications dilated by ~1 mm, the convex hull of the distortion's lines (where they are
drawn at half their peak strength or more; v1-v2: a disc of 0.6 x the line length), and the
half-maximum region of the asymmetry.

Generator version 2 (:data:`GENERATOR_VERSION`; mask definitions and labelling rule unchanged).
The model reads every image at 256x208 (~1.1 mm pixels). Measured on version 1, three lesion
types had lost, at that size, the feature that defines them, so no model could find them:
focal asymmetries (a Gaussian-profile density of contrast 0.10-0.15, below the glandular
texture's 0.26, with a half-maximum mask on a profile that has no visible edge: the shipped model's
IoU was 0.06, 73 % of them missed), architectural-distortion lines (0.4 network pixels wide) and
calcifications on dense tissue (specks summed to a fraction of a network pixel's value). Version 2:

* asymmetry: contrast 0.15-0.20 and a plateau (super-Gaussian, ``exp(-ln2 * rho^4)``) profile,
  so the half-maximum region it is masked by has a visible edge, as a real focal asymmetry's
  extent is judged by its border;
* architectural distortion: lines 2.4 px wide at 1024 rows (0.7 mm; v1 1.6 px), contrast
  0.16-0.22 (v1 0.12-0.18), central density 0.07 (v1 0.05);
* calcifications: speck size factor from 1.5 (v1 1.0) and peak attenuation 1.2-1.6 (v1 0.9-1.3),
  so a speck survives area-downsampling to the network's pixel size.

Generator version 3: what a reader compares and what a mask outlines now agree with the image.

* Bilateral anatomy. A focal asymmetry is, by its BI-RADS definition, density seen in one breast
  and not at the same place in the other; radiologists find it by comparing the two sides. Up to
  v2 the left and right breasts were drawn independently, so an asymmetry was just one more
  glandular blob: on v2, 27 % of the asymmetries whose contrast to their surroundings exceeded
  one standard deviation of that surrounding tissue were still missed by the shipped model
  (44 % of the fainter ones). From v3 the two images of a view share the breast shape (each
  jittered by about 3 %, as positioning does) and their glandular fields correlate at
  :data:`BILATERAL_RHO` = 0.8; the density category is the exam's, as before. The mammography
  model reads each image with its contralateral image of the same view as a second channel.
* Spiculated masses: spicules start at 0.9 x the core radius (v2: 0.6), i.e. at the margin, as
  real spicules radiate from it. (This did not make them easier to outline: a single-image model
  over-segments them more, 1.6x their area instead of 1.35x, as it includes the spicules' bases.)
* Architectural distortion: the mask is the convex hull of the drawn lines (above), the region a
  reader would outline; v2's disc of 0.6 x the line length had no visible edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from scipy import ndimage
from scipy.special import expit

from cds.contracts.domain import MAMMO_CLASSES, PatientRef
from synthetic.phantoms.dicom_common import base_dataset, new_uid, save_dataset

log = logging.getLogger(__name__)

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"

LESION_TYPES: tuple[str, ...] = (
    "circumscribed_mass",
    "asymmetry",
    "calcifications",
    "spiculated_mass",
    "architectural_distortion",
)
LESIONS_FOR_LABEL: dict[str, tuple[str, ...]] = {
    "normal": (),
    "benign": ("circumscribed_mass", "asymmetry"),
    "in_situ": ("calcifications",),
    "invasive": ("spiculated_mass", "architectural_distortion"),
}
LABEL_FOR_LESION: dict[str, str] = {t: lab for lab, ts in LESIONS_FOR_LABEL.items() for t in ts}
N_GRADES = 4
GENERATOR_VERSION = 3  # bump when rendering changes, so cached training sets are re-rendered
# correlation of the left and right glandular fields of one view (version 3; see the docstring)
BILATERAL_RHO = 0.8
DENSITY_FRACTION: dict[str, float] = {"A": 0.08, "B": 0.30, "C": 0.55, "D": 0.80}
VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))

# (code value, coding scheme, meaning) for the View Code Sequence
VIEW_CODES: dict[str, tuple[str, str, str]] = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}
# Patient Orientation (row direction, column direction) per laterality and view
PATIENT_ORIENTATION: dict[tuple[str, str], list[str]] = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}


@dataclass(frozen=True)
class Vendor:
    """One simulated acquisition domain. Pixel-size-dependent values are given at 1024 rows."""

    name: str
    bits_stored: int
    noise: float  # quantum-noise standard deviation (fraction of full scale) at 1024 rows
    gamma: float  # display transfer exponent
    blur: float  # detector blur, Gaussian sigma in pixels at 1024 rows
    contrast: float  # scale of tissue contrast
    heel: float  # strength of the anode heel-effect gradient
    offset: float  # background level (fraction of full scale)


VENDORS: dict[str, Vendor] = {
    "alpha": Vendor("alpha", 14, 0.010, 1.00, 0.6, 1.00, 0.00, 0.04),
    "bravo": Vendor("bravo", 12, 0.020, 0.80, 1.0, 0.90, 0.08, 0.08),
    "charlie": Vendor("charlie", 14, 0.015, 1.30, 0.8, 1.10, 0.04, 0.02),
    "delta": Vendor("delta", 12, 0.028, 1.10, 1.4, 0.80, 0.10, 0.06),
}


class ImageTruth(BaseModel):
    """Ground truth of one generated image."""

    model_config = ConfigDict(frozen=True)

    path: Path
    sop_instance_uid: str
    laterality: str
    view: str
    rows: int
    columns: int
    label: str
    grade: int
    lesion_type: str | None = None
    mask_path: Path | None = None  # uint8 (rows, columns) .npy; None for images without lesion
    for_processing_path: Path | None = None


class ExamTruth(BaseModel):
    """Ground truth of one generated 4-view exam."""

    model_config = ConfigDict(frozen=True)

    seed: int
    study_instance_uid: str
    vendor: str
    density: str
    exam_label: str
    lesion_laterality: str | None = None
    images: list[ImageTruth]

    @property
    def paths(self) -> list[Path]:
        return [i.path for i in self.images]


@dataclass(frozen=True)
class LesionSpec:
    """One lesion of an exam, in canonical fractional coordinates (x from the chest wall)."""

    kind: str
    aggressiveness: float
    depth: float  # x position as a fraction of the breast's extent from the chest wall
    size: float  # characteristic radius as a fraction of the image columns
    seed: int

    @property
    def label(self) -> str:
        return LABEL_FOR_LESION[self.kind]

    @property
    def grade(self) -> int:
        if self.label in ("normal", "benign"):
            return 0
        return 1 + min(2, int(3 * self.aggressiveness))


@dataclass
class RenderedView:
    """One rendered image: stored pixels, ground truth, acquisition facts."""

    laterality: str
    view: str
    pixels: np.ndarray  # uint16, display orientation (R mirrored), For Presentation
    mask: np.ndarray  # uint8 0/1, same shape
    label: str
    grade: int
    lesion_type: str | None
    vendor: Vendor


@dataclass
class RenderedExam:
    vendor: Vendor
    density: str
    exam_label: str
    lesion_laterality: str | None
    views: list[RenderedView]


# ----------------------------------------------------------------------------------------------
# Texture and anatomy
# ----------------------------------------------------------------------------------------------


def power_law_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field whose power spectrum falls as ``1/f^beta``."""
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape))
    field = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-8
    return field


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractional coordinates: u across columns (0 at chest wall), v down the rows."""
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return u / cols, v / rows


def _breast_geometry(rng: np.random.Generator, view: str, rows: int, cols: int,
                     jitter: np.random.Generator | None = None):
    """Breast radius map ``r`` (1 at the skin line) and the pectoral-muscle mask.

    ``rng`` is shared by the two breasts of a view (same size and shape); ``jitter`` (this image's
    own generator) then moves size and height by a few per cent, as positioning does.
    """
    u, v = _grid(rows, cols)
    a = rng.uniform(0.62, 0.84)
    if view == "CC":
        cy, b = rng.uniform(0.46, 0.54), rng.uniform(0.40, 0.46)
    else:
        cy, b = rng.uniform(0.40, 0.46), rng.uniform(0.50, 0.56)
    if jitter is not None:
        a *= jitter.uniform(0.97, 1.03)
        cy += jitter.uniform(-0.02, 0.02)
        b *= jitter.uniform(0.97, 1.03)
    theta = np.arctan2(v - cy, u)
    wobble = 1.0 + sum(
        rng.uniform(0.0, 0.025) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    r = np.sqrt((u / a) ** 2 + ((v - cy) / b) ** 2) / wobble
    pectoral = np.zeros((rows, cols), bool)
    if view == "MLO":
        px, py = rng.uniform(0.22, 0.36), rng.uniform(0.45, 0.75)
        bow = rng.uniform(-0.06, 0.06)
        edge = u / px + v / py + bow * np.sin(np.pi * np.clip(v / py, 0, 1))
        pectoral = (edge < 1.0) & (r < 1.0)
    return r, pectoral, a


def _dome(rho: np.ndarray, power: float = 0.5) -> np.ndarray:
    return np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0)) ** power


# ----------------------------------------------------------------------------------------------
# Lesions (add attenuation, return the ground-truth mask)
# ----------------------------------------------------------------------------------------------


def _lesion_centre(rng: np.random.Generator, spec: LesionSpec, r: np.ndarray, pectoral: np.ndarray,
                   a: float) -> tuple[float, float]:
    """A centre inside the breast, away from the skin line and the pectoral muscle (pixels)."""
    rows, cols = r.shape
    x = spec.depth * a * cols
    ys = [y for y in np.linspace(0.1 * rows, 0.9 * rows, 40)]
    rng.shuffle(ys)
    for y in ys:
        yi, xi = int(y), int(min(max(x, 0), cols - 1))
        if r[yi, xi] < 0.75 and not pectoral[yi, xi]:
            # keep clear of the pectoral muscle by the lesion size
            margin = int(spec.size * cols * 1.5)
            y0, y1 = max(0, yi - margin), min(rows, yi + margin)
            x0, x1 = max(0, xi - margin), min(cols, xi + margin)
            if not pectoral[y0:y1, x0:x1].any():
                return float(x), float(y)
    return float(0.45 * a * cols), float(0.62 * rows)


def _add_lesion(rng: np.random.Generator, spec: LesionSpec, att: np.ndarray, r: np.ndarray,
                pectoral: np.ndarray, a: float, scale: float) -> np.ndarray:
    """Draw ``spec`` into ``att`` (in place); return its uint8 ground-truth mask.

    ``scale`` is rows/1024: pixel-level sizes (calcification width, line width) scale with it
    so the same exam looks alike at every resolution.
    """
    rows, cols = att.shape
    cx, cy = _lesion_centre(rng, spec, r, pectoral, a)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    rad = spec.size * cols
    ag = spec.aggressiveness
    inside = (r < 0.98).astype(np.float32)

    if spec.kind == "circumscribed_mass":
        rot = rng.uniform(0, np.pi)
        ex = rad * rng.uniform(0.8, 1.2)
        ey = rad * rng.uniform(0.65, 0.9)
        xr = dx * np.cos(rot) + dy * np.sin(rot)
        yr = -dx * np.sin(rot) + dy * np.cos(rot)
        rho = np.sqrt((xr / ex) ** 2 + (yr / ey) ** 2)
        edge = expit(-(rho - 1.0) * rad / (0.8 * max(scale, 0.25)))
        att += rng.uniform(0.16, 0.26) * edge * (0.7 + 0.3 * _dome(np.minimum(rho, 1.0))) * inside
        return (rho < 1.0).astype(np.uint8)

    if spec.kind == "spiculated_mass":
        core = rad * (0.7 + 0.5 * ag)
        theta = np.arctan2(dy, dx)
        lobes = 1.0 + sum(
            rng.uniform(0.05, 0.14) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (3, 5, 7)
        )
        rho = np.sqrt(dx * dx + dy * dy) / (core * lobes)
        edge = expit(-(rho - 1.0) * core / (1.5 * max(scale, 0.25)))
        contrast = rng.uniform(0.18, 0.28)
        att += contrast * edge * (0.75 + 0.25 * _dome(np.minimum(rho, 1.0))) * inside
        n_spic = int(8 + 14 * ag + rng.integers(0, 4))
        length = core * (1.6 + 1.6 * ag)
        # spicules radiate from the margin (v2 started them at 0.6 x the core radius, so their
        # bases drew a bright halo outside the core that the mask, the core, did not include)
        _draw_rays(att, cx, cy, n_spic, core * 0.9, length, 2.2 * max(scale, 0.35),
                   contrast * 0.7, rng, inside)
        return (rho < 1.0).astype(np.uint8)

    if spec.kind == "architectural_distortion":
        n_lines = int(10 + 12 * ag + rng.integers(0, 4))
        length = rad * (1.3 + 1.0 * ag)
        lines = _draw_rays(att, cx, cy, n_lines, 0.0, length, 2.4 * max(scale, 0.35),
                           rng.uniform(0.16, 0.22), rng, inside)
        # central retraction: a faint star-shaped density at the convergence point
        d = np.sqrt(dx * dx + dy * dy)
        att += 0.07 * np.exp(-((d / (0.35 * length)) ** 2)) * inside
        # the distorted region is what the lines span: the convex hull of where they are drawn at
        # half their peak strength or more (v2 used a disc of 0.6 x the line length, an edge
        # nothing in the image marks)
        return _hull_of(lines >= 0.5)

    if spec.kind == "asymmetry":
        rot = rng.uniform(0, np.pi)
        ex, ey = rad * rng.uniform(1.3, 1.8), rad * rng.uniform(0.9, 1.3)
        xr = dx * np.cos(rot) + dy * np.sin(rot)
        yr = -dx * np.sin(rot) + dy * np.cos(rot)
        rho2 = (xr / ex) ** 2 + (yr / ey) ** 2
        env = np.exp(-(rho2 ** 2) * np.log(2.0))  # plateau profile, 0.5 at rho = 1
        tex = power_law_field(rng, (rows, cols), 2.6)
        att += rng.uniform(0.15, 0.20) * env * (0.75 + 0.25 * np.tanh(tex)) * inside
        return (env >= 0.5).astype(np.uint8)

    if spec.kind == "calcifications":
        n = int(6 + 24 * ag + rng.integers(0, 3))
        cluster = rad * rng.uniform(0.7, 1.0)
        # ductal (linear/branching) arrangement: points along 1-3 random segments through the centre
        pts = []
        n_seg = 1 + int(rng.integers(0, 3))
        seg_rot = rng.uniform(0, np.pi)
        for i in range(n):
            seg = i % n_seg
            t = rng.uniform(-1, 1)
            base_ang = seg * np.pi / n_seg + seg_rot
            px = cx + t * cluster * np.cos(base_ang) + rng.normal(0, 0.18 * cluster)
            py = cy + t * cluster * np.sin(base_ang) + rng.normal(0, 0.18 * cluster)
            pts.append((px, py))
        pts_arr = np.array(pts, np.float32)
        calc = np.zeros_like(att)
        for px, py in pts_arr:
            size = 1.5 + rng.uniform(0.0, 1.0) * (0.5 + ag)  # pleomorphism grows with grade
            sigma_true = 0.9 * size * scale
            sigma = max(sigma_true, 0.7)
            amp = rng.uniform(1.2, 1.6) * (sigma_true / sigma) ** 2
            win = int(4 * sigma) + 1
            x0, x1 = max(0, int(px) - win), min(cols, int(px) + win + 1)
            y0, y1 = max(0, int(py) - win), min(rows, int(py) + win + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            gy, gx = np.mgrid[y0:y1, x0:x1]
            calc[y0:y1, x0:x1] += amp * np.exp(-((gx - px) ** 2 + (gy - py) ** 2) / (2 * sigma**2))
        att += calc * inside
        # faint associated density
        d = np.sqrt(dx * dx + dy * dy)
        att += 0.04 * np.exp(-((d / cluster) ** 2)) * inside
        from skimage.morphology import convex_hull_image, disk

        seeds = np.zeros((rows, cols), bool)
        xi = np.clip(pts_arr[:, 0].round().astype(int), 0, cols - 1)
        yi = np.clip(pts_arr[:, 1].round().astype(int), 0, rows - 1)
        seeds[yi, xi] = True
        hull = convex_hull_image(seeds)
        margin = max(1, int(round(0.012 * cols)))
        y0, y1 = max(0, yi.min() - 2 * margin), min(rows, yi.max() + 2 * margin + 1)
        x0, x1 = max(0, xi.min() - 2 * margin), min(cols, xi.max() + 2 * margin + 1)
        out = np.zeros((rows, cols), bool)
        out[y0:y1, x0:x1] = ndimage.binary_dilation(hull[y0:y1, x0:x1], disk(margin))
        return out.astype(np.uint8)

    raise ValueError(f"unknown lesion type {spec.kind!r}; expected one of {LESION_TYPES}")


def _hull_of(region: np.ndarray) -> np.ndarray:
    """Filled convex hull of a boolean image (uint8); empty in, empty out."""
    from skimage.morphology import convex_hull_image

    if not region.any():
        return np.zeros(region.shape, np.uint8)
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    out = np.zeros(region.shape, np.uint8)
    out[y0:y1, x0:x1] = convex_hull_image(region[y0:y1, x0:x1])
    return out


def _draw_rays(att: np.ndarray, cx: float, cy: float, n: int, start: float, length: float,
               width: float, contrast: float, rng: np.random.Generator,
               inside: np.ndarray) -> np.ndarray:
    """Thin tapering lines radiating from (cx, cy): spicules or distortion lines.

    Adds them to ``att`` and returns their relative strength (0..1) as a full-size map, from
    which a mask of the region they span can be taken.
    """
    rows, cols = att.shape
    strength = np.zeros((rows, cols), np.float32)
    reach = int(start + length + 3 * width) + 1
    x0, x1 = max(0, int(cx) - reach), min(cols, int(cx) + reach + 1)
    y0, y1 = max(0, int(cy) - reach), min(rows, int(cy) + reach + 1)
    if x0 >= x1 or y0 >= y1:
        return strength
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    acc = np.zeros_like(dx)
    for k in range(n):
        ang = 2 * np.pi * k / n + rng.uniform(-0.25, 0.25)
        ln = length * rng.uniform(0.6, 1.0)
        along = dx * np.cos(ang) + dy * np.sin(ang)
        across = -dx * np.sin(ang) + dy * np.cos(ang)
        t = np.clip((along - start) / ln, 0.0, 1.0)
        w = width * (1.0 - 0.7 * t)
        line = np.exp(-(across**2) / (2 * w * w)) * ((along > start) & (along < start + ln))
        acc = np.maximum(acc, line * (1.0 - 0.6 * t))
    acc *= inside[y0:y1, x0:x1]
    att[y0:y1, x0:x1] += contrast * acc
    strength[y0:y1, x0:x1] = acc
    return strength


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------


def mg_dataset(pixels: np.ndarray, *, patient: PatientRef, study_uid: str, series_uid: str,
               sop_uid: str, series_number: int, instance_number: int, laterality: str, view: str,
               vendor: Vendor, pixel_spacing_mm: float, for_processing: bool = False,
               study_date: str | None = None) -> Dataset:
    """A Digital Mammography X-Ray Image dataset (For Presentation or For Processing)."""
    sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
    ds = base_dataset(patient, study_uid, series_uid, sop_class, "MG", series_number,
                      instance_number, study_date, sop_instance_uid=sop_uid,
                      manufacturer=f"breast-cds phantom {vendor.name}",
                      model_name=f"phantom-{vendor.name}")
    ds.StudyDescription = "Synthetic screening mammography (phantom)"
    ds.SeriesDescription = "For Processing" if for_processing else "For Presentation"
    ds.BodyPartExamined = "BREAST"
    # DX Series
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"
    # General Image / DX Image / Mammography Image
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.AcquisitionDate = ds.ContentDate
    ds.AcquisitionTime = ds.ContentTime
    ds.PatientOrientation = PATIENT_ORIENTATION[(laterality, view)]
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    ds.AnatomicRegionSequence = Sequence([CodedConcept("76752008", "SCT", "Breast")])
    view_item = CodedConcept(*VIEW_CODES[view])
    view_item.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([view_item])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = 0 if view == "CC" else (45 if laterality == "R" else -45)
    ds.DistanceSourceToDetector = 650
    ds.DistanceSourceToPatient = 630
    ds.EstimatedRadiographicMagnificationFactor = round(650 / 630, 4)
    ds.BodyPartThickness = 50
    ds.CompressionForce = 100
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.KVP = 29
    ds.ExposureTime = 1000
    ds.XRayTubeCurrent = 100
    ds.Exposure = 100
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = ["RHODIUM"]
    ds.FilterThicknessMinimum = 0.05
    ds.FilterThicknessMaximum = 0.05
    ds.FocalSpots = 0.3
    ds.Grid = "NONE"
    ds.EntranceDoseInmGy = 3.0
    ds.OrganDose = 1.5
    ds.AcquisitionContextSequence = Sequence([])
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = vendor.bits_stored
    ds.HighBit = vendor.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN" if for_processing else "LOG"
    ds.PixelIntensityRelationshipSign = -1 if for_processing else 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    full = (1 << vendor.bits_stored) - 1
    if not for_processing:
        ds.WindowCenter = round(full * 0.45)
        ds.WindowWidth = round(full * 0.8)
        ds.VOILUTFunction = "LINEAR"
    # DX Detector
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Nominal detector pitch"
    ds.DetectorActiveShape = "RECTANGLE"
    ds.DetectorActiveDimensions = [round(ds.Rows * pixel_spacing_mm, 2), round(ds.Columns * pixel_spacing_mm, 2)]
    ds.FieldOfViewShape = "RECTANGLE"
    ds.FieldOfViewDimensions = [round(ds.Rows * pixel_spacing_mm), round(ds.Columns * pixel_spacing_mm)]
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def pixel_spacing_for(rows: int) -> float:
    """Nominal pixel pitch keeping a ~29 cm field of view (0.07 mm at 4096 rows)."""
    return round(0.07 * 4096 / rows, 4)


def _for_processing_pixels(view: RenderedView) -> np.ndarray:
    """A linear-raw-like version: inverted (higher attenuation gives lower values)."""
    full = (1 << view.vendor.bits_stored) - 1
    return (full - view.pixels.astype(np.int32)).clip(0, full).astype(np.uint16)


def generate_exam(out_dir: Path, seed: int, patient: PatientRef, *, study_uid: str | None = None,
                  vendor: str | None = None, rows: int = 1024, columns: int = 832,
                  force_label: str | None = None, force_lesion: str | None = None,
                  for_processing: bool = False) -> ExamTruth:
    """Write a seeded 4-view exam (RCC, LCC, RMLO, LMLO) as MG DICOM plus ``.npy`` masks.

    Same seed and patient give the same pixels, masks, labels and UIDs. With ``for_processing``
    a second series holds For Processing instances of the same views.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exam = synthesize_exam(seed, rows, columns, vendor, force_label, force_lesion)
    tag = f"mg/{seed}/{patient.key}"
    study_uid = study_uid or new_uid(f"{tag}/study")
    series_uid = new_uid(f"{tag}/{study_uid}/series/1")
    proc_series_uid = new_uid(f"{tag}/{study_uid}/series/2")
    spacing = pixel_spacing_for(rows)
    images: list[ImageTruth] = []
    for i, v in enumerate(exam.views, start=1):
        name = f"{v.laterality}{v.view}"
        sop_uid = new_uid(f"{tag}/{study_uid}/{name}")
        ds = mg_dataset(v.pixels, patient=patient, study_uid=study_uid, series_uid=series_uid,
                        sop_uid=sop_uid, series_number=1, instance_number=i,
                        laterality=v.laterality, view=v.view, vendor=v.vendor,
                        pixel_spacing_mm=spacing)
        path = save_dataset(ds, out_dir / f"{name}.dcm")
        mask_path = None
        if v.lesion_type is not None:
            mask_path = out_dir / f"{name}_mask.npy"
            np.save(mask_path, v.mask)
        proc_path = None
        if for_processing:
            pds = mg_dataset(_for_processing_pixels(v), patient=patient, study_uid=study_uid,
                             series_uid=proc_series_uid, sop_uid=new_uid(f"{tag}/{study_uid}/{name}/p"),
                             series_number=2, instance_number=i, laterality=v.laterality,
                             view=v.view, vendor=v.vendor, pixel_spacing_mm=spacing,
                             for_processing=True)
            proc_path = save_dataset(pds, out_dir / f"{name}_for_processing.dcm")
        images.append(ImageTruth(path=path, sop_instance_uid=sop_uid, laterality=v.laterality,
                                 view=v.view, rows=rows, columns=columns, label=v.label,
                                 grade=v.grade, lesion_type=v.lesion_type, mask_path=mask_path,
                                 for_processing_path=proc_path))
    log.info("phantom MG exam written: study %s vendor %s label %s", study_uid, exam.vendor.name,
             exam.exam_label)
    return ExamTruth(seed=seed, study_instance_uid=study_uid, vendor=exam.vendor.name,
                     density=exam.density, exam_label=exam.exam_label,
                     lesion_laterality=exam.lesion_laterality, images=images)


def generate_fast_image(path: Path, seed: int, rows: int = 4096, columns: int = 3328,
                        patient: PatientRef | None = None, study_uid: str | None = None) -> Path:
    """A cheap but valid 16-bit MG For Presentation instance of full-field size (for ingest benches).

    The anatomy is rendered at 1/8 size and upscaled by pixel replication; noise comes from one
    small random tile repeated over the image, so 20 instances take seconds, not minutes.
    """
    if rows % 8 or columns % 8:
        raise ValueError(f"rows and columns must be multiples of 8 (got {rows}x{columns})")
    patient = patient or PatientRef(patient_id=f"PHANTOM{seed}", name="Phantom^Fast", sex="F")
    rng = np.random.default_rng(seed)
    vend = VENDORS["alpha"]
    full = (1 << vend.bits_stored) - 1
    small = render_view(rng, rows // 8, columns // 8, "L", "CC", "B", vend, None).pixels
    small = np.clip(small, 20, full - 20).astype(np.uint16)  # head-room for the noise below
    pixels = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)
    tile = rng.integers(0, 41, size=(256, 256), dtype=np.uint16)
    reps = (-(-rows // 256), -(-columns // 256))
    pixels += np.tile(tile, reps)[:rows, :columns]  # in place, uint16: no temporaries, no clip
    pixels -= 20
    tag = f"mgfast/{seed}/{patient.key}"
    study_uid = study_uid or new_uid(f"{tag}/study")
    ds = mg_dataset(pixels, patient=patient, study_uid=study_uid,
                    series_uid=new_uid(f"{tag}/{study_uid}/series"),
                    sop_uid=new_uid(f"{tag}/{study_uid}/sop"), series_number=1,
                    instance_number=1, laterality="L", view="CC", vendor=vend,
                    pixel_spacing_mm=pixel_spacing_for(rows))
    return save_dataset(ds, Path(path))
