"""Small, valid DICOM instances for the routing conformance tests.

WHY its own generator: the routing recipe is tested independently of the imaging phantoms (which
belong to the models and are large); what matters here is modality, SOP class, study membership and
who sent the instance. Images are tiny (64 x 64) so that the whole suite stays fast. Every value is
synthetic; patient names and ids are made up per test run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

MG_VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def _base(
    sop_class: str,
    modality: str,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    series_number: int,
    instance_number: int,
) -> Dataset:
    now = dt.datetime.now(dt.UTC)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "CONFORMANCE^SYNTHETIC"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "CONF" + study_uid[-8:]
    ds.StudyID = "1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Manufacturer = "cds-conformance"
    return ds


def _with_pixels(ds: Dataset, rows: int = 64, cols: int = 64) -> Dataset:
    rng = np.random.default_rng(int(ds.InstanceNumber))
    pixels = rng.integers(0, 4095, size=(rows, cols), dtype=np.uint16)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def mg_study(folder: Path, patient_id: str, study_uid: str | None = None) -> list[Path]:
    """A 4-view screening mammography study (R/L CC/MLO), one series, written under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    paths = []
    for i, (lat, view) in enumerate(MG_VIEWS, start=1):
        ds = _with_pixels(
            _base(
                MG_FOR_PRESENTATION,
                "MG",
                patient_id=patient_id,
                study_uid=study_uid,
                series_uid=series_uid,
                series_number=1,
                instance_number=i,
            )
        )
        ds.ImageLaterality = lat
        ds.ViewPosition = view
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        path = folder / f"mg_{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def ct_instance(folder: Path, patient_id: str, study_uid: str | None = None) -> Path:
    """One CT image: a modality the recipe must NOT route."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = _with_pixels(
        _base(
            CT_IMAGE,
            "CT",
            patient_id=patient_id,
            study_uid=study_uid or generate_uid(),
            series_uid=generate_uid(),
            series_number=1,
            instance_number=1,
        )
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    path = folder / "ct_1.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def result_sr(folder: Path, source: Dataset | Path, name: str = "result_sr.dcm") -> Path:
    """A minimal SR in the source's study, as the plugin's results would be (modality SR)."""
    from pydicom import dcmread

    src = dcmread(source, stop_before_pixels=True) if isinstance(source, Path) else source
    folder.mkdir(parents=True, exist_ok=True)
    ds = _base(
        COMPREHENSIVE_3D_SR,
        "SR",
        patient_id=str(src.PatientID),
        study_uid=str(src.StudyInstanceUID),
        series_uid=generate_uid(),
        series_number=900,
        instance_number=1,
    )
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    concept = Dataset()
    concept.CodeValue = "126000"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Imaging Measurement Report"
    ds.ConceptNameCodeSequence = [concept]
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def result_secondary_capture(folder: Path, source: Path, name: str = "result_sc.dcm") -> Path:
    """A secondary-capture image in the source's study sent back with modality OT (a result)."""
    from pydicom import dcmread

    src = dcmread(source, stop_before_pixels=True)
    folder.mkdir(parents=True, exist_ok=True)
    ds = _with_pixels(
        _base(
            SECONDARY_CAPTURE,
            "OT",
            patient_id=str(src.PatientID),
            study_uid=str(src.StudyInstanceUID),
            series_uid=generate_uid(),
            series_number=901,
            instance_number=1,
        )
    )
    ds.ConversionType = "WSD"
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path
