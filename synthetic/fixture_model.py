"""A tiny, deterministic fixture model for testing the result writers end to end.

It is NOT one of the project's models and is never registered in the pipeline. It exists so the
writers (SEG, SR, FHIR, PDF, dispatch) can be exercised before and independently of the real
models: it computes its findings from real pixel data (a smoothed-intensity blob detector on
mammography, a stain-density map on a slide) and its recurrence risk from a Cox model fitted on
the GBSG2 cohort, so every number it reports comes out of a computation, none is written by hand.

It also writes the synthetic DICOM inputs it needs (a For-Presentation mammogram with bright
blobs, a single-level tiled VL Whole Slide Microscopy image), with pydicom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from scipy import ndimage
from skimage import measure

from cds.contracts.cards import device_uid
from cds.contracts.domain import (
    ArrayFile,
    Calibrated,
    CaseInput,
    InstanceRecord,
    Lesion,
    MammographyResult,
    MammoImageFinding,
    ModelIdentity,
    PatientRef,
    RecurrenceResult,
    SlideResult,
    SlideTile,
    StudyAnalysis,
    StudyInput,
)
from synthetic.phantoms.dicom_common import base_dataset, new_uid, save_dataset

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VL_WSM = "1.2.840.10008.5.1.4.1.1.77.1.6"
FIXTURE_VERSION = "0.1.0-fixture"


def identity(name: str) -> ModelIdentity:
    return ModelIdentity(name=name, version=FIXTURE_VERSION, device_uid=device_uid(name, FIXTURE_VERSION),
                         synthetic_trained=True, intended_use="writer tests only")


# ----------------------------------------------------------------------------------------------
# Synthetic inputs
# ----------------------------------------------------------------------------------------------


def write_mammogram(path: Path, patient: PatientRef, study_uid: str, *, seed: int = 0,
                    laterality: str = "L", view: str = "CC", rows: int = 384, columns: int = 320,
                    blobs: int = 2) -> Path:
    """A small 12-bit For-Presentation mammogram: smooth tissue texture plus bright round blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:columns]
    tissue = ndimage.gaussian_filter(rng.normal(0, 1, (rows, columns)), 6)
    img = 900 + 250 * tissue / (tissue.std() + 1e-9)
    breast = (xx < columns * (0.85 + 0.1 * np.sin(yy / rows * np.pi)))
    img = np.where(breast, img, 80)
    for _b in range(blobs):
        cy, cx = rng.uniform(0.25, 0.75) * rows, rng.uniform(0.2, 0.6) * columns
        r = rng.uniform(10, 20)
        img += 1500 * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)) ** 2)
    pixels = np.clip(img + rng.normal(0, 20, img.shape), 0, 4095).astype(np.uint16)
    series_uid = new_uid(f"{study_uid}/mg-series/{laterality}{view}")
    ds = base_dataset(patient, study_uid, series_uid, MG_FOR_PRESENTATION, "MG", 1, 1,
                      sop_instance_uid=new_uid(f"{study_uid}/mg/{laterality}{view}/{seed}"))
    ds.ImageType = ["DERIVED", "PRIMARY", ""]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.ImageLaterality = laterality
    ds.Laterality = laterality
    ds.ViewPosition = view
    ds.PatientOrientation = ["A", "R"] if laterality == "L" else ["P", "L"]
    ds.BodyPartExamined = "BREAST"
    ds.PixelIntensityRelationship = "LIN"
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels.tobytes()
    return save_dataset(ds, path)


def write_slide(path: Path, patient: PatientRef, study_uid: str, *, seed: int = 0,
                tile: int = 128, tiles_y: int = 4, tiles_x: int = 5) -> Path:
    """A single-level tiled (TILED_FULL) VL Whole Slide Microscopy image: pink tissue, dark nests."""
    rng = np.random.default_rng(seed)
    rows, cols = tile * tiles_y, tile * tiles_x
    frames = _slide_frames(rng, tile, tiles_y, tiles_x)
    series_uid = new_uid(f"{study_uid}/sm-series/{seed}")
    ds = base_dataset(patient, study_uid, series_uid, VL_WSM, "SM", 1, 1,
                      sop_instance_uid=new_uid(f"{study_uid}/sm/{seed}"))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.FrameOfReferenceUID = new_uid(f"{study_uid}/sm-for/{seed}")
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = tile
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames.shape[0]
    _set_slide_geometry(ds, rows, cols)
    _set_slide_specimen_and_optics(ds, new_uid(f"{study_uid}/specimen/{seed}"))
    ds.AcquisitionDateTime = "20260101090000"
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.LossyImageCompression = "00"
    ds.PixelData = frames.tobytes()
    return save_dataset(ds, path)


