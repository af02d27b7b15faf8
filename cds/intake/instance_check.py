"""Checks one received instance before it is accepted, without loading its pixel data.

A WSI level can be gigabytes, so the file is parsed with deferred reading: large values stay on
disk and only their offsets and lengths are read. Each problem maps to a specific DICOM status in
the "cannot understand" (Cxxx) or "does not match SOP class" (A9xx) range, with a message naming
the tag and what was expected, so the sending site can fix its data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from cds.contracts.domain import PatientRef

# Status codes (PS3.4 Annex B.2.3, Storage Service Class)
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_CANNOT_PARSE = 0xC000
STATUS_MISSING_UID = 0xC001
STATUS_PIXEL_LENGTH = 0xC002
STATUS_TRUNCATED = 0xC003
STATUS_MISSING_ATTRIBUTE = 0xC004
STATUS_PROCESSING_FAILURE = 0xC005

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = Tag(0x7FE0, 0x0010)

# SOP classes whose Modality the pipeline routes on when the dataset omits it.
MODALITY_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "MG",
    "1.2.840.10008.5.1.4.1.1.77.1.6": "SM",
    "1.2.840.10008.5.1.4.1.1.6.1": "US",
    "1.2.840.10008.5.1.4.1.1.3.1": "US",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88.34": "SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "SR",
    "1.2.840.10008.5.1.4.1.1.88.11": "SR",
    "1.2.840.10008.5.1.4.1.1.104.1": "DOC",
}


class InstanceProblem(Exception):
    """Why an instance is refused, with the DICOM status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class InstanceMeta:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    transfer_syntax_uid: str
    patient: PatientRef
    accession_number: str
    study_date: str


def _expected_native_length(ds) -> int | None:
    """Bytes that native Pixel Data must hold for the declared geometry (before even padding)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits == 1:
        n = math.ceil(rows * cols * frames * spp / 8)
    else:
        n = rows * cols * frames * spp * math.ceil(bits / 8)
    return n


def _decode_small_elements(ds) -> None:
    """Decode every element except bulk data, so a broken header fails at intake, not in a job.

    Values left on disk by the deferred read (pixel data, large private blobs) stay there:
    reading them would pull a multi-gigabyte slide level into memory.
    """
    try:
        for tag in list(ds.keys()):
            raw = ds.get_item(tag, keep_deferred=True)
            if tag == PIXEL_DATA or (isinstance(raw, RawDataElement) and raw.value is None):
                continue
            elem = ds[tag]
            if elem.VR == "SQ":
                for item in elem.value:
                    _decode_small_elements(item)
    except (ValueError, KeyError, TypeError, EOFError, OSError) as exc:
        raise InstanceProblem(STATUS_CANNOT_PARSE, f"cannot decode element {tag}: {exc}") from exc


def inspect_instance(
    path: Path, *, command_sop_class: str, command_sop_instance: str
) -> InstanceMeta:
    """Parse the header of a received file and verify it is consistent and complete."""
    size = path.stat().st_size
    try:
        ds = dcmread(path, defer_size=8192)
        ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError) as exc:
        raise InstanceProblem(STATUS_CANNOT_PARSE, f"cannot parse dataset: {exc}") from exc

    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_uid:
        raise InstanceProblem(
            STATUS_MISSING_UID, "SOP Instance UID (0008,0018) is missing or empty"
        )
    if sop_uid != command_sop_instance:
        raise InstanceProblem(
            STATUS_MISSING_UID,
            f"SOP Instance UID (0008,0018) {sop_uid} differs from the C-STORE request's "
            f"Affected SOP Instance UID {command_sop_instance}",
        )
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class != command_sop_class:
        raise InstanceProblem(
            STATUS_SOP_CLASS_MISMATCH,
            f"SOP Class UID (0008,0016) {sop_class or '(missing)'} differs from the C-STORE "
            f"request's Affected SOP Class UID {command_sop_class}",
        )
    for keyword, tag in (("StudyInstanceUID", "(0020,000D)"), ("SeriesInstanceUID", "(0020,000E)")):
        if not ds.get(keyword):
            raise InstanceProblem(STATUS_MISSING_ATTRIBUTE, f"{keyword} {tag} is missing or empty")

    if PIXEL_DATA in ds:
        elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
        length = elem.length if isinstance(elem, RawDataElement) else len(elem.value or b"")
        tell = getattr(elem, "value_tell", None)
        encapsulated = bool(ts) and UID(ts).is_encapsulated
        if length != UNDEFINED_LENGTH and tell is not None and tell + length > size:
            raise InstanceProblem(
                STATUS_TRUNCATED,
                f"Pixel Data (7FE0,0010) declares {length} bytes but the dataset ends after "
                f"{max(size - tell, 0)}: truncated",
            )
        if not encapsulated and not UID(ts).is_deflated and length != UNDEFINED_LENGTH:
            expected = _expected_native_length(ds)
            if expected is None:
                raise InstanceProblem(
                    STATUS_MISSING_ATTRIBUTE,
                    "Pixel Data present but Rows/Columns/BitsAllocated are missing or invalid",
                )
            if length not in (expected, expected + (expected % 2)):
                raise InstanceProblem(
                    STATUS_PIXEL_LENGTH,
                    f"Pixel Data (7FE0,0010) is {length} bytes; Rows {ds.Rows} x Columns "
                    f"{ds.Columns} x Samples {ds.get('SamplesPerPixel', 1)} x Frames "
                    f"{ds.get('NumberOfFrames', 1)} x BitsAllocated {ds.BitsAllocated} "
                    f"needs {expected}",
                )

    _decode_small_elements(ds)
    modality = str(ds.get("Modality", "") or "") or MODALITY_BY_SOP_CLASS.get(sop_class, "OT")
    return InstanceMeta(
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        modality=modality,
        transfer_syntax_uid=ts,
        patient=PatientRef(
            patient_id=str(ds.get("PatientID", "") or ""),
            issuer=str(ds.get("IssuerOfPatientID", "") or ""),
            name=str(ds.get("PatientName", "") or ""),
            birth_date=str(ds.get("PatientBirthDate", "") or ""),
            sex=str(ds.get("PatientSex", "") or ""),
        ),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
    )
