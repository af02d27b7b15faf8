"""Training data of the slide model: seeded phantom splits, tissue tiles with tumour fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cds.contracts.domain import PatientRef
from models.slides.reader import open_slide, stage1_patches, stage2_tiles, tissue_tiles


def _split_plan(seed: int, n: int, offset: int) -> list[tuple[int, bool, bool]]:
    """(seed, metastasis, occult) per slide: half positive, half of the positives occult (< 0.2 mm).

    Occult clusters are what a two-stage screen is most likely to miss, so they are half of the
    positives of every split.
    """
    plan = []
    for i in range(n):
        pos = i % 2 == 0
        occult = pos and (i // 2) % 2 == 1
        plan.append((seed * 100_000 + offset + i, pos, occult))
    return plan


def split_sizes(n_slides: int) -> tuple[int, int, int]:
    """(train, calibration, test) slide counts: 24 % / 48 % / the rest.

    The calibration set is the largest part on purpose: with Platt's regularised targets a set of
    N slides per class can claim at most ``1 - 1/(N + 2)`` certainty, so on well-separated
    phantoms its size, not the model, bounds the calibrated ECE (48 per class: about 0.02).
    """
    n_train = max(2, round(n_slides * 0.24))
    n_cal = max(2, round(n_slides * 0.48))
    return n_train, n_cal, n_slides - n_train - n_cal


def _tile_tumour_fraction(mask: np.ndarray, down: int, tile: int, tiles: list[tuple[int, int]]) -> np.ndarray:
    k = tile // down
    return np.array([float(mask[r * k : (r + 1) * k, c * k : (c + 1) * k].mean()) for r, c in tiles], np.float32)


def _slide_tiles(paths: list[Path], mask: np.ndarray | None, down: int) -> dict:
    """Every tissue tile of a slide at both magnifications, with tumour fractions when a mask exists."""
    with open_slide(paths) as rd:
        _, tissue = tissue_tiles(rd)
        tiles = [(int(r), int(c)) for r, c in np.argwhere(tissue)]
        patches, _ = stage1_patches(rd, tiles)
        _, pooled = stage2_tiles(rd, tiles)
        tile = rd.base.tile_rows
    frac = _tile_tumour_fraction(mask, down, tile, tiles) if mask is not None else None
    return {"tiles": tiles, "grid": tissue.shape, "tissue": tissue, "patches": patches, "pooled": pooled, "frac": frac}


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=desc)


def _generate(plan, out_dir: Path, size: int, progress: bool, desc: str):
    from synthetic.phantoms.slides import generate_slide

    patient = PatientRef(patient_id="SYNTH", issuer="phantom")
    truths = []
    for s, pos, occ in _progress(plan, desc, progress):
        truths.append(generate_slide(out_dir / f"s{s}", s, patient, metastasis=pos, occult=occ, size=size))
    return truths


def _series_paths(dicom_dir: Path) -> dict[str, list[Path]]:
    import pydicom

    series: dict[str, list[Path]] = {}
    for p in sorted(Path(dicom_dir).rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPClassUID", "SeriesInstanceUID"])
        except Exception:
            continue
        if str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.77.1.6":
            series.setdefault(str(ds.SeriesInstanceUID), []).append(p)
    return series