def _slide_frames(rng: np.random.Generator, tile: int, tiles_y: int, tiles_x: int) -> np.ndarray:
    """Pink tissue with dark-purple nests, cut into (n_tiles, tile, tile, 3) uint8 frames, row by row."""
    rows, cols = tile * tiles_y, tile * tiles_x
    yy, xx = np.mgrid[0:rows, 0:cols]
    tissue = ndimage.gaussian_filter(rng.normal(0, 1, (rows, cols)), 20) > -0.3
    nests = np.zeros((rows, cols))
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8) * rows, rng.uniform(0.2, 0.8) * cols, rng.uniform(25, 45)
        nests += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    nests = np.clip(nests, 0, 1) * tissue
    rgb = np.empty((rows, cols, 3))
    rgb[..., 0] = 240 - 60 * tissue - 120 * nests
    rgb[..., 1] = 240 - 120 * tissue - 60 * nests
    rgb[..., 2] = 240 - 50 * tissue + 10 * nests
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    return rgb.reshape(tiles_y, tile, tiles_x, tile, 3).transpose(0, 2, 1, 3, 4).reshape(-1, tile, tile, 3)


def _set_slide_geometry(ds: Dataset, rows: int, cols: int) -> None:
    """Total pixel matrix, slide orientation and origin, imaged volume and shared pixel measures."""
    ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = rows, cols
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = [origin]
    spacing_mm = 0.0005  # 0.5 um
    ds.ImagedVolumeWidth = cols * spacing_mm
    ds.ImagedVolumeHeight = rows * spacing_mm
    ds.ImagedVolumeDepth = 0.004
    pm = Dataset()
    pm.PixelSpacing = [spacing_mm, spacing_mm]
    pm.SliceThickness = 0.004
    pm.SpacingBetweenSlices = 0.004
    fc = Dataset()
    fc.OpticalPathIdentifier = "1"
    shared = Dataset()
    shared.PixelMeasuresSequence = [pm]
    shared.OpticalPathIdentificationSequence = [fc]
    wfc = Dataset()
    wfc.FrameType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    shared.WholeSlideMicroscopyImageFrameTypeSequence = [wfc]
    ds.SharedFunctionalGroupsSequence = [shared]


def _set_slide_specimen_and_optics(ds: Dataset, specimen_uid: str) -> None:
    """Container and specimen description, and the one brightfield optical path."""
    ds.ContainerIdentifier = "SYN-SLIDE-1"
    ds.IssuerOfTheContainerIdentifierSequence = []
    ctype = Dataset()
    ctype.CodeValue, ctype.CodingSchemeDesignator, ctype.CodeMeaning = "433466003", "SCT", "Microscope slide"
    ds.ContainerTypeCodeSequence = [ctype]
    spec = Dataset()
    spec.SpecimenIdentifier = "SYN-SPEC-1"
    spec.SpecimenUID = specimen_uid
    spec.IssuerOfTheSpecimenIdentifierSequence = []
    spec.SpecimenPreparationSequence = []
    ds.SpecimenDescriptionSequence = [spec]
    op = Dataset()
    op.OpticalPathIdentifier = "1"
    ill = Dataset()
    ill.CodeValue, ill.CodingSchemeDesignator, ill.CodeMeaning = "414298005", "SCT", "Full Spectrum"
    op.IlluminationColorCodeSequence = [ill]
    itype = Dataset()
    itype.CodeValue, itype.CodingSchemeDesignator, itype.CodeMeaning = "111744", "DCM", "Brightfield illumination"
    op.IlluminationTypeCodeSequence = [itype]
    ds.OpticalPathSequence = [op]


def instance_record(path: Path) -> InstanceRecord:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return InstanceRecord(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                          study_instance_uid=ds.StudyInstanceUID,
                          series_instance_uid=ds.SeriesInstanceUID, modality=ds.Modality, path=path)


# ----------------------------------------------------------------------------------------------
# Analysis
# ----------------------------------------------------------------------------------------------


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


