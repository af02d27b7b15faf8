"""CBIS-DDSM read in its own layout: description CSVs + DICOM tree of SC MG full images, crops
and ROI masks (RLE), with the folder names of the NBIA downloader or of the CSV paths."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from cds.contracts.domain import MAMMO_CLASSES
from models.mammography.training import cbis_ddsm
from synthetic.phantoms.mammography import synthesize_exam
from tests.unit.models.mammography.archive_fixtures import burn_label, sc_mammogram

COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
           "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
           "image file path", "cropped image file path", "ROI mask file path"]


def _image(root: Path, name: str, pixels: np.ndarray, csv_style: bool, description: str,
           series: str | None = None, study: str | None = None, file: str = "1-1.dcm") -> str:
    """Write one SC MG file; return the path the CSV names (study/series UIDs as folders)."""
    study, series = study or generate_uid(), series or generate_uid()
    rel = f"{name}/{study}/{series}/000000.dcm"
    target = root / rel if csv_style else root / "CBIS-DDSM" / name / "07-20-2016-DDSM-1" / f"1.0-{description}" / file
    sc_mammogram(target, pixels, patient_id=name, description=description, StudyInstanceUID=study,
                 SeriesInstanceUID=series)
    return rel


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cbis")
    exam = synthesize_exam(9, 256, 208, force_label="invasive")
    views = {(v.laterality, v.view): v for v in exam.views}
    rows = []
    cases = [("P_00001", "L", "CC", "mass", "MALIGNANT", "Mass-Training", "train", False),
             ("P_00001", "L", "CC", "mass", "BENIGN", "Mass-Training", "train", False),  # 2nd abnormality
             ("P_00002", "R", "MLO", "mass", "BENIGN_WITHOUT_CALLBACK", "Mass-Training", "train", True),
             ("P_00003", "L", "MLO", "calcification", "MALIGNANT", "Calc-Test", "test", True)]
    full_paths: dict[str, str] = {}
    for k, (pid, lat, view, kind, pathology, prefix, _split, csv_style) in enumerate(cases, start=1):
        v = views[(lat, view)]
        name = f"{prefix}_{pid}_{'LEFT' if lat == 'L' else 'RIGHT'}_{view}"
        if name not in full_paths:
            full_paths[name] = _image(root, name, burn_label(v.pixels, lat == "R"), csv_style, "full mammogram images")
        mask = np.zeros_like(v.pixels)
        mask[100 + 10 * k:130 + 10 * k, 60:90] = 255
        series, study = generate_uid(), generate_uid()
        crop_rel = _image(root, f"{name}_{k}", v.pixels[90:150, 50:100].copy(), csv_style, "cropped images",
                          series, study, "1-1.dcm")
        roi_rel = _image(root, f"{name}_{k}", mask, False, "ROI mask images", series, study, "1-2.dcm")
        rows.append({"patient_id": pid, "breast_density": "2", "left or right breast": "LEFT" if lat == "L" else "RIGHT",
                     "image view": view, "abnormality id": str(k), "abnormality type": kind,
                     "mass shape": "OVAL", "mass margins": "CIRCUMSCRIBED", "assessment": "4",
                     "pathology": pathology, "subtlety": "3", "image file path": full_paths[name],
                     "cropped image file path": crop_rel, "ROI mask file path": roi_rel})
    labels = root / "csv"
    labels.mkdir()
    for fname, sel in (("mass_case_description_train_set.csv", "train"), ("calc_case_description_test_set.csv", "test")):
        with (labels / fname).open("w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            w.writeheader()
            w.writerows(r for r, c in zip(rows, cases) if c[6] == sel)
    return root, labels


def test_descriptions_to_label_rows(layout) -> None:
    _, labels = layout
    assert cbis_ddsm.is_cbis_ddsm(labels) and cbis_ddsm.is_cbis_ddsm(labels / "mass_case_description_train_set.csv")
    images = {im.patient_id: im for im in cbis_ddsm.read_descriptions(labels)}
    assert len(images) == 3
    assert images["P_00001"].label == "invasive" and len(images["P_00001"].mask_paths) == 2  # most severe
    assert images["P_00002"].label == "benign"
    assert images["P_00003"].label == "in_situ" and images["P_00003"].split == "test"
    assert (images["P_00002"].laterality, images["P_00002"].view) == ("R", "MLO")


def test_label_mapping_is_explicit() -> None:
    assert cbis_ddsm.label_of("MALIGNANT", "mass", "x") == "invasive"
    assert cbis_ddsm.label_of("MALIGNANT", "calcification", "x") == "in_situ"
    assert cbis_ddsm.label_of("BENIGN_WITHOUT_CALLBACK", "mass", "x") == "benign"
    with pytest.raises(ValueError, match="pathology 'UNKNOWN'"):
        cbis_ddsm.label_of("UNKNOWN", "mass", "x")


def test_arrays_from_the_dicom_tree(layout) -> None:
    root, labels = layout
    data = cbis_ddsm.cbis_arrays(root, labels)
    assert len(data) == 3
    assert sorted(MAMMO_CLASSES[i] for i in data.y) == ["benign", "in_situ", "invasive"]
    assert data.has_mask.all() and all(m.sum() > 0 for m in data.mask)
    assert set(data.split) <= {"train", "calibration", "test"} and "test" in set(data.split)
    assert data.x.shape[1:] == (2, 256, 208) and np.isfinite(data.x).all()


def test_missing_file_names_the_path(layout, tmp_path: Path) -> None:
    _, labels = layout
    with pytest.raises(FileNotFoundError, match="image file path"):
        cbis_ddsm.cbis_arrays(tmp_path, labels)


def test_cds_train_mammography_on_the_cbis_ddsm_layout(tmp_path: Path) -> None:
    """`cds train mammography` as a user runs it on CBIS-DDSM: its CSV folder and its DICOM tree."""
    from models.mammography.training.train import train_from_folder

    root = tmp_path / "cbis"
    exam = synthesize_exam(13, 256, 208, force_label="invasive")
    views = {(v.laterality, v.view): v for v in exam.views}
    train_rows, test_rows = [], []
    for k in range(10):  # 8 training patients (80/20 by patient -> calibration), 2 test patients
        lat, view = (("L", "CC"), ("R", "MLO"), ("R", "CC"), ("L", "MLO"))[k % 4]
        kind, prefix = ("calcification", "Calc-Test") if k >= 8 else ("mass", "Mass-Training")
        name = f"{prefix}_P_{k:05d}_{'LEFT' if lat == 'L' else 'RIGHT'}_{view}"
        pixels = views[(lat, view)].pixels
        full = _image(root, name, pixels, True, "full mammogram images")
        mask = np.zeros_like(pixels)
        mask[100:140, 60:100] = 255
        series, study = generate_uid(), generate_uid()
        crop = _image(root, f"{name}_1", pixels[90:150, 50:110].copy(), True, "cropped images", series, study)
        roi = _image(root, f"{name}_1", mask, False, "ROI mask images", series, study, "1-2.dcm")
        row = {"patient_id": f"P_{k:05d}", "breast_density": "2",
               "left or right breast": "LEFT" if lat == "L" else "RIGHT", "image view": view,
               "abnormality id": "1", "abnormality type": kind, "mass shape": "OVAL",
               "mass margins": "CIRCUMSCRIBED", "assessment": "4",
               "pathology": ("MALIGNANT", "BENIGN")[k % 2], "subtlety": "3", "image file path": full,
               "cropped image file path": crop, "ROI mask file path": roi}
        (test_rows if k >= 8 else train_rows).append(row)
    labels = tmp_path / "csv"
    labels.mkdir()
    for fname, rows in (("mass_case_description_train_set.csv", train_rows),
                        ("calc_case_description_test_set.csv", test_rows)):
        with (labels / fname).open("w", newline="") as fh:
            w = csv.DictWriter(fh, COLUMNS)
            w.writeheader()
            w.writerows(rows)
    card = train_from_folder(root, labels, tmp_path / "out", epochs=1, progress=False)
    assert (tmp_path / "out" / "mammography.onnx").is_file() and card.synthetic_trained is False
    assert card.metrics["n_test_images"] == 2 and card.metrics["n_calibration_images"] >= 1
    assert "csv" in card.training_data  # the CSV folder it was trained from is named in the card
