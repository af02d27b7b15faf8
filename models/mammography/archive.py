"""Mammograms as archives hold them: which instances are read, which are not, and their pixels.

Besides Digital Mammography X-Ray images, archives hold mammograms as Digital X-Ray images and
as Secondary Capture with Modality MG (digitized film, priors, public data sets such as CBIS-DDSM
as distributed in DICOM). All three are read. Tomosynthesis (Breast Tomosynthesis and Breast
Projection X-Ray images, ImageType TOMOSYNTHESIS, any multi-frame image), magnification and spot
compression views and implant-displaced views are recognised and reported as not analysed: the
model was trained on neither and would misread them.

Pixel values (:func:`decode_pixels`): the Modality LUT (rescale or LUT sequence) is applied; a
VOI LUT is applied when it is a non-linear one (a VOI LUT Sequence, or VOI LUT Function SIGMOID).
A LINEAR window centre/width is an affine map plus clipping to the display range: the network's
percentile normalisation (:func:`preprocess.prepare_image`) already removes the affine part, and
clipping to a display window only throws tissue contrast away, so it is not applied (this keeps
the network's input of a For Presentation image what it was trained on). MONOCHROME1 and a
Pixel Intensity Relationship Sign of -1 are inverted (``invert``). For Processing images whose
Pixel Intensity Relationship is LIN (proportional to exposure) get one documented, monotone
processing step so they look like presentation images: ``log(1 + v - min)``, which turns the
exponential attenuation law into values linear in attenuation, like a LOG presentation image;
percentile normalisation then scales it like every other image.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom

from cds.contracts.errors import InputError

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# SOP classes read as 2-D mammograms: class -> "for_presentation" / "for_processing"
READABLE_SOP_CLASSES = {
    MG_FOR_PRESENTATION: "for_presentation",
    MG_FOR_PROCESSING: "for_processing",
    DX_FOR_PRESENTATION: "for_presentation",
    DX_FOR_PROCESSING: "for_processing",
    SECONDARY_CAPTURE: "for_presentation",
}
TOMOSYNTHESIS_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image - For Processing",
}
# View modifiers (CID 4015) that change what the image shows: (scheme, code) -> reason
VIEW_MODIFIER_REASONS = {
    ("SCT", "399163009"): "magnification view", ("SRT", "R-102D6"): "magnification view",
    ("SCT", "399055006"): "spot compression view", ("SRT", "R-102D7"): "spot compression view",
    ("SCT", "399209000"): "implant-displaced view", ("SRT", "R-102D5"): "implant-displaced view",
}
_MEANING_REASONS = (("magnif", "magnification view"), ("spot", "spot compression view"),
                    ("implant displaced", "implant-displaced view"))
# words in ViewPosition / descriptions that name such views (ACR MQCM: M.. magnified, S.. spot, ..ID)
_TEXT_REASONS = (({"MAG", "MAGNIFICATION", "MAGNIFIED"}, "magnification view"),
                 ({"SPOT"}, "spot compression view"),
                 ({"EKLUND", "IMPLANT-DISPLACED", "ID"}, "implant-displaced view"))
_VIEW_POSITION_MODIFIED = re.compile(r"^(?:(M|S)(?:CC|MLO|ML|LM|XCCL|XCCM)|(?:CC|MLO|ML|LM)(ID))$")
TOMOSYNTHESIS = "tomosynthesis"


class MammoInputError(InputError):
    """A DICOM file cannot be used as a mammogram; the message names the file and the tag."""


def _words(value: object) -> set[str]:
    return {w for w in re.split(r"[^A-Z0-9-]+", str(value or "").upper()) if w}


def _view_modifier_reason(ds: pydicom.Dataset) -> tuple[str, str] | None:
    for view_item in ds.get("ViewCodeSequence", []) or []:
        for mod in view_item.get("ViewModifierCodeSequence", []) or []:
            key = (str(mod.get("CodingSchemeDesignator", "")), str(mod.get("CodeValue", "")))
            meaning = str(mod.get("CodeMeaning", "")).lower()
            reason = VIEW_MODIFIER_REASONS.get(key) or next(
                (r for word, r in _MEANING_REASONS if word in meaning), None)
            if reason:
                return reason, f"ViewModifierCodeSequence (0054,0222) {key[0]} {key[1]} {meaning!r}"
    m = _VIEW_POSITION_MODIFIED.match(str(ds.get("ViewPosition", "") or "").upper())
    if m:
        flag = m.group(1) or m.group(2)
        reason = {"M": "magnification view", "S": "spot compression view", "ID": "implant-displaced view"}[flag]
        return reason, f"ViewPosition (0018,5101) {ds.ViewPosition!r}"
    for keyword in ("SeriesDescription", "ImageComments", "ProtocolName"):
        words = _words(ds.get(keyword, ""))
        for names, reason in _TEXT_REASONS:
            if words & (names - {"ID"}):
                return reason, f"{keyword} names a {reason}"
    return None


def not_analysed_reason(ds: pydicom.Dataset) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``ds`` is a breast image the model must not read, else None.

    ``ds`` may be read without pixel data. Reasons: tomosynthesis (SOP class, ImageType or more
    than one frame), magnification / spot compression / implant-displaced view (CID 4015 view
    modifier codes, ACR MQCM view abbreviations or words in the descriptions), and derived
    images of a data set (crops and ROI masks, as CBIS-DDSM ships them).
    """
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class in TOMOSYNTHESIS_SOP_CLASSES:
        return TOMOSYNTHESIS, f"SOP Class {TOMOSYNTHESIS_SOP_CLASSES[sop_class]} ({sop_class})"
    image_type = [str(v).upper() for v in (ds.get("ImageType", []) or [])]
    if "TOMOSYNTHESIS" in image_type or "TOMO" in image_type:
        return TOMOSYNTHESIS, "ImageType (0008,0008) " + "\\".join(image_type)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return TOMOSYNTHESIS, f"NumberOfFrames (0028,0008) is {frames}: multi-frame, not a 2-D mammogram"
    modifier = _view_modifier_reason(ds)
    if modifier:
        return modifier
    description = str(ds.get("SeriesDescription", "") or "").lower()
    if "roi mask" in description or "cropped" in description:
        return "derived image (crop or ROI mask)", f"SeriesDescription (0008,103E) {description!r}"
    return None


