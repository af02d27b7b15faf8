"""Structural checks of a received data set, run before anything of it is trusted.

Every check answers the first problem it finds as ``(status, reason)``; the reason names the tag
and what was expected, never an element's value (it may be patient data). The checks cover what a
parser would otherwise accept silently: values that run past the end of the stream, attributes the
project reads carried with another VR or several values, UIDs that break PS3.5, image geometry of
zero, and pixel data whose encoding contradicts the transfer syntax (native under JPEG, or
encapsulated under a native syntax).
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import UID

from cds.contracts.uids import uid_problem

# Status codes (PS3.4 Annex B.2.3: A7xx refused, out of resources; A9xx data set does not match
# SOP class; Cxxx cannot understand). C000-C005 predate this module and keep their meaning.
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_INVALID_UID = 0xC006
STATUS_WRONG_VR = 0xC007
STATUS_PIXEL_ENCODING = 0xC008
STATUS_INVALID_IMAGE_VALUE = 0xC009
STATUS_ELEMENT_PAST_END = 0xC003  # as STATUS_TRUNCATED: a value runs past the end
STATUS_INSTANCE_UID_DIFFERS = 0xC00A
STATUS_INTERNAL = 0xC0FF  # catch-all: a check itself failed; recorded like any refusal

UNDEFINED_LENGTH = 0xFFFFFFFF
PIXEL_DATA = Tag(0x7FE0, 0x0010)
ITEM_TAG_LE = b"\xfe\xff\x00\xe0"

Problem = tuple[int, str]

# The VRs (and single value) of every attribute the project reads from an instance.
EXPECTED_VR: dict[str, tuple[str, ...]] = {
    "SOPClassUID": ("UI",), "SOPInstanceUID": ("UI",), "StudyInstanceUID": ("UI",),
    "SeriesInstanceUID": ("UI",), "FrameOfReferenceUID": ("UI",),
    "PatientName": ("PN",), "PatientID": ("LO",), "IssuerOfPatientID": ("LO",),
    "PatientBirthDate": ("DA",), "PatientSex": ("CS",), "AccessionNumber": ("SH",),
    "StudyDate": ("DA",), "Modality": ("CS",), "BodyPartExamined": ("CS",),
    "ImageLaterality": ("CS",), "Laterality": ("CS",), "ViewPosition": ("CS",),
    "PhotometricInterpretation": ("CS",), "Rows": ("US",), "Columns": ("US",),
    "BitsAllocated": ("US",), "BitsStored": ("US",), "HighBit": ("US",),
    "PixelRepresentation": ("US",), "SamplesPerPixel": ("US",), "NumberOfFrames": ("IS",),
    "PlanarConfiguration": ("US",),
}
UID_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                  "FrameOfReferenceUID")
_TAG_TEXT = {kw: f"{kw} ({Tag(kw).group:04X},{Tag(kw).element:04X})" for kw in EXPECTED_VR}


def tag_text(keyword: str) -> str:
    """``PatientName (0010,0010)``: how a reason names an attribute."""
    return _TAG_TEXT.get(keyword) or keyword


def element_bounds_problem(ds: Any, size: int, depth: int = 0) -> Problem | None:
    """An element whose value (left on disk by the deferred read) runs past the end of the file."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if (isinstance(raw, RawDataElement) and length not in (None, UNDEFINED_LENGTH)
                and tell is not None and tell + length > size):
            name = keyword_for_tag(tag) or "element"
            return (STATUS_ELEMENT_PAST_END,
                    f"{name} ({tag.group:04X},{tag.element:04X}) declares {length} bytes but the "
                    f"data set ends {max(size - tell, 0)} bytes after its start: truncated or bogus length")
        if tag != PIXEL_DATA and getattr(raw, "VR", None) == "SQ" and depth < 8:
            for item in ds[tag].value or []:
                found = element_bounds_problem(item, size, depth + 1)
                if found:
                    return found
    return None


def vr_problem(ds: Any) -> Problem | None:
    """An attribute the project reads, carried with an unexpected VR or several values."""
    for keyword, allowed in EXPECTED_VR.items():
        if keyword not in ds:
            continue
        raw = ds.get_item(keyword, keep_deferred=True)
        raw_vr = getattr(raw, "VR", None)
        if raw_vr is not None and raw_vr not in allowed:
            return (STATUS_WRONG_VR, f"{tag_text(keyword)} is encoded as {raw_vr}; expected "
                    f"{'/'.join(allowed)}")
        elem = ds[keyword]
        if elem.VR not in allowed:
            return (STATUS_WRONG_VR, f"{tag_text(keyword)} is encoded as {elem.VR}; expected "
                    f"{'/'.join(allowed)}")
        if elem.VM > 1:
            return (STATUS_WRONG_VR, f"{tag_text(keyword)} holds {elem.VM} values; expected one")
    return None


