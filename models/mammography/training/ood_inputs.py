"""Out-of-domain inputs for the mammography model, and how often its domain flag fires on them.

Kinds (each written as a Digital Mammography X-Ray For Presentation instance, L CC, so that the
runtime reads it as it would a mammogram):

* ``real_dicom``: every decodable single-image CT, MR, US, CR, NM, OT and DX file among pydicom's
  test files and ``pydicom-data``, plus highdicom's ``dx_image.dcm``; as they are (their own
  pixels, bits stored and pixel spacing);
* ``real_dicom_matched``: the same images resized to the training geometry (512x416, 0.56 mm,
  14 bits, intensities spread like a phantom's), so only the intensity statistics and the
  embedding can tell them apart: a test of the embedding score itself;
* ``slide_phantom`` / ``ultrasound_phantom``: other phantom families, training geometry.

:func:`flag_rates` runs the shipped runtime on each input and counts the flags per kind, and
separately how often the embedding distance alone is over its threshold.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from skimage.transform import resize

from cds.contracts.domain import PatientRef

MODALITIES = ("CT", "MR", "US", "CR", "NM", "OT", "DX")
PATIENT = PatientRef(patient_id="OOD", issuer="phantom", name="Out^Of^Domain", sex="F")


def real_dicom_files(extra: tuple[Path, ...] = ()) -> list[Path]:
    """Distinct single-image files of :data:`MODALITIES` that pydicom can decode."""
    from pydicom.data import get_testdata_files

    seen: set[str] = set()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in sorted(get_testdata_files("*.dcm")) + [str(p) for p in extra]:
            try:
                ds = pydicom.dcmread(f)
                if str(ds.get("Modality", "")) not in MODALITIES or "PixelData" not in ds:
                    continue
                key = f"{ds.get('SOPInstanceUID', f)}/{ds.Rows}x{ds.Columns}"
                if key in seen or gray(ds) is None:
                    continue
            except Exception:  # undecodable test files (broken on purpose, or codec missing)
                continue
            seen.add(key)
            out.append(Path(f))
    return out


def gray(ds: pydicom.Dataset) -> np.ndarray | None:
    """The first frame as a 2-D array (colour averaged), or None when it cannot be decoded."""
    a = np.asarray(ds.pixel_array)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        a = a[0]
    if a.ndim == 3:
        a = a[..., :3].mean(axis=-1)
    if a.ndim != 2 or min(a.shape) < 16:
        return None
    return a


def write_mg(pixels: np.ndarray, path: Path, *, bits: int, spacing_mm: float | None, seed: int) -> Path:
    """``pixels`` (any range) stored as an MG instance with ``bits`` bits and the given spacing."""
    from synthetic.phantoms.dicom_common import new_uid, save_dataset
    from synthetic.phantoms.mammography import VENDORS, mg_dataset

    bits = int(min(max(bits, 8), 16))
    a = np.asarray(pixels, np.float64)
    a = a - a.min()
    top = float(a.max())
    full = (1 << bits) - 1
    if top > full:
        a = a * (full / top)
    vendor = VENDORS["alpha"].__class__(**{**VENDORS["alpha"].__dict__, "name": "ood", "bits_stored": bits})
    tag = f"ood/{seed}/{path.name}"
    study = new_uid(f"{tag}/study")
    ds = mg_dataset(np.round(a).astype(np.uint16), patient=PATIENT, study_uid=study,
                    series_uid=new_uid(f"{tag}/series"), sop_uid=new_uid(f"{tag}/sop"), series_number=1,
                    instance_number=1, laterality="L", view="CC", vendor=vendor,
                    pixel_spacing_mm=spacing_mm or 0.1)
    if spacing_mm is None:
        for kw in ("PixelSpacing", "ImagerPixelSpacing"):
            if kw in ds:
                delattr(ds, kw)
    return save_dataset(ds, Path(path))


def matched(pixels: np.ndarray) -> np.ndarray:
    """Training geometry and a phantom-like 14-bit intensity spread (5th-99.5th pct -> 0.08-0.6)."""
    a = resize(np.asarray(pixels, np.float64), (512, 416), order=1, anti_aliasing=True, preserve_range=True)
    lo, hi = np.percentile(a, [5, 99.5])
    a = 0.08 + 0.52 * np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
    return a * ((1 << 14) - 1)


def build_inputs(out_dir: Path, n_phantoms: int = 10, dx_image: Path | None = None) -> dict[str, list[Path]]:
    """Write every kind of out-of-domain input under ``out_dir``; returns paths per kind."""
    from synthetic.phantoms.slide_tissue import render_tissue
    from synthetic.phantoms.ultrasound import generate_ultrasound

    out_dir = Path(out_dir)
    kinds: dict[str, list[Path]] = {"real_dicom": [], "real_dicom_matched": [], "slide_phantom": [],
                                    "ultrasound_phantom": []}
    extra = (dx_image,) if dx_image is not None and Path(dx_image).is_file() else ()
    for k, f in enumerate(real_dicom_files(extra)):
        ds = pydicom.dcmread(f)
        px = gray(ds)
        sp = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
        kinds["real_dicom"].append(write_mg(px, out_dir / f"real_{k}.dcm", bits=int(getattr(ds, "BitsStored", 8)),
                                            spacing_mm=float(sp[0]) if sp else None, seed=k))
        kinds["real_dicom_matched"].append(write_mg(matched(px), out_dir / f"matched_{k}.dcm", bits=14,
                                                    spacing_mm=0.56, seed=k))
    for k in range(n_phantoms):
        rgb, _, _ = render_tissue(50_000 + k, 512, k % 2 == 0, False)
        kinds["slide_phantom"].append(write_mg(matched(255.0 - rgb.mean(axis=-1)), out_dir / f"slide_{k}.dcm",
                                               bits=14, spacing_mm=0.56, seed=k))
        us = generate_ultrasound(out_dir / "us_src", 60_000 + k, PATIENT)
        kinds["ultrasound_phantom"].append(write_mg(matched(gray(pydicom.dcmread(us.path))),
                                                    out_dir / f"us_{k}.dcm", bits=14, spacing_mm=0.56, seed=k))
    return kinds


def flag_rates(model, kinds: dict[str, list[Path]]) -> dict[str, dict]:  # noqa: ANN001 (MammographyModel)
    """Per kind: inputs, how many were flagged out of domain, how many by the embedding alone."""
    from models.mammography.domain import image_check
    from models.mammography.preprocess import read_mg
    from models.mammography.runtime import exam_input

    out: dict[str, dict] = {}
    for kind, paths in kinds.items():
        flagged, by_embedding, reasons = 0, 0, []
        for p in paths:
            im = read_mg(p)
            *_, feats = model.run_outputs(exam_input([im]))
            check = image_check(model.domain, im, feats[0])
            flagged += int(not check.in_domain)
            by_embedding += int(check.score is not None and check.score > check.threshold)
            reasons.append(check.reasons)
        out[kind] = {"n": len(paths), "flagged": flagged, "embedding_over_threshold": by_embedding,
                     "reasons": reasons}
    return out
