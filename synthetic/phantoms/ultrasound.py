"""Seeded B-mode breast ultrasound phantom (Ultrasound Image Storage) plus its written report.

What it draws, and why: fully developed speckle (Rayleigh-distributed amplitude, log-compressed)
over layered tissue (skin line, fat lobules, fibroglandular band, pectoralis), and one
hypoechoic lesion whose BI-RADS features follow a latent risk: a higher ``latent_risk`` makes
the lesion more irregular (spiculated margin), more often taller-than-wide, darker, and casts a
posterior acoustic shadow, while low risk gives an oval, parallel, circumscribed lesion with
posterior enhancement. The report text states the same descriptors, so image features, report
lexicon and latent risk agree, which is what the ultrasound branch of the recurrence model needs
to learn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from pydicom.dataset import Dataset
from pydicom.uid import UID
from scipy import ndimage

from cds.contracts.domain import PatientRef
from synthetic.phantoms.dicom_common import base_dataset, new_uid, save_dataset

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
ROWS, COLUMNS = 256, 320
PIXEL_SPACING_MM = 0.2  # 64 mm wide field of view


class UltrasoundTruth(BaseModel):
    path: Path
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    lesion_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    latent_risk: float
    report_text: str
    descriptors: dict[str, str | float]


def _lesion_mask(rng: np.random.Generator, cy: float, cx: float, ry: float, rx: float,
                 irregularity: float, spicules: int) -> np.ndarray:
    """Star-shaped lesion: an ellipse whose radius is modulated by harmonics and spicules."""
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS].astype(float)
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    r = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    mod = np.ones_like(theta)
    for k in (3, 5, 7):
        mod += irregularity * rng.uniform(0.05, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    if spicules:
        phases = rng.uniform(0, 2 * np.pi, spicules)
        for p in phases:
            mod += 0.35 * np.exp(-((np.angle(np.exp(1j * (theta - p)))) ** 2) / 0.004)
    return r <= mod


def _report(desc: dict[str, str | float]) -> str:
    posterior = {"enhancement": "posterior acoustic enhancement", "shadowing": "posterior acoustic shadowing",
                 "none": "no posterior acoustic features"}[str(desc["posterior"])]
    orientation = "parallel to the skin" if desc["orientation"] == "parallel" else "not parallel (taller than wide)"
    calc = "Echogenic foci consistent with calcifications are seen within the mass." if desc["calcifications"] == "yes" \
        else "No calcifications."
    return (
        f"Targeted ultrasound of the breast. There is {'an' if desc['shape'] == 'oval' else 'an'} {desc['shape']}, {desc['echo']} mass, "
        f"{orientation}, with {desc['margin']} margins, measuring "
        f"{desc['size_x_mm']:.0f} x {desc['size_y_mm']:.0f} mm, with {posterior}. {calc} "
        f"Assessment: BI-RADS {desc['birads']}."
    )


def generate_ultrasound(
    out_dir: Path,
    seed: int,
    patient: PatientRef,
    *,
    study_uid: str | None = None,
    latent_risk: float = 0.0,
) -> UltrasoundTruth:
    """Write one US image (``<out_dir>/us_<seed>.dcm``) and return its truth and report text."""
    rng = np.random.default_rng(seed)
    z = float(latent_risk)
    features = _draw_features(rng, z)
    yy, xx, tissue = _background_tissue(rng)
    lesion = _place_lesion(rng, z, features)
    posterior = _insert_lesion(rng, tissue, yy, xx, lesion, z, features)
    pixels = _speckle_image(rng, tissue, yy)

    ys, xs = np.nonzero(lesion.mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    desc = _descriptors(features, posterior, lesion)

    study_uid = study_uid or new_uid(f"us-study-{seed}")
    series_uid = new_uid(f"us-series-{seed}-{study_uid}")
    sop_uid = new_uid(f"us-sop-{seed}-{study_uid}")
    ds = _us_dataset(patient, study_uid, series_uid, sop_uid, pixels)
    path = save_dataset(ds, Path(out_dir) / f"us_{seed}.dcm")
    return UltrasoundTruth(path=path, study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_uid,
                           lesion_box=box, latent_risk=z, report_text=_report(desc), descriptors=desc)


@dataclass(frozen=True)
class _Features:
    """Which suspicious BI-RADS features the lesion shows (each more likely at higher risk)."""

    irregular: bool
    taller: bool
    shadow: bool
    calcs: bool
    spicules: int


@dataclass(frozen=True)
class _Lesion:
    """The lesion's size (mm), half-axes and centre (pixels) and its mask."""

    size_x: float
    size_y: float
    rx: float
    ry: float
    cx: float
    cy: float
    mask: np.ndarray


