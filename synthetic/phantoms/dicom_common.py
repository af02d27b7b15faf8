"""DICOM building blocks shared by every phantom generator (MG, SM, US).

Each generator adds its modality-specific modules on top of :func:`base_dataset`, which fills the
modules every composite IOD needs (Patient, General Study, General Series, General Equipment, SOP
Common), and writes with :func:`save_dataset`, which adds a Part 10 file meta header. Keeping
these in one place means one fix when dciodvfy complains about a common attribute.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from cds.contracts.domain import PatientRef
from models.uids import derived_uid

MANUFACTURER = "breast-cds phantom"
SOFTWARE_VERSION = "1"


def new_uid(entropy: str | None = None) -> str:
    """A new DICOM UID; deterministic when ``entropy`` is given (seeded phantoms stay reproducible)."""
    if entropy is None:
        return generate_uid(prefix=None)
    return derived_uid(entropy)


def _da(d: date | datetime | str | None) -> str:
    if d is None:
        return "20260101"
    if isinstance(d, str):
        return d
    return d.strftime("%Y%m%d")


def base_dataset(
    patient: PatientRef,
    study_uid: str,
    series_uid: str,
    sop_class_uid: str,
    modality: str,
    series_number: int,
    instance_number: int,
    study_date: date | datetime | str | None = None,
    *,
    sop_instance_uid: str | None = None,
    accession_number: str = "",
    study_id: str = "1",
    manufacturer: str = MANUFACTURER,
    model_name: str = "phantom",
) -> Dataset:
    """A dataset with the Patient, Study, Series, Equipment and SOP Common modules filled.

    ``study_date`` (a date or ``YYYYMMDD``) defaults to a fixed date so that seeded output is
    byte-identical across runs. Pass ``sop_instance_uid`` for reproducible instance UIDs.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    # SOP Common
    ds.SOPClassUID = UID(sop_class_uid)
    ds.SOPInstanceUID = sop_instance_uid or new_uid()
    # Patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    if patient.issuer:
        ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex if patient.sex in ("M", "F", "O") else ""
    # General Study
    da = _da(study_date)
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = da
    ds.StudyTime = "090000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = study_id
    ds.AccessionNumber = accession_number
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = da
    ds.SeriesTime = "090000"
    # General Equipment
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model_name
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.DeviceSerialNumber = "0001"
    # General Image / instance level
    ds.InstanceNumber = instance_number
    ds.ContentDate = da
    ds.ContentTime = "090000"
    ds.InstanceCreationDate = da
    ds.InstanceCreationTime = "090000"
    return ds


def save_dataset(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write ``ds`` as a DICOM Part 10 file (preamble, file meta) with the given transfer syntax.

    For a compressed transfer syntax the caller must already have encapsulated PixelData.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "BREASTCDS_1"
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path
