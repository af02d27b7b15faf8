"""DICOM VL Whole Slide Microscopy writer for the slide phantom: one instance per pyramid level.

Each level is TILED_FULL with JPEG baseline tiles, shared functional groups with PixelSpacing, an
sRGB ICC profile in the Optical Path and a Specimen description, so that wsidicom opens it and
dciodvfy reports no errors.
"""

from __future__ import annotations

import io

import numpy as np
from highdicom.sr import CodedConcept
from PIL import Image, ImageCms
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import base_dataset

VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
MIN_LEVEL_SIZE = 512  # the lowest pyramid level is about this wide


def _srgb_icc() -> bytes:
    """An sRGB ICC profile with its creation date and profile ID zeroed, so output is reproducible.

    (An all-zero profile ID means "not computed", which the ICC specification allows.)
    """
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[24:36] = bytes(12)
    icc[84:100] = bytes(16)
    return bytes(icc)


def _jpeg_frames(level: np.ndarray, tile: int) -> tuple[list[bytes], int]:
    """JPEG-baseline frames of ``level`` in TILED_FULL order (row of tiles by row), and raw bytes."""
    rows, cols = level.shape[:2]
    frames = []
    for ty in range(0, rows, tile):
        for tx in range(0, cols, tile):
            t = level[ty : ty + tile, tx : tx + tile]
            if t.shape[0] != tile or t.shape[1] != tile:  # pad the image edge with glass
                pad = np.full((tile, tile, 3), 245, np.uint8)
                pad[: t.shape[0], : t.shape[1]] = t
                t = pad
            buf = io.BytesIO()
            Image.fromarray(t, "RGB").save(buf, format="JPEG", quality=90, subsampling=1)
            frames.append(buf.getvalue())
    return frames, len(frames) * tile * tile * 3


def _level_dataset(
    *,
    patient: PatientRef,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    dim_org_uid: str,
    specimen_uid: str,
    container_id: str,
    sop_uid: str,
    level_index: int,
    level: np.ndarray,
    tile: int,
    um_per_px: float,
    icc: bytes,
) -> Dataset:
    """The dataset of pyramid level ``level_index`` (0 = base), with its JPEG tiles encapsulated."""
    rows, cols = level.shape[:2]
    ds = base_dataset(
        patient,
        study_uid,
        series_uid,
        VL_WSI_SOP_CLASS,
        "SM",
        series_number=1,
        instance_number=level_index + 1,
        sop_instance_uid=sop_uid,
        model_name="slide phantom",
    )
    ds.SeriesDescription = "Synthetic H&E lymph node (phantom)"
    image_type = (
        ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        if level_index == 0
        else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    )
    ds.ImageType = image_type
    # Frame of Reference / Acquisition Context
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.AcquisitionContextSequence = Sequence()
    ds.AcquisitionDateTime = ds.StudyDate + "090000"
    ds.AcquisitionDuration = 60.0
    mm = um_per_px / 1000.0
    _set_wsm_image(ds, rows, cols, tile, mm)
    _set_functional_groups(ds, mm, image_type)
    _set_dimensions(ds, dim_org_uid)
    _set_optical_path(ds, icc)
    _set_specimen(ds, container_id, specimen_uid)
    _set_jpeg_pixel_data(ds, level, tile)
    return ds


def _set_wsm_image(ds: Dataset, rows: int, cols: int, tile: int, mm: float) -> None:
    """Whole Slide Microscopy Image: imaged volume, total pixel matrix, tile size (``mm`` per px)."""
    ds.ImagedVolumeWidth = round(cols * mm, 6)
    ds.ImagedVolumeHeight = round(rows * mm, 6)
    ds.ImagedVolumeDepth = 4.0
    ds.TotalPixelMatrixColumns = cols
    ds.TotalPixelMatrixRows = rows
    ds.TotalPixelMatrixFocalPlanes = 1
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.Rows = tile
    ds.Columns = tile
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.DimensionOrganizationType = "TILED_FULL"


def _set_functional_groups(ds: Dataset, mm: float, image_type: list[str]) -> None:
    """Multi-frame Functional Groups (shared only: TILED_FULL needs no per-frame positions)."""
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [round(mm, 9), round(mm, 9)]
    pm.SliceThickness = 0.004
    shared.PixelMeasuresSequence = Sequence([pm])
    ft = Dataset()
    ft.FrameType = image_type
    shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([ft])
    op_id = Dataset()
    op_id.OpticalPathIdentifier = "1"
    shared.OpticalPathIdentificationSequence = Sequence([op_id])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])


def _set_dimensions(ds: Dataset, dim_org_uid: str) -> None:
    """Multi-frame Dimension: tiles indexed by column and row position in the total pixel matrix."""
    org = Dataset()
    org.DimensionOrganizationUID = dim_org_uid
    ds.DimensionOrganizationSequence = Sequence([org])
    dims = []
    for pointer in (0x0048021E, 0x0048021F):  # column, row position in total pixel matrix
        d = Dataset()
        d.DimensionOrganizationUID = dim_org_uid
        d.DimensionIndexPointer = pointer
        d.FunctionalGroupPointer = 0x0048021A  # Plane Position (Slide) Sequence
        dims.append(d)
    ds.DimensionIndexSequence = Sequence(dims)


def _set_optical_path(ds: Dataset, icc: bytes) -> None:
    """Optical Path (brightfield, full spectrum, sRGB)."""
    ds.NumberOfOpticalPaths = 1
    op = Dataset()
    op.OpticalPathIdentifier = "1"
    op.OpticalPathDescription = "Brightfield"
    op.IlluminationTypeCodeSequence = Sequence([CodedConcept("111744", "DCM", "Brightfield illumination")])
    op.IlluminationColorCodeSequence = Sequence([CodedConcept("414298005", "SCT", "Full Spectrum")])
    op.ICCProfile = icc
    op.ColorSpace = "SRGB"
    op.ObjectiveLensPower = 20
    ds.OpticalPathSequence = Sequence([op])


def _set_specimen(ds: Dataset, container_id: str, specimen_uid: str) -> None:
    """Specimen: the slide (container) and the one lymph-node section on it."""
    ds.ContainerIdentifier = container_id
    ds.IssuerOfTheContainerIdentifierSequence = Sequence()
    ds.ContainerTypeCodeSequence = Sequence([CodedConcept("433466003", "SCT", "Microscope slide")])
    spec = Dataset()
    spec.SpecimenIdentifier = container_id + "-1"
    spec.SpecimenUID = specimen_uid
    spec.IssuerOfTheSpecimenIdentifierSequence = Sequence()
    spec.SpecimenShortDescription = "Lymph node section, H&E (synthetic)"
    spec.SpecimenPreparationSequence = Sequence()
    ds.SpecimenDescriptionSequence = Sequence([spec])


def _set_jpeg_pixel_data(ds: Dataset, level: np.ndarray, tile: int) -> None:
    """Pixel data: the level's JPEG-baseline tiles, encapsulated, with the compression ratio."""
    frames, raw_bytes = _jpeg_frames(level, tile)
    ds.NumberOfFrames = len(frames)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = round(raw_bytes / max(1, sum(len(f) for f in frames)), 2)
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"


def _pyramid(rgb: np.ndarray) -> list[np.ndarray]:
    levels = [rgb]
    while levels[-1].shape[0] > MIN_LEVEL_SIZE and levels[-1].shape[0] % 2 == 0:
        a = levels[-1]
        h, w = a.shape[0] // 2, a.shape[1] // 2
        down = a.reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3))
        levels.append(((down + 2) // 4).astype(np.uint8))
    return levels
