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

from pydicom import config, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from cds.contracts.domain import PatientRef
from cds.contracts.uids import is_valid_uid, uid_problem
from cds.intake.structure import (
    STATUS_INSTANCE_UID_DIFFERS,
    STATUS_INVALID_UID,
    element_bounds_problem,
    image_value_problem,
    missing_pixels_problem,
    pixel_encoding_problem,
    tag_text,
    uid_problems,
    vr_problem,
)

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
    "1.2.840.10008.5.1.4.1.1.13.1.3": "MG",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "MG",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "MG",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
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


DX_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1")


def routing_modality(ds, sop_class: str) -> str:
    """The modality a study job is made for: the dataset's Modality, else the SOP class's.

    A Secondary Capture with Modality MG (digitized film, CBIS-DDSM) is thereby an MG study. A
    Digital X-Ray image of the breast (BodyPartExamined BREAST) is a mammogram too: MG.
    """
    modality = str(ds.get("Modality", "") or "").upper() or MODALITY_BY_SOP_CLASS.get(sop_class, "OT")
    if sop_class in DX_SOP_CLASSES and str(ds.get("BodyPartExamined", "") or "").upper() == "BREAST":
        return "MG"
    return modality


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
    except Exception as exc:  # the value may be patient data: name the tag and the error type only
        raise InstanceProblem(STATUS_CANNOT_PARSE,
                              f"cannot decode element {tag}: {type(exc).__name__}") from exc


def _parse(path: Path) -> tuple[object, str]:
    """Read the header with deferred bulk values; any parser failure is "cannot understand"."""
    config.settings.reading_validation_mode = config.IGNORE  # its warnings quote values (PHI)
    try:
        ds = dcmread(path, defer_size=8192)
        ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    except InvalidDicomError as exc:
        raise InstanceProblem(STATUS_CANNOT_PARSE, "cannot parse the data set: not DICOM "
                              f"({type(exc).__name__})") from exc
    except Exception as exc:  # pydicom raises many types on hostile input; never the value
        raise InstanceProblem(STATUS_CANNOT_PARSE, "cannot parse the data set: "
                              f"{type(exc).__name__} while reading the element stream") from exc
    if uid_problem(ts):
        raise InstanceProblem(STATUS_CANNOT_PARSE, f"Transfer Syntax UID (0002,0010) is not a valid UID: {uid_problem(ts)}")
    return ds, ts


def _check_structure(ds, ts: str, size: int) -> None:
    """Bounds, identity, VRs, UIDs, geometry and pixel encoding, in that order (first problem wins)."""
    found = element_bounds_problem(ds, size)
    if found is None and not any(k in ds for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")):
        found = (STATUS_CANNOT_PARSE, f"not a DICOM data set: none of SOP Class UID, SOP Instance UID "
                 f"or Study Instance UID among the {len(ds)} elements parsed")
    found = found or vr_problem(ds) or uid_problems(ds, ("SOPClassUID", "SOPInstanceUID"))
    found = found or image_value_problem(ds) or pixel_encoding_problem(ds, ts)
    if found:
        raise InstanceProblem(*found)


def _check_identity(ds, command_sop_class: str, command_sop_instance: str) -> tuple[str, str]:
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_uid:
        raise InstanceProblem(
            STATUS_MISSING_UID, "SOP Instance UID (0008,0018) is missing or empty"
        )
    if sop_uid != command_sop_instance:
        shown = command_sop_instance if is_valid_uid(command_sop_instance) else "(an invalid UID)"
        raise InstanceProblem(
            STATUS_INSTANCE_UID_DIFFERS,
            f"SOP Instance UID (0008,0018) {sop_uid} differs from the C-STORE request's "
            f"Affected SOP Instance UID {shown}",
        )
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class != command_sop_class:
        shown = command_sop_class if is_valid_uid(command_sop_class) else "(an invalid UID)"
        raise InstanceProblem(
            STATUS_SOP_CLASS_MISMATCH,
            f"SOP Class UID (0008,0016) {sop_class or '(missing)'} differs from the C-STORE "
            f"request's Affected SOP Class UID {shown}",
        )
    for keyword, tag in (("StudyInstanceUID", "(0020,000D)"), ("SeriesInstanceUID", "(0020,000E)")):
        if not ds.get(keyword):
            raise InstanceProblem(STATUS_MISSING_ATTRIBUTE, f"{keyword} {tag} is missing or empty")
    return sop_uid, sop_class


def _check_native_length(ds, ts: str, size: int) -> None:
    if PIXEL_DATA not in ds:
        return
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


def inspect_instance(
    path: Path, *, command_sop_class: str, command_sop_instance: str
) -> InstanceMeta:
    """Parse the header of a received file and verify it is consistent and complete.

    Every UID that later names a path or a row is validated here (PS3.5, ``cds.contracts.uids``).
    """
    size = path.stat().st_size
    ds, ts = _parse(path)
    try:
        _check_structure(ds, ts, size)
        sop_uid, sop_class = _check_identity(ds, command_sop_class, command_sop_instance)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            problem = uid_problem(str(ds.get(keyword)))
            if problem:
                raise InstanceProblem(STATUS_INVALID_UID, f"{tag_text(keyword)} is not a valid UID: {problem}")
        found = missing_pixels_problem(ds, sop_class)
        if found:
            raise InstanceProblem(*found)
        _check_native_length(ds, ts, size)
    except InstanceProblem:
        raise
    except Exception as exc:  # a decoder error on hostile input: still a precise refusal
        raise InstanceProblem(STATUS_CANNOT_PARSE, "cannot decode the data set: "
                              f"{type(exc).__name__} while checking its structure") from exc
    _decode_small_elements(ds)
    modality = routing_modality(ds, sop_class)
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