def uid_problems(ds: Any, required: tuple[str, ...]) -> Problem | None:
    """A UID attribute that breaks PS3.5 9.1 (the value itself is never quoted)."""
    for keyword in UID_ATTRIBUTES:
        if keyword not in ds:
            continue
        value = ds[keyword].value
        if value in (None, "") and keyword not in required:
            continue
        problem = uid_problem(str(value) if isinstance(value, str) else value)
        if problem:
            return (STATUS_INVALID_UID, f"{tag_text(keyword)} is not a valid UID: {problem}")
    return None


def _int_value(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return int(value)


def image_value_problem(ds: Any) -> Problem | None:
    """Image geometry that no reader can use: zero rows or columns, impossible bit depths."""
    try:
        rows, cols = _int_value(ds, "Rows"), _int_value(ds, "Columns")
        bits, stored = _int_value(ds, "BitsAllocated"), _int_value(ds, "BitsStored")
        spp, frames = _int_value(ds, "SamplesPerPixel"), _int_value(ds, "NumberOfFrames")
    except (TypeError, ValueError, OverflowError):
        return (STATUS_INVALID_IMAGE_VALUE, "an image attribute (Rows, Columns, BitsAllocated, "
                "BitsStored, SamplesPerPixel, NumberOfFrames) is not a number")
    has_pixels = PIXEL_DATA in ds
    for keyword, value in (("Rows", rows), ("Columns", cols)):
        if (value is not None or has_pixels) and not value:
            return (STATUS_INVALID_IMAGE_VALUE, f"{tag_text(keyword)} is {value or 0} or missing; "
                    "an image needs at least one")
    if bits is not None and bits not in (1, 8, 16, 32, 64):
        return (STATUS_INVALID_IMAGE_VALUE, f"{tag_text('BitsAllocated')} is {bits}; expected 1, 8, 16, 32 or 64")
    if stored is not None and (stored < 1 or (bits is not None and stored > bits)):
        return (STATUS_INVALID_IMAGE_VALUE, f"{tag_text('BitsStored')} is {stored}; expected 1..BitsAllocated")
    if spp is not None and not 1 <= spp <= 4:
        return (STATUS_INVALID_IMAGE_VALUE, f"{tag_text('SamplesPerPixel')} is {spp}; expected 1..4")
    if frames is not None and frames < 1:
        return (STATUS_INVALID_IMAGE_VALUE, f"{tag_text('NumberOfFrames')} is {frames}; expected at least 1")
    return None


def pixel_encoding_problem(ds: Any, transfer_syntax: str) -> Problem | None:
    """Pixel Data whose encoding contradicts the transfer syntax it came with."""
    if PIXEL_DATA not in ds:
        return None
    raw = ds.get_item(PIXEL_DATA, keep_deferred=True)
    vr = getattr(raw, "VR", None)
    if vr not in (None, "OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return (STATUS_WRONG_VR, f"Pixel Data (7FE0,0010) is encoded as {vr}; expected OB or OW")
    length = raw.length if isinstance(raw, RawDataElement) else len(raw.value or b"")
    undefined = length == UNDEFINED_LENGTH or bool(getattr(raw, "is_undefined_length", False))
    encapsulated = UID(transfer_syntax).is_encapsulated
    if encapsulated and not undefined:
        return (STATUS_PIXEL_ENCODING, f"Pixel Data (7FE0,0010) is native ({length} bytes, defined "
                f"length) but transfer syntax {transfer_syntax} requires encapsulated fragments")
    if not encapsulated and undefined:
        return (STATUS_PIXEL_ENCODING, "Pixel Data (7FE0,0010) is encapsulated (undefined length) "
                f"but transfer syntax {transfer_syntax} is native")
    if encapsulated:
        head = raw.value[:4] if isinstance(raw.value, (bytes, bytearray)) else b""
        if head and head != ITEM_TAG_LE:
            return (STATUS_PIXEL_ENCODING, "encapsulated Pixel Data (7FE0,0010) does not start "
                    "with an item (Basic Offset Table)")
    return None


NON_IMAGE_CLASS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.104.")


def missing_pixels_problem(ds: Any, sop_class: str) -> Problem | None:
    """An image storage instance without Pixel Data (Type 1): a truncation at an element boundary."""
    if PIXEL_DATA in ds or sop_class.startswith(NON_IMAGE_CLASS_PREFIXES):
        return None
    return (0xC004, "Pixel Data (7FE0,0010) is missing; it is required for an image storage SOP "
            "class (truncated before the pixels?)")