class FixtureMammoModel:
    """Blob detector: bright compact regions well above the tissue background are 'lesions'."""

    modalities = frozenset({"MG"})

    def __init__(self) -> None:
        self.identity = identity("fixture-mammo")

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis:
        images = []
        for inst in study.instances:
            ds = pydicom.dcmread(inst.path)
            img = ds.pixel_array.astype(np.float32)
            smooth = ndimage.gaussian_filter(img, 3)
            z = (smooth - np.median(smooth)) / (smooth.std() + 1e-6)
            labels = measure.label(z > 2.0)
            lesions = []
            for k, reg in enumerate(sorted(measure.regionprops(labels, intensity_image=z),
                                           key=lambda r: -r.intensity_max)):
                y0, x0, y1, x1 = reg.bbox
                if reg.area < 30 or min(y0, x0) == 0 or y1 == img.shape[0] or x1 == img.shape[1]:
                    continue  # too small, or the breast edge / image border
                mask = (labels == reg.label).astype(np.uint8)
                contour = max(measure.find_contours(np.pad(mask, 1), 0.5), key=len) - 1
                poly = measure.approximate_polygon(contour, tolerance=1.0)
                pts = [(float(c), float(r)) for r, c in poly]
                if pts[0] != pts[-1]:
                    pts.append(pts[0])
                tid = f"lesion-{inst.sop_instance_uid[-6:]}-{k + 1}"
                lesions.append(Lesion(
                    tracking_id=tid, tracking_uid=new_uid(f"{inst.sop_instance_uid}/{tid}"),
                    box=(float(x0), float(y0), float(x1), float(y1)), polygon=pts,
                    mask=ArrayFile.save(work_dir, f"{inst.sop_instance_uid}/lesion{k + 1}.npy", mask),
                    score=_sigmoid(float(reg.intensity_max) - 4.0),
                    area_mm2=float(reg.area) * float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]),
                ))
            peak = max((les.score for les in lesions), default=0.0)
            logits = np.array([2.0 - 4 * peak, 0.5, 4 * peak - 2.5, 6 * peak - 3.5])
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            cls = dict(zip(("normal", "benign", "in_situ", "invasive"), map(float, probs)))
            heat = np.clip(z / 6.0, 0, 1).astype(np.float32)[::4, ::4]
            images.append(MammoImageFinding(
                sop_instance_uid=inst.sop_instance_uid, sop_class_uid=inst.sop_class_uid,
                series_instance_uid=inst.series_instance_uid,
                laterality=str(ds.get("ImageLaterality", "")), view=str(ds.get("ViewPosition", "")),
                rows=int(ds.Rows), columns=int(ds.Columns),
                pixel_spacing_mm=tuple(float(v) for v in ds.PixelSpacing),
                class_probabilities=cls,
                malignancy=Calibrated(probability=cls["in_situ"] + cls["invasive"], threshold=0.5,
                                      threshold_name="fixture"),
                lesions=lesions,
                heatmap=ArrayFile.save(work_dir, f"{inst.sop_instance_uid}/heatmap.npy", heat),
            ))
        exam = max(images, key=lambda i: i.malignancy.probability).malignancy
        return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality="MG",
                             patient=study.patient, model=self.identity, work_dir=work_dir,
                             mammography=MammographyResult(images=images, exam_malignancy=exam))