def check_readable(ds: pydicom.Dataset, path: Path) -> str:
    """The image's intent ("for_presentation" / "for_processing"), or why it is no mammogram."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if sop_class not in READABLE_SOP_CLASSES:
        name = getattr(pydicom.uid.UID(sop_class), "name", sop_class) if sop_class else "(missing)"
        raise MammoInputError(
            f"{path}: SOP Class UID (0008,0016) {name} ({sop_class}) is not a mammography image class; "
            f"expected Digital Mammography X-Ray, Digital X-Ray or Secondary Capture with Modality MG")
    if sop_class == SECONDARY_CAPTURE and modality != "MG":
        raise MammoInputError(
            f"{path}: Secondary Capture with Modality (0008,0060) {modality or '(missing)'}; "
            "only Secondary Capture with Modality MG is read as a mammogram")
    if sop_class in (DX_FOR_PRESENTATION, DX_FOR_PROCESSING) and modality != "MG" \
            and str(ds.get("BodyPartExamined", "") or "").upper() != "BREAST":
        raise MammoInputError(
            f"{path}: Digital X-Ray image with Modality (0008,0060) {modality or '(missing)'} and "
            f"BodyPartExamined (0018,0015) {ds.get('BodyPartExamined', '') or '(missing)'}; expected MG or BREAST")
    intent = READABLE_SOP_CLASSES[sop_class]
    if str(ds.get("PresentationIntentType", "") or "").upper() == "FOR PROCESSING":
        intent = "for_processing"
    return intent


def decode_pixels(ds: pydicom.Dataset, path: Path, intent: str) -> tuple[np.ndarray, bool]:
    """Pixels with the Modality LUT (and a non-linear VOI LUT) applied, and whether to invert."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise MammoInputError(f"{path}: SamplesPerPixel (0028,0002) must be 1 for a mammogram, "
                              f"got {ds.SamplesPerPixel}")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise MammoInputError(f"{path}: cannot decode PixelData (transfer syntax {ts}): {exc}") from exc
    if pixels.ndim != 2:
        raise MammoInputError(f"{path}: expected one 2-D frame, got pixel array shape {pixels.shape}")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds or (slope, intercept) != (1.0, 0.0):
        pixels = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or str(ds.get("VOILUTFunction", "") or "").upper() == "SIGMOID":
        pixels = apply_voi_lut(pixels, ds)
    if intent == "for_processing" and str(ds.get("PixelIntensityRelationship", "") or "").upper() == "LIN":
        a = np.asarray(pixels, np.float32)
        pixels = np.log1p(a - float(a.min()))
    # The network reads attenuation (dense tissue) as high values. Pixel Intensity Relationship
    # Sign (PS3.3): +1 "lower pixel values correspond to less X-ray beam intensity", i.e. to more
    # attenuation, so the values are inverted; -1 "higher values correspond to less beam
    # intensity" is already attenuation-high. Photometric Interpretation only says how to display
    # the values, so it decides only when the sign is absent.
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    sign = ds.get("PixelIntensityRelationshipSign")
    invert = int(sign) == 1 if sign in (1, -1) else photometric == "MONOCHROME1"
    return pixels, invert
