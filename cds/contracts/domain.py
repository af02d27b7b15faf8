"""Typed objects that cross stage boundaries.

Each stage reads what the previous one wrote and nothing else, so these types are the contract:
the listener produces :class:`InstanceRecord`, the pipeline hands :class:`StudyInput` /
:class:`CaseInput` to models, models return :class:`StudyAnalysis` / :class:`RecurrenceResult`,
and the writers turn those into DICOM and FHIR. Large arrays (masks, heatmaps) never travel
inside these objects: they are ``.npy`` files referenced by :class:`ArrayFile`, relative to the
job's work folder, so a result row in the store stays small.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

NOT_FOR_CLINICAL_USE = "Trained on synthetic data, not for clinical use."


def utcnow() -> datetime:
    return datetime.now(UTC)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ----------------------------------------------------------------------------------------------
# Intake
# ----------------------------------------------------------------------------------------------


class PatientRef(Frozen):
    """Who the data belongs to. PHI: never log these fields; log :attr:`key` instead."""

    patient_id: str = ""
    issuer: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""

    @property
    def key(self) -> str:
        """Stable, non-identifying key for logs and the store: HMAC of issuer and id under the
        site secret (:mod:`cds.contracts.patient_key`)."""
        from cds.contracts.patient_key import patient_key

        return patient_key(self.issuer, self.patient_id)


class InstanceRecord(Frozen):
    """One DICOM instance durably in the spool and indexed in the store."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    path: Path
    transfer_syntax_uid: str = ""
    size_bytes: int = 0
    calling_ae: str = ""
    received_at: datetime = Field(default_factory=utcnow)


class StudyInput(Frozen):
    """What a study-level model sees: one study, one modality, its instances on disk."""

    study_instance_uid: str
    modality: str
    patient: PatientRef
    instances: list[InstanceRecord]
    accession_number: str = ""
    companions: list[InstanceRecord] = []
    """Structured Reports of the same study. A model may read them as context (a lesion region a
    sonographer drew on an image, for example); the study is not analysed for their sake."""


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class ModelIdentity(Frozen):
    """Names one algorithm for the Contributing Equipment Sequence, FHIR method and Provenance."""

    name: str
    version: str
    manufacturer: str = "breast-cds open-source project"
    device_uid: str
    synthetic_trained: bool = True
    intended_use: str = ""
    card: Path | None = None

    @property
    def notice(self) -> str:
        return NOT_FOR_CLINICAL_USE if self.synthetic_trained else ""


class ArrayFile(Frozen):
    """A numpy array saved as ``.npy`` under a job's work folder (path relative to it)."""

    path: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def save(cls, base: Path, rel: str, array: np.ndarray) -> ArrayFile:
        target = base / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, array)
        return cls(path=rel, shape=tuple(int(s) for s in array.shape), dtype=str(array.dtype))

    def load(self, base: Path) -> np.ndarray:
        array: np.ndarray = np.load(base / self.path)
        return array


class OperatingPoint(Frozen):
    """The decision threshold in use and what it is expected to do, from the card's held-out data.

    ``name`` is a card operating point ("youden", "sensitivity_0.90", "specificity_0.90") or
    "site" for a value a site set itself (then no expected rates are known).
    """

    name: str
    threshold: float = Field(ge=0.0, le=1.0)
    expected_sensitivity: float | None = None
    expected_specificity: float | None = None
    source: Literal["card", "site"] = "card"


class DomainCheck(Frozen):
    """Whether an input lies inside the training domain the model's card describes.

    ``score`` is the out-of-distribution score on the model's own embedding (higher is further
    out) and ``threshold`` the card's, fitted on held-out data; ``reasons`` also lists simple
    acquisition mismatches (pixel spacing, bit depth, size, intensity statistics). An input
    outside the domain gets no plain decision: writers mark the result unreliable.
    """

    in_domain: bool
    score: float | None = None
    threshold: float | None = None
    reasons: list[str] = Field(default_factory=list)


class Calibrated(Frozen):
    """A calibrated probability and the decision taken at the card's operating threshold."""

    probability: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_name: str = "youden"
    operating_point: OperatingPoint | None = None  # None: the card's Youden point, rates unknown

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold


MammoClass = Literal["normal", "benign", "in_situ", "invasive"]
MAMMO_CLASSES: tuple[str, ...] = ("normal", "benign", "in_situ", "invasive")