def _draw_features(rng: np.random.Generator, z: float) -> _Features:
    """Draw each suspicious feature with a probability that rises with the latent risk ``z``."""
    p_bad = 1.0 / (1.0 + np.exp(-1.5 * z))  # probability of each suspicious feature
    irregular = rng.random() < p_bad
    taller = rng.random() < 0.8 * p_bad
    shadow = rng.random() < p_bad
    calcs = rng.random() < 0.6 * p_bad
    spicules = int(rng.integers(6, 12)) if (irregular and rng.random() < p_bad) else 0
    return _Features(irregular=irregular, taller=taller, shadow=shadow, calcs=calcs, spicules=spicules)


def _background_tissue(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates (yy, xx) and the layered tissue's mean echogenicity, before speckle."""
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS].astype(float)
    tissue = np.full((ROWS, COLUMNS), 0.55)
    tissue[yy < 12] = 1.0  # skin
    fat = ndimage.gaussian_filter(rng.standard_normal((ROWS, COLUMNS)), 12) > 0.15
    tissue[(yy >= 12) & (yy < 70) & fat] = 0.35
    band = (yy > 70) & (yy < 200 + 10 * np.sin(xx / 40))
    tissue[band] = 0.75
    tissue[yy >= 215] = 0.5  # pectoralis
    return yy, xx, tissue


def _place_lesion(rng: np.random.Generator, z: float, f: _Features) -> _Lesion:
    """Size (growing with risk), shape and position of the lesion, and its mask."""
    size_x = float(np.clip(rng.normal(14 + 4 * max(z, -1.0), 3), 6, 24))  # mm, grows with risk
    size_y = size_x * (rng.uniform(1.05, 1.3) if f.taller else rng.uniform(0.5, 0.8))
    rx, ry = size_x / PIXEL_SPACING_MM / 2, size_y / PIXEL_SPACING_MM / 2
    cx = rng.uniform(rx + 20, COLUMNS - rx - 20)
    cy_lo = max(ry + 40, 80)
    cy = rng.uniform(cy_lo, max(cy_lo + 1, min(ROWS - ry - 20, 180)))
    mask = _lesion_mask(rng, cy, cx, ry, rx, 1.2 if f.irregular else 0.3, f.spicules)
    return _Lesion(size_x=size_x, size_y=size_y, rx=rx, ry=ry, cx=cx, cy=cy, mask=mask)


def _insert_lesion(rng: np.random.Generator, tissue: np.ndarray, yy: np.ndarray, xx: np.ndarray,
                   lesion: _Lesion, z: float, f: _Features) -> str:
    """Darken the lesion, add its posterior feature and calcifications (in place); return the feature."""
    mask = lesion.mask
    lesion_level = 0.18 - 0.06 * np.tanh(z)
    tissue[mask] = lesion_level
    below = (yy > lesion.cy) & (np.abs(xx - lesion.cx) < lesion.rx * 0.8) & ~mask
    posterior = "shadowing" if f.shadow else ("enhancement" if rng.random() > 0.3 else "none")
    if posterior == "shadowing":
        tissue[below] *= 0.35
    elif posterior == "enhancement":
        tissue[below] *= 1.45
    if f.calcs:
        ys, xs = np.nonzero(mask)
        for k in rng.choice(len(ys), size=min(6, len(ys)), replace=False):
            tissue[max(ys[k] - 1, 0):ys[k] + 1, max(xs[k] - 1, 0):xs[k] + 1] = 1.4
    return posterior


