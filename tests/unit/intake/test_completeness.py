"""The content rule of completeness: four standard mammography views, read from attributes."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.intake.completeness import content_complete, mammography_complete


def _mg(path: Path, side: str, view: str, *, coded: bool = False) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageLaterality = side
    if coded:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator = "399368009", "SCT"
        item.CodeMeaning = "medio-lateral oblique"
        ds.ViewCodeSequence = [item]
    else:
        ds.ViewPosition = view
    ds.save_as(path, enforce_file_format=True)
    return path


def test_four_standard_views_are_complete_three_are_not(tmp_path: Path) -> None:
    four = [_mg(tmp_path / f"{s}{v}.dcm", s, v) for s, v in (("R", "CC"), ("L", "CC"), ("R", "MLO"))]
    assert not mammography_complete(four)
    four.append(_mg(tmp_path / "LMLO.dcm", "L", "MLO", coded=True))  # the view from its code
    assert mammography_complete(four)
    assert content_complete({"MG": four, "SR": []})


def test_unreadable_or_unlabelled_views_wait_and_other_modalities_have_no_rule(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    assert not mammography_complete([junk])
    assert content_complete({"SM": [junk]})
