"""CBIS-DDSM as the Cancer Imaging Archive distributes it, read directly for training.

Layout: the description CSVs (``mass_case_description_train_set.csv``,
``calc_case_description_test_set.csv``, ...; one row per abnormality) and the DICOM tree of
full mammograms, cropped abnormalities and ROI masks, all Secondary Capture with Modality MG.
Columns used: ``patient_id``, ``left or right breast``, ``image view``, ``abnormality id``,
``abnormality type`` (mass / calcification), ``pathology`` (MALIGNANT / BENIGN /
BENIGN_WITHOUT_CALLBACK), ``image file path`` and ``ROI mask file path`` (both
``<PatientID folder>/<StudyInstanceUID>/<SeriesInstanceUID>/<file>``). A CSV path is used as
it is when that file exists under the DICOM folder; otherwise (the NBIA downloader names the
folders differently) the file is found by its Series Instance UID, and of a series holding both
a crop and a mask the mask is the binary image.

Labels (CBIS-DDSM says malignant or benign, not invasive or in situ, and has no normal images):
MALIGNANT mass -> ``invasive`` (a malignant mass is mostly invasive carcinoma), MALIGNANT
calcification -> ``in_situ`` (malignant calcifications alone are mostly DCIS), BENIGN and
BENIGN_WITHOUT_CALLBACK -> ``benign``. An image with several abnormalities takes the most
severe label (invasive > in situ > benign) and the union of their ROI masks. The grade is
unknown (2 for malignant, 0 for benign, as for the generic CSV). Splits: the ``test`` CSVs give
``test``; ``train`` CSVs are split 80/20 into train / calibration by patient, seeded.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cds.contracts.domain import MAMMO_CLASSES

SEVERITY = ("benign", "in_situ", "invasive")
REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality type", "pathology",
            "image file path")


@dataclass
class CbisImage:
    """One full mammogram of CBIS-DDSM and its labels, from the description CSVs."""

    image_path: str
    patient_id: str
    laterality: str  # L / R
    view: str  # CC / MLO
    label: str
    split: str  # train / test (calibration is carved out of train later)
    mask_paths: list[str] = field(default_factory=list)


def description_csvs(labels: Path) -> list[Path]:
    """The description CSVs: ``labels`` itself, or every ``*case_description*.csv`` in a folder."""
    labels = Path(labels)
    if labels.is_dir():
        return sorted(labels.glob("*case_description*.csv"))
    return [labels]


def is_cbis_ddsm(labels: Path) -> bool:
    """Whether ``labels`` (a CSV or a folder) is in CBIS-DDSM's description-CSV layout."""
    csvs = description_csvs(labels)
    if not csvs or not all(p.is_file() for p in csvs):
        return False
    with csvs[0].open(newline="") as fh:
        header = {h.strip().lower() for h in next(csv.reader(fh), [])}
    return {"image file path", "pathology", "abnormality type"} <= header


def labels_digest(labels: Path) -> str:
    h = hashlib.sha256()
    for p in description_csvs(labels):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def label_of(pathology: str, abnormality: str, where: str) -> str:
    p, a = pathology.strip().upper(), abnormality.strip().lower()
    if p in ("BENIGN", "BENIGN_WITHOUT_CALLBACK"):
        return "benign"
    if p == "MALIGNANT":
        if a.startswith("calc"):
            return "in_situ"
        if a == "mass":
            return "invasive"
        raise ValueError(f"{where}: abnormality type {abnormality!r}; expected mass or calcification")
    raise ValueError(f"{where}: pathology {pathology!r}; expected MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK")


def read_descriptions(labels: Path) -> list[CbisImage]:
    """One :class:`CbisImage` per full image named in the description CSVs (rows merged)."""
    images: dict[str, CbisImage] = {}
    for path in description_csvs(labels):
        split = "test" if "test" in path.name.lower() else "train"
        with path.open(newline="") as fh:
            rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(fh)]
        for n, row in enumerate(rows, start=2):
            where = f"{path} line {n}"
            missing = [c for c in REQUIRED if not row.get(c)]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)} (CBIS-DDSM description columns)")
            label = label_of(row["pathology"], row["abnormality type"], where)
            lat = {"LEFT": "L", "RIGHT": "R"}.get(row["left or right breast"].upper())
            if lat is None:
                raise ValueError(f"{where}: left or right breast {row['left or right breast']!r}; expected LEFT or RIGHT")
            key = row["image file path"]
            img = images.setdefault(key, CbisImage(key, row["patient_id"], lat, row["image view"].upper(),
                                                   label, split))
            if SEVERITY.index(label) > SEVERITY.index(img.label):
                img.label = label
            if row.get("roi mask file path"):
                img.mask_paths.append(row["roi mask file path"])
    return list(images.values())