class Lesion(Frozen):
    """A localized lesion in one image; coordinates are (column, row) in source pixels."""

    tracking_id: str
    tracking_uid: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    polygon: list[tuple[float, float]]  # closed contour, first point repeated at the end
    mask: ArrayFile  # uint8 0/1, shape (Rows, Columns) of the source image
    score: float = Field(ge=0.0, le=1.0)
    area_mm2: float | None = None


# Where an image's laterality or view came from, in the order they are tried.
GeometrySource = Literal["attribute", "patient_orientation", "text", "pixels", ""]


class NotAnalysed(Frozen):
    """An instance of the study that was recognised and deliberately not read, with why."""

    sop_instance_uid: str
    reason: str  # e.g. "tomosynthesis", "magnification/spot view", "implant-displaced view"
    detail: str = ""


class MammoImageFinding(Frozen):
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    laterality: Literal["L", "R", ""] = ""
    view: str = ""  # CC, MLO, ...
    laterality_source: GeometrySource = ""
    view_source: GeometrySource = ""
    paired: bool = True  # False: no image of the other breast in this view; read on its own
    breast_mask: ArrayFile | None = None  # uint8 0/1 at source size: where lesions are looked for
    domain: DomainCheck | None = None
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float] | None = None
    class_probabilities: dict[str, float]  # calibrated, keys from MAMMO_CLASSES
    malignancy: Calibrated  # P(in situ) + P(invasive)
    grade_probabilities: list[float] = Field(default_factory=list)  # ordinal, cumulative-link
    lesions: list[Lesion] = Field(default_factory=list)
    heatmap: ArrayFile | None = None  # float32 saliency in [0,1], any shape (writer resamples)

    @property
    def predicted_class(self) -> str:
        return max(self.class_probabilities, key=self.class_probabilities.__getitem__)


class SimilarExample(Frozen):
    """A pathology patch from a model's synthetic reference bank that lies near a mammography
    finding in the shared mammography-pathology embedding. It illustrates what similar findings
    looked like under the microscope in the training phantoms; it is never this patient's
    pathology, and every writer labels it so."""

    bank_id: str  # the patch's id in the bank (e.g. "bank-0042")
    label: str  # the reference patch's tissue class, e.g. "invasive carcinoma"
    similarity: float = Field(ge=-1.0, le=1.0)  # cosine in the shared embedding
    image: ArrayFile  # RGB uint8 patch, for the PDF and the pages


class SimilarPathology(Frozen):
    """The top-K reference patches for one lesion of one image."""

    sop_instance_uid: str
    lesion_tracking_uid: str
    examples: list[SimilarExample]
    model: ModelIdentity  # the alignment model that embedded the lesion and the bank
    bank: str  # what the bank is, for the reader: e.g. "480 patches of synthetic slides, seed 0"


class MammographyResult(Frozen):
    images: list[MammoImageFinding]
    exam_malignancy: Calibrated  # per exam: max over images
    tta_applied: bool = False
    not_analysed: list[NotAnalysed] = Field(default_factory=list)
    grade_labels: list[str] = Field(default_factory=list)  # names of grade_probabilities' classes
    similar_pathology: list[SimilarPathology] = Field(default_factory=list)  # per lesion, if enabled


class SlideTile(Frozen):
    """A tile at the analysis level, in that level's pixel coordinates."""

    x: int
    y: int
    width: int
    height: int
    attention: float
    probability: float | None = None
    image: ArrayFile | None = None  # RGB uint8 thumbnail for the report


class PathomicsFeatures(Frozen):
    """Per-slide summaries of nuclear morphology and k=5 nearest-neighbour cell-graph topology.

    Named scalar features (mean/std/quantiles) are in :attr:`values`; the recurrence model reads
    them by name. Units: micrometres and square micrometres.
    """

    n_nuclei: int
    til_density_per_mm2: float
    morphology: dict[str, float]
    topology: dict[str, float]


class SlideResult(Frozen):
    sop_instance_uids: list[str]  # every level instance of the slide that was read
    series_instance_uid: str
    base_sop_instance_uid: str  # the highest-resolution level (the SEG's reference)
    base_rows: int  # total pixel matrix rows of the base level
    base_columns: int
    tile_rows: int  # the base level's frame (tile) size, for a tiled SEG
    tile_columns: int
    pixel_spacing_mm: tuple[float, float] | None = None
    metastasis: Calibrated
    attention_map: ArrayFile  # float32 in [0,1]; grid over the base level (any resolution)
    tumour_probability_map: ArrayFile | None = None  # float32 in [0,1], same grid
    top_tiles: list[SlideTile] = Field(default_factory=list)
    tiles_stage1: int = 0
    tiles_stage2: int = 0
    pathomics: PathomicsFeatures | None = None
    embedding: list[float] = Field(default_factory=list)  # slide-level deep features
    domain: DomainCheck | None = None
    map_level_sop_instance_uid: str = ""  # the pyramid level the SEG is written on ("" = base)