class FixtureSlideModel:
    """Stain-density 'attention': the fraction of dark-purple pixels per tile."""

    modalities = frozenset({"SM"})

    def __init__(self) -> None:
        self.identity = identity("fixture-slide")

    def analyze(self, study: StudyInput, work_dir: Path, top_k: int = 3) -> StudyAnalysis:
        inst = study.instances[0]
        ds = pydicom.dcmread(inst.path)
        th, tw = int(ds.Rows), int(ds.Columns)
        rows, cols = int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns)
        ny, nx = -(-rows // th), -(-cols // tw)
        frames = ds.pixel_array.reshape(-1, th, tw, 3).astype(np.float32)
        dark = (frames[..., 0] < 150) & (frames[..., 1] < 150)
        per_tile = dark.reshape(ny * nx, -1).mean(axis=1).reshape(ny, nx)
        # a finer map: dark fraction in 16x16 pixel cells, smoothed
        full = frames.reshape(ny, nx, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(ny * th, nx * tw, 3)
        fine = ((full[..., 0] < 150) & (full[..., 1] < 150)).astype(np.float32)
        cell = 16
        grid = fine.reshape(ny * th // cell, cell, nx * tw // cell, cell).mean(axis=(1, 3))
        attention = np.clip(ndimage.gaussian_filter(grid, 1) / max(grid.max(), 1e-6), 0, 1).astype(np.float32)
        order = np.argsort(-per_tile.ravel())[:top_k]
        tiles = []
        for rank, idx in enumerate(order):
            ty, tx = divmod(int(idx), nx)
            thumb = full[ty * th:(ty + 1) * th, tx * tw:(tx + 1) * tw].astype(np.uint8)
            tiles.append(SlideTile(x=tx * tw, y=ty * th, width=tw, height=th,
                                   attention=float(per_tile[ty, tx]),
                                   probability=_sigmoid(10 * float(per_tile[ty, tx]) - 2),
                                   image=ArrayFile.save(work_dir, f"tiles/top{rank + 1}.npy", thumb)))
        p = _sigmoid(12 * float(per_tile.max()) - 3)
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        slide = SlideResult(
            sop_instance_uids=[inst.sop_instance_uid], series_instance_uid=inst.series_instance_uid,
            base_sop_instance_uid=inst.sop_instance_uid, base_rows=rows, base_columns=cols,
            tile_rows=th, tile_columns=tw, pixel_spacing_mm=(float(spacing[0]), float(spacing[1])),
            metastasis=Calibrated(probability=p, threshold=0.5, threshold_name="fixture"),
            attention_map=ArrayFile.save(work_dir, "attention.npy", attention),
            tumour_probability_map=ArrayFile.save(
                work_dir, "tumour.npy", (1.0 / (1.0 + np.exp(-(8 * grid - 3)))).astype(np.float32)),
            top_tiles=tiles, tiles_stage1=ny * nx, tiles_stage2=len(tiles),
        )
        return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality="SM",
                             patient=study.patient, model=self.identity, work_dir=work_dir, slide=slide)


class FixtureRecurrenceModel:
    """Cox proportional hazards on GBSG2 (lifelines), fitted at construction (about a second)."""

    COVARIATES = ("age", "tsize", "pnodes", "tgrade", "progrec", "estrec", "menostat")

    def __init__(self) -> None:
        from lifelines import CoxPHFitter
        from lifelines.datasets import load_gbsg2

        df = load_gbsg2()
        df["tgrade"] = df["tgrade"].map({"I": 1, "II": 2, "III": 3}).astype(float)
        df["menostat"] = (df["menostat"] == "Post").astype(float)
        df = df[[*self.COVARIATES, "time", "cens"]]
        self.cph = CoxPHFitter(penalizer=0.01).fit(df, "time", "cens")
        self.train = df
        self.cutoff = float(np.median(self.cph.predict_log_partial_hazard(df)))
        self.identity = identity("fixture-recurrence")

    def analyze_case(self, case: CaseInput) -> RecurrenceResult:
        import pandas as pd

        v = case.clinical.values
        needed = {"age_years": "age", "tumour_size_mm": "tsize", "positive_nodes": "pnodes",
                  "grade": "tgrade", "pr": "progrec", "er": "estrec", "menopausal_status": "menostat"}
        row, missing = {}, []
        for key, col in needed.items():
            val = v.get(key)
            if key == "menopausal_status" and isinstance(val, str):
                val = 1.0 if val == "post" else 0.0
            if not isinstance(val, (int, float)):
                missing.append(key)
                val = float(self.train[col].median())  # imputation: training median
            row[col] = float(val)
        x = pd.DataFrame([row])
        score = float(self.cph.predict_log_partial_hazard(x).iloc[0])
        surv = self.cph.predict_survival_function(x, times=[365.25 * y for y in (3, 5, 7)])
        absolute = {y: float(1 - surv.iloc[i, 0]) for i, y in enumerate((3, 5, 7))}
        return RecurrenceResult(
            model=self.identity, risk_score=score, risk_group="high" if score >= self.cutoff else "low",
            cutoff=self.cutoff, absolute_risk=absolute,
            modalities_present=["clinical"] + (["slide"] if case.slide else []),
            modalities_missing=(["ultrasound"] if case.ultrasound is None else []) + missing,
            inputs=list(case.clinical.sources.values()),
        )


def run_study(model: FixtureMammoModel | FixtureSlideModel, paths: list[Path], patient: PatientRef,
              work_dir: Path) -> StudyAnalysis:
    """Convenience for tests: wrap files as a StudyInput and analyze them."""
    records = [instance_record(p) for p in paths]
    study = StudyInput(study_instance_uid=records[0].study_instance_uid, modality=records[0].modality,
                       patient=patient, instances=records)
    return model.analyze(study, work_dir)


__all__ = ["FixtureMammoModel", "FixtureSlideModel", "FixtureRecurrenceModel", "write_mammogram",
           "write_slide", "run_study", "instance_record"]