def assign_splits(images: list[CbisImage], seed: int = 0) -> list[str]:
    """train / calibration (20 % of train patients, seeded) / test, per image."""
    rng = np.random.default_rng(seed)
    patients = sorted({im.patient_id for im in images if im.split == "train"})
    calibration = {p for p in patients if rng.random() < 0.2}
    return [im.split if im.split == "test" else ("calibration" if im.patient_id in calibration else "train")
            for im in images]


def label_index(label: str) -> int:
    return MAMMO_CLASSES.index(label)


class _Files:
    """CSV paths -> DICOM files under ``root``: as written, else by Series Instance UID."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._by_series: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_series is None:
            import pydicom

            self._by_series = {}
            for p in sorted(self.root.rglob("*.dcm")):
                try:
                    ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                except Exception:  # not DICOM: the CSV decides what is needed
                    continue
                self._by_series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(p)
        return self._by_series

    def find(self, csv_path: str, what: str, whole_series: bool = False) -> list[Path]:
        """The file the CSV names; with ``whole_series`` also every file of its series (a crop
        and its ROI mask share one)."""
        direct = self.root / csv_path.strip().replace("\\", "/")
        if direct.is_file() and not whole_series:
            return [direct]
        parts = [p for p in csv_path.replace("\\", "/").split("/") if p]
        series = parts[-2] if len(parts) >= 2 else ""
        found = ([direct] if direct.is_file() else []) + [
            p for p in self._index().get(series, []) if p != direct]
        if not found:
            raise FileNotFoundError(f"{what} {csv_path!r}: no such file under {self.root} and no DICOM file "
                                    f"with Series Instance UID {series!r}")
        return found


def _roi_mask(files: list[Path], rows: int, columns: int, what: str) -> np.ndarray:
    """The binary image among ``files`` (a series may hold the crop too), at the image's size."""
    import pydicom
    from skimage.transform import resize

    for p in files:
        m = pydicom.dcmread(p).pixel_array
        if m.ndim == 2 and len(np.unique(m)) <= 2:
            if m.shape != (rows, columns):  # some CBIS-DDSM masks differ by a few pixels
                m = resize(m > 0, (rows, columns), order=0, preserve_range=True, anti_aliasing=False)
            return (m > 0).astype(np.uint8)
    raise ValueError(f"{what}: no binary ROI mask among {len(files)} file(s) of its series")


def cbis_arrays(dicom_dir: Path, labels: Path, seed: int = 0, on_row=None):  # noqa: ANN001, ANN201
    """:class:`MammoArrays` from CBIS-DDSM's description CSVs and DICOM tree (see module doc)."""
    from models.mammography.pairing import contralateral_rows
    from models.mammography.preprocess import prepare_image, prepare_mask, read_mg
    from models.mammography.training.data import MammoArrays

    images = read_descriptions(labels)
    if not images:
        raise ValueError(f"{labels}: no rows in the CBIS-DDSM description CSVs")
    files = _Files(dicom_dir)
    splits = assign_splits(images, seed)
    xs, masks, ys, grades, vendors, has, keys = [], [], [], [], [], [], []
    for k, im in enumerate(images):
        img = read_mg(files.find(im.image_path, "image file path")[0])
        xs.append(prepare_image(img.pixels, img.side, img.invert))
        mask = np.zeros((img.rows, img.columns), np.uint8)
        for mp in im.mask_paths:
            mask |= _roi_mask(files.find(mp, "ROI mask file path", whole_series=True), img.rows, img.columns, mp)
        masks.append(prepare_mask(mask, img.side).astype(np.uint8))
        has.append(bool(im.mask_paths))
        ys.append(label_index(im.label))
        grades.append(0 if im.label == "benign" else 2)
        vendors.append("CBIS-DDSM")
        keys.append((im.patient_id, im.view, im.laterality))
        if on_row is not None:
            on_row(k + 1, len(images))
    return MammoArrays.from_rows(xs, masks, ys, grades, vendors, splits, has, [""] * len(ys),
                                 contra=contralateral_rows(keys))