class UltrasoundResult(Frozen):
    sop_instance_uid: str
    series_instance_uid: str
    lesion_box: tuple[float, float, float, float]
    box_source: Literal["user", "sr", "automatic"]
    radiomics: dict[str, float]
    deep_features: list[float]


class StudyAnalysis(Frozen):
    """Everything one study-level model said about one study."""

    study_instance_uid: str
    modality: str
    patient: PatientRef
    model: ModelIdentity
    work_dir: Path  # base for every ArrayFile in this object
    mammography: MammographyResult | None = None
    slide: SlideResult | None = None
    ultrasound: UltrasoundResult | None = None
    created_at: datetime = Field(default_factory=utcnow)


# ----------------------------------------------------------------------------------------------
# Patient case (recurrence)
# ----------------------------------------------------------------------------------------------


class SourceRef(Frozen):
    """An input a result was derived from: a FHIR resource or a DICOM object."""

    kind: Literal["Observation", "DiagnosticReport", "ImagingStudy", "DicomInstance", "Patient", "Condition"]
    reference: str  # "Observation/123" or a SOP Instance UID
    display: str = ""


class ClinicalValue(Frozen):
    """One clinical value as read: normalised value, its UCUM unit ("" for a coded value such as
    "positive" or "post"), the resource and element it came from, and the text as received."""

    variable: str
    value: float | str
    unit: str = ""
    source: SourceRef | None = None
    original: str = ""  # e.g. "5 %" or "2.5 cm" or "Positive (LA6576-8)"
    note: str = ""  # interpretation applied, e.g. "positive (ASCO/CAP: >= 1 % positive nuclei)"


class NotUsed(Frozen):
    """A clinical input that was found but deliberately not used, with the reason."""

    variable: str
    reason: str
    source: str = ""  # "Observation/123", a file name, or "" when not tied to one resource


class ClinicalContext(Frozen):
    """Clinical variables read from FHIR (or an offline bundle), each with where it came from.

    ``values`` is what the models read (numbers in the canonical unit of each variable, or a
    category); ``measured`` keeps each used value with its unit, source and original text;
    ``not_used`` lists every value found and refused (unknown unit, implausible, conflicting,
    ambiguous patient), so that nothing is dropped silently.
    """

    values: dict[str, float | str] = Field(default_factory=dict)
    sources: dict[str, SourceRef] = Field(default_factory=dict)
    measured: dict[str, ClinicalValue] = Field(default_factory=dict)
    not_used: list[NotUsed] = Field(default_factory=list)
    ultrasound_report_text: str = ""
    ultrasound_report_ref: SourceRef | None = None
    fhir_patient_ref: str = ""  # "Patient/123" when found on a server


class CaseInput(Frozen):
    """What the recurrence model sees for one patient: the latest result of every modality."""

    patient: PatientRef
    clinical: ClinicalContext
    slide: SlideResult | None = None
    ultrasound: UltrasoundResult | None = None
    slide_study_uid: str = ""
    ultrasound_study_uid: str = ""
    work_dir: Path


class RecurrenceResult(Frozen):
    model: ModelIdentity
    risk_score: float
    risk_group: Literal["high", "low"]
    cutoff: float
    absolute_risk: dict[int, float]  # years -> probability of recurrence by then
    modalities_present: list[str]
    modalities_missing: list[str]
    inputs: list[SourceRef]
    # Which question-answering variant this is: "clinical" (clinical variables only) or
    # "multimodal" (clinical + imaging features); "" when the model does not say. Two variants
    # answer the same question; settings.recurrence_primary picks the one the case reports.
    scope: Literal["clinical", "multimodal", ""] = ""
    # The clinical values used (with units and sources), those refused (with reasons), and how
    # each was encoded for the model (e.g. "ER 5 % -> positive -> fed as 60 fmol/l").
    clinical_values: list[ClinicalValue] = Field(default_factory=list)
    not_used: list[NotUsed] = Field(default_factory=list)
    input_encoding: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
