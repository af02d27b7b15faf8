"""Training data for the mammography model: phantoms in memory, or a user's DICOM folder + CSV.

Both paths end in the same :class:`MammoArrays` (network-geometry inputs, masks, labels, vendor),
produced with :mod:`models.mammography.preprocess` so training sees exactly what the runtime
will. Arrays are cached as ``.npz`` in the training folder, so a resumed run does not decode or
render again.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cds.contracts.domain import MAMMO_CLASSES
from models.mammography.pairing import bilateral_input, contralateral_rows
from models.mammography.preprocess import INPUT_SHAPE, MammoInputError, prepare_image, prepare_mask, read_mg

log = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "test")


@dataclass
class MammoArrays:
    x: np.ndarray  # (n, 2, H, W) float32: the image, then its contralateral image of the same view
    mask: np.ndarray  # (n, H, W) uint8 ground truth in network geometry
    y: np.ndarray  # (n,) int64 class index into MAMMO_CLASSES
    grade: np.ndarray  # (n,) int64 ordinal grade 0..3
    vendor: np.ndarray  # (n,) str domain (vendor / manufacturer)
    split: np.ndarray  # (n,) str: train / calibration / test
    has_mask: np.ndarray  # (n,) bool: whether a ground-truth mask exists (else mask is all 0 and unknown)
    lesion_type: np.ndarray  # (n,) str: phantom lesion type ("" for none or unknown), for per-type metrics

    @classmethod
    def from_rows(cls, xs, masks, ys, grades, vendors, splits, has_mask, lesion_types,
                  contra=None) -> MammoArrays:
        """Stack per-image values (phantom renders or a site's labelled DICOM) into the arrays.

        ``contra[i]`` is the row of image ``i``'s contralateral image (same view, other breast), or
        ``i`` itself when the exam has none (see :func:`bilateral_input`).
        """
        imgs = np.stack(xs).astype(np.float32)
        contra = np.arange(len(imgs)) if contra is None else np.asarray(contra, np.int64)
        return cls(x=bilateral_input(imgs, imgs[contra]), mask=np.stack(masks),
                   y=np.asarray(ys, np.int64), grade=np.asarray(grades, np.int64),
                   vendor=np.asarray(vendors), split=np.asarray(splits),
                   has_mask=np.asarray(has_mask, bool), lesion_type=np.asarray(lesion_types))

    def subset(self, sel: np.ndarray) -> MammoArrays:
        return MammoArrays(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def save(self, path: Path) -> None:
        np.savez(path,  # uncompressed: noise does not compress, and saving is 20x faster
                 **{f: getattr(self, f) for f in self.__dataclass_fields__})

    @classmethod
    def load(cls, path: Path) -> MammoArrays:
        with np.load(path, allow_pickle=False) as z:
            fields = {f: z[f] for f in cls.__dataclass_fields__ if f in z.files}
        fields.setdefault("lesion_type", np.asarray([""] * len(fields["y"])))  # older caches lack lesion types
        return cls(**fields)


def concat(parts: list[MammoArrays]) -> MammoArrays:
    return MammoArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in MammoArrays.__dataclass_fields__))


def synthetic_exam(i: int, seed: int, rows: int, columns: int) -> tuple[str, str, Any, np.ndarray]:
    """Exam ``i`` of the synthetic data set: (vendor, split, exam, contralateral rows). The vendor
    cycles fastest, then the class; 3 of every 5 exams train, 1 calibrates, 1 tests."""
    from synthetic.phantoms.mammography import VENDORS, synthesize_exam

    vendors = sorted(VENDORS)
    vendor = vendors[i % len(vendors)]
    label = MAMMO_CLASSES[(i // len(vendors)) % len(MAMMO_CLASSES)]
    split = SPLITS[0] if i % 5 < 3 else SPLITS[1 + (i % 5 - 3)]
    exam = synthesize_exam(seed * 1_000_003 + i, rows, columns, vendor=vendor, force_label=label)
    contra = contralateral_rows([("", v.view, v.laterality) for v in exam.views])
    return vendor, split, exam, contra


def _render_exam(args: tuple[int, int, int, int]) -> tuple:
    """Render exam ``i`` of a synthetic data set into network-geometry arrays (worker-safe)."""
    i, seed, rows, columns = args
    vendor, split, exam, contra = synthetic_exam(i, seed, rows, columns)
    return [(prepare_image(v.pixels, v.laterality), prepare_mask(v.mask, v.laterality).astype(np.uint8),
             MAMMO_CLASSES.index(v.label), v.grade, vendor, split, v.lesion_type or "", int(c))
            for v, c in zip(exam.views, contra)]


def synthetic_arrays(n_exams: int, seed: int = 0, rows: int = 512, columns: int = 416,
                     on_exam: Callable[[int], None] | None = None, start: int = 0,
                     workers: int = 1) -> MammoArrays:
    """Render ``n_exams`` phantom exams, balanced over vendors and labels, split 3:1:1 by exam.

    Exam ``i`` uses vendor ``i % 4``, exam label ``(i // 4) % 4`` and split ``i % 5`` so every
    vendor sees every label in every split. Images ``4i .. 4i+3`` belong to exam ``i``; exams
    ``start .. n_exams-1`` are rendered (so a cache can be extended). ``workers`` > 1 renders in
    that many processes (rendering costs ~0.4 s per 512x416 exam, as much as ~9 training passes
    over its images, so on 2 cores it is worth spreading); the result does not depend on it.
    Workers are forked (numpy-only work; no torch thread pool has run yet in a training process).
    """
    jobs = [(i, seed, rows, columns) for i in range(start, n_exams)]
    rows_out: list = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for i, views in zip(range(start, n_exams), pool.map(_render_exam, jobs, chunksize=4)):
                rows_out.extend(views)
                if on_exam is not None:
                    on_exam(i)
    else:
        for job in jobs:
            rows_out.extend(_render_exam(job))
            if on_exam is not None:
                on_exam(job[0])
    xs, masks, ys, grades, vends, splits, kinds, within = zip(*rows_out)
    # images 4k..4k+3 are one exam; its views' contralateral rows are offsets within it
    contra = [4 * (row // 4) + c for row, c in enumerate(within)]
    return MammoArrays.from_rows(xs, masks, ys, grades, vends, splits, [True] * len(ys), kinds,
                                 contra=contra)


def _load_mask(path: Path, rows: int, columns: int) -> np.ndarray:
    if path.suffix == ".npy":
        m = np.load(path)
    else:
        from skimage.io import imread

        m = imread(path)
        if m.ndim == 3:
            m = m[..., 0]
    if m.shape != (rows, columns):
        raise MammoInputError(f"{path}: mask shape {m.shape} does not match image {rows}x{columns}")
    return (m > 0).astype(np.uint8)


def folder_arrays(dicom_dir: Path, labels_csv: Path, seed: int = 0,
                  on_row: Callable[[int, int], None] | None = None) -> MammoArrays:
    """Read a user's DICOM folder and labels CSV.

    CSV columns: ``sop_instance_uid`` or ``file`` (relative to ``dicom_dir``), ``label``
    (normal / benign / in_situ / invasive), optional ``grade`` (0-3; default 0 for normal/benign
    and unknown otherwise -> 2), optional ``mask`` (.npy or image, same size as the image),
    optional ``split`` (train / calibration / test; otherwise 60/20/20 by study, seeded).
    """
    dicom_dir, labels_csv = Path(dicom_dir), Path(labels_csv)
    if not labels_csv.is_file():
        raise FileNotFoundError(f"labels CSV not found: {labels_csv}")
    with labels_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{labels_csv}: no rows")
    cols = set(rows[0])
    if "label" not in cols or not ({"sop_instance_uid", "file"} & cols):
        raise ValueError(f"{labels_csv}: needs a 'label' column and 'sop_instance_uid' or 'file'")
    by_uid: dict[str, Path] = {}
    if "sop_instance_uid" in cols and any(r.get("sop_instance_uid") for r in rows):
        import pydicom

        for p in sorted(dicom_dir.rglob("*")):
            if p.is_file():
                try:
                    ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
                    by_uid[str(ds.SOPInstanceUID)] = p
                except Exception:  # not DICOM: skip silently, the CSV decides what is needed
                    continue
    rng = np.random.default_rng(seed)
    xs, masks, ys, grades, vends, splits, has = [], [], [], [], [], [], []
    keys: list[tuple[str, str, str]] = []  # (study, view, laterality): pairs each image with its other side
    study_split: dict[str, str] = {}
    for k, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip()
        if label not in MAMMO_CLASSES:
            raise ValueError(f"{labels_csv} line {k}: label {label!r} not in {MAMMO_CLASSES}")
        uid = (row.get("sop_instance_uid") or "").strip()
        path = by_uid.get(uid) if uid else None
        if path is None:
            name = (row.get("file") or "").strip()
            if not name:
                raise ValueError(f"{labels_csv} line {k}: SOP Instance UID {uid!r} not found in {dicom_dir}")
            path = dicom_dir / name
        img = read_mg(path)
        import pydicom

        meta = pydicom.dcmread(path, stop_before_pixels=True)
        xs.append(prepare_image(img.pixels, img.laterality, img.invert))
        keys.append((str(getattr(meta, "StudyInstanceUID", "") or path.parent), img.view, img.laterality))
        mask_name = (row.get("mask") or "").strip()
        if mask_name:
            mp = Path(mask_name) if Path(mask_name).is_absolute() else labels_csv.parent / mask_name
            masks.append(prepare_mask(_load_mask(mp, img.rows, img.columns), img.laterality).astype(np.uint8))
            has.append(True)
        else:
            masks.append(np.zeros(INPUT_SHAPE, np.uint8))
            has.append(label == "normal")  # a normal image's empty mask is a real ground truth
        g = (row.get("grade") or "").strip()
        grades.append(int(g) if g else (0 if label in ("normal", "benign") else 2))
        ys.append(MAMMO_CLASSES.index(label))
        vends.append(str(getattr(meta, "Manufacturer", "") or "unknown"))
        split = (row.get("split") or "").strip()
        if not split:
            study = str(getattr(meta, "StudyInstanceUID", path.name))
            if study not in study_split:
                r = rng.random()
                study_split[study] = "train" if r < 0.6 else ("calibration" if r < 0.8 else "test")
            split = study_split[study]
        if split not in SPLITS:
            raise ValueError(f"{labels_csv} line {k}: split {split!r} not in {SPLITS}")
        splits.append(split)
        if on_row is not None:
            on_row(k - 1, len(rows))
    return MammoArrays.from_rows(xs, masks, ys, grades, vends, splits, has, [""] * len(ys),
                                 contra=contralateral_rows(keys))