def _speckle_image(rng: np.random.Generator, tissue: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Speckle over the smoothed tissue, depth attenuation and log compression to uint8 pixels."""
    tissue = ndimage.gaussian_filter(tissue, 1.2)
    # Speckle: Rayleigh amplitude from a complex Gaussian field, smoothed to a ~3-pixel cell.
    field = rng.standard_normal((ROWS, COLUMNS)) + 1j * rng.standard_normal((ROWS, COLUMNS))
    field = ndimage.gaussian_filter(field.real, (1.0, 2.0)) + 1j * ndimage.gaussian_filter(field.imag, (1.0, 2.0))
    amplitude = tissue * np.abs(field) / 0.6
    depth_gain = 1.0 - 0.25 * yy / ROWS  # time-gain compensation leaves some attenuation
    image = np.log1p(8.0 * amplitude * depth_gain) / np.log1p(8.0 * 2.5)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _descriptors(f: _Features, posterior: str, lesion: _Lesion) -> dict[str, str | float]:
    """The BI-RADS descriptors the report states; the assessment counts the suspicious features."""
    score = int(f.irregular) + int(f.taller) + int(f.shadow) + int(f.calcs) + int(f.spicules > 0)
    birads = ["3", "4A", "4B", "4C", "5", "5"][score]
    margin = "spiculated" if f.spicules else ("indistinct" if f.irregular else "circumscribed")
    return {
        "shape": "irregular" if f.irregular else "oval",
        "orientation": "not_parallel" if f.taller else "parallel",
        "margin": margin,
        "echo": "hypoechoic",
        "posterior": posterior,
        "calcifications": "yes" if f.calcs else "no",
        "size_x_mm": round(lesion.size_x, 1),
        "size_y_mm": round(lesion.size_y, 1),
        "birads": birads,
    }


def _us_dataset(patient: PatientRef, study_uid: str, series_uid: str, sop_uid: str,
                pixels: np.ndarray) -> Dataset:
    """An Ultrasound Image dataset holding ``pixels``, with one calibrated B-mode region."""
    ds = base_dataset(patient, study_uid, series_uid, US_IMAGE_STORAGE, "US", 1, 1,
                      sop_instance_uid=sop_uid, model_name="breast US phantom")
    # US Image module + Image Pixel
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels.tobytes()
    ds.BodyPartExamined = "BREAST"
    ds.Laterality = "R"  # General Series
    ds.PatientOrientation = ["", ""]
    # US Region Calibration: one B-mode region with physical spacing in cm.
    region = Dataset()
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = COLUMNS - 1, ROWS - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = PIXEL_SPACING_MM / 10.0
    region.PhysicalDeltaY = PIXEL_SPACING_MM / 10.0
    region.ReferencePixelX0, region.ReferencePixelY0 = 0, 0
    ds.SequenceOfUltrasoundRegions = [region]
    ds.SOPClassUID = UID(US_IMAGE_STORAGE)
    return ds


def generate_lesion_sr(
    truth: UltrasoundTruth,
    out_dir: Path,
    *,
    box: tuple[float, float, float, float] | None = None,
    observer_name: str = "Phantom^Sonographer",
) -> Path:
    """Write a TID 1500 Measurement Report SR marking the lesion on the phantom US image.

    What a sonographer's reporting tool would send: one Planar ROI measurement group (TID 1410)
    whose Image Region is a closed POLYLINE rectangle around ``box`` (default: the phantom's true
    lesion box) on the US image ``truth.path``, with the lesion's long axis as a measurement.
    The SR joins the image's study in its own series; the file is
    ``<out_dir>/us_sr_<SOP Instance UID suffix>.dcm``. Returns the path. Valid per dciodvfy.
    """
    import highdicom as hd
    import pydicom
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    from synthetic.phantoms.dicom_common import MANUFACTURER
    from synthetic.phantoms.dicom_common import save_dataset as _save

    image = pydicom.dcmread(truth.path)
    x0, y0, x1, y1 = box if box is not None else truth.lesion_box
    rectangle = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=rectangle,
                               source_image=hd.sr.SourceImageForRegion.from_source_image(image))
    long_axis_mm = max(x1 - x0, y1 - y0) * PIXEL_SPACING_MM
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(f"us-sr-track-{truth.sop_instance_uid}"),
                                                     identifier="lesion 1"),
        referenced_region=region,
        finding_type=CodedConcept("4147007", "SCT", "Mass"),
        measurements=[hd.sr.Measurement(name=codes.SCT.LongAxis, value=float(long_axis_mm),
                                        unit=codes.UCUM.Millimeter)],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=observer_name))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=CodedConcept("16310003", "SCT", "Diagnostic ultrasonography"),
        imaging_measurements=[group], title=codes.cid7021.ImagingMeasurementReport)
    sr_uid = new_uid(f"us-sr-{truth.sop_instance_uid}-{(x0, y0, x1, y1)}")
    sr = hd.sr.Comprehensive3DSR(
        evidence=[image], content=report[0],
        series_instance_uid=new_uid(f"us-sr-series-{truth.study_uid}"), series_number=90,
        sop_instance_uid=sr_uid, instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True, is_final=True, is_verified=True,
        verifying_observer_name=observer_name, verifying_organization="breast-cds phantom site",
        series_description="Lesion region (phantom sonographer)",
        content_date=image.ContentDate, content_time=image.ContentTime,
    )
    return _save(sr, Path(out_dir) / f"us_sr_{sr_uid[-12:]}.dcm")
