"""Digital Mammography X-Ray Image datasets (For Presentation or For Processing) for the phantom.

:func:`mg_dataset` fills the common modules with :func:`base_dataset` and adds the DX Series,
DX/Mammography Image, positioner and exposure, Image Pixel and DX Detector attributes.
"""

from __future__ import annotations

import numpy as np
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import base_dataset
from synthetic.phantoms.mammo_spec import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    PATIENT_ORIENTATION,
    VIEW_CODES,
    RenderedView,
    Vendor,
)


def mg_dataset(pixels: np.ndarray, *, patient: PatientRef, study_uid: str, series_uid: str,
               sop_uid: str, series_number: int, instance_number: int, laterality: str, view: str,
               vendor: Vendor, pixel_spacing_mm: float, for_processing: bool = False,
               study_date: str | None = None) -> Dataset:
    """A Digital Mammography X-Ray Image dataset (For Presentation or For Processing)."""
    sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
    ds = base_dataset(patient, study_uid, series_uid, sop_class, "MG", series_number,
                      instance_number, study_date, sop_instance_uid=sop_uid,
                      manufacturer=f"breast-cds phantom {vendor.name}",
                      model_name=f"phantom-{vendor.name}")
    ds.StudyDescription = "Synthetic screening mammography (phantom)"
    ds.SeriesDescription = "For Processing" if for_processing else "For Presentation"
    ds.BodyPartExamined = "BREAST"
    # DX Series
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"
    _set_mammography_image(ds, laterality, view)
    _set_acquisition(ds)
    _set_image_pixel(ds, pixels, vendor, for_processing)
    _set_dx_detector(ds, pixel_spacing_mm)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    return ds


def _set_mammography_image(ds: Dataset, laterality: str, view: str) -> None:
    """General Image / DX Image / Mammography Image: laterality, view codes, positioner."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.AcquisitionDate = ds.ContentDate
    ds.AcquisitionTime = ds.ContentTime
    ds.PatientOrientation = PATIENT_ORIENTATION[(laterality, view)]
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    ds.AnatomicRegionSequence = Sequence([CodedConcept("76752008", "SCT", "Breast")])
    view_item = CodedConcept(*VIEW_CODES[view])
    view_item.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([view_item])
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = 0 if view == "CC" else (45 if laterality == "R" else -45)


def _set_acquisition(ds: Dataset) -> None:
    """Fixed geometry, compression and exposure of the simulated acquisition."""
    ds.DistanceSourceToDetector = 650
    ds.DistanceSourceToPatient = 630
    ds.EstimatedRadiographicMagnificationFactor = round(650 / 630, 4)
    ds.BodyPartThickness = 50
    ds.CompressionForce = 100
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.KVP = 29
    ds.ExposureTime = 1000
    ds.XRayTubeCurrent = 100
    ds.Exposure = 100
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = ["RHODIUM"]
    ds.FilterThicknessMinimum = 0.05
    ds.FilterThicknessMaximum = 0.05
    ds.FocalSpots = 0.3
    ds.Grid = "NONE"
    ds.EntranceDoseInmGy = 3.0
    ds.OrganDose = 1.5
    ds.AcquisitionContextSequence = Sequence([])


def _set_image_pixel(ds: Dataset, pixels: np.ndarray, vendor: Vendor, for_processing: bool) -> None:
    """Image Pixel description (not the data), intensity relationship, rescale and VOI window."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = vendor.bits_stored
    ds.HighBit = vendor.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN" if for_processing else "LOG"
    # presentation pixels are high where attenuation is high (-1); the For Processing version is
    # inverted, low where attenuation is high (+1); PS3.3 C.8.11.4.1.1
    ds.PixelIntensityRelationshipSign = 1 if for_processing else -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    full = (1 << vendor.bits_stored) - 1
    if not for_processing:
        ds.WindowCenter = round(full * 0.45)
        ds.WindowWidth = round(full * 0.8)
        ds.VOILUTFunction = "LINEAR"


def _set_dx_detector(ds: Dataset, pixel_spacing_mm: float) -> None:
    """DX Detector: pixel spacing and the detector / field-of-view size (needs Rows, Columns)."""
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Nominal detector pitch"
    ds.DetectorActiveShape = "RECTANGLE"
    ds.DetectorActiveDimensions = [round(ds.Rows * pixel_spacing_mm, 2), round(ds.Columns * pixel_spacing_mm, 2)]
    ds.FieldOfViewShape = "RECTANGLE"
    ds.FieldOfViewDimensions = [round(ds.Rows * pixel_spacing_mm), round(ds.Columns * pixel_spacing_mm)]


def pixel_spacing_for(rows: int) -> float:
    """Nominal pixel pitch keeping a ~29 cm field of view (0.07 mm at 4096 rows)."""
    return round(0.07 * 4096 / rows, 4)


def _for_processing_pixels(view: RenderedView) -> np.ndarray:
    """A linear-raw-like version: inverted (higher attenuation gives lower values)."""
    full = (1 << view.vendor.bits_stored) - 1
    return (full - view.pixels.astype(np.int32)).clip(0, full).astype(np.uint16)
