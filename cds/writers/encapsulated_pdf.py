"""The clinician PDF as a DICOM Encapsulated PDF object, in the source study (optional output).

Written with pydicom (highdicom has no Encapsulated PDF class); the patient and study modules are
copied from a source image so that the PACS files it with the study it describes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from cds.contracts.domain import NOT_FOR_CLINICAL_USE, ModelIdentity
from cds.writers.common import SERIES_NUMBER, add_contributing_equipment, derived_uid

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_COPY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
         "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
         "AccessionNumber", "SpecificCharacterSet")


def encapsulated_pdf(pdf: bytes, source: Dataset, models: list[ModelIdentity], key: str,
                     when: datetime) -> Dataset:
    ds = Dataset()
    for kw in _COPY:
        if kw in source:
            setattr(ds, kw, source.data_element(kw).value)
    for kw in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
               "PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        if kw not in ds:
            setattr(ds, kw, "")
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = derived_uid(key, "instance")
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = derived_uid(key, "series")
    ds.SeriesNumber = SERIES_NUMBER["pdf"]
    ds.SeriesDescription = "AI decision-support report (PDF)"
    ds.Manufacturer = models[0].manufacturer[:64] if models else "breast-cds open-source project"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    synthetic = any(m.synthetic_trained for m in models)
    ds.DocumentTitle = ("Breast CDS report" + (" - " + NOT_FOR_CLINICAL_USE if synthetic else ""))[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = pdf if len(pdf) % 2 == 0 else pdf + b"\x00"
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(pdf)
    add_contributing_equipment(ds, models, when)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path
