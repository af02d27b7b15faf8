"""Turn a patient case into the fixed-length arrays the recurrence network reads (no torch).

The network never sees names, only positions, so the *names* of every input live here in a
:class:`FeatureSpec` that is written into the model card and read back at runtime. Whatever a
case lacks (a clinical variable not found in FHIR, a pathomics feature the slide model did not
produce, a whole modality) becomes a 0 in the matching mask: the network replaces it by a learned
"missing" embedding, so a missing input is never silently read as a real zero.

The clinical encoding (which variables, which transforms and why) is in
:mod:`models.recurrence.clinical`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

from cds.contracts.domain import CaseInput, SourceRef
from models.recurrence.clinical import (  # noqa: F401  (re-exported: the feature vocabulary)
    AGE_SPLINE_KNOTS,
    CATEGORICAL_LEVELS,
    CATEGORICAL_VARIABLES,
    CONTINUOUS_VARIABLES,
    DERIVED_FROM,
    KI67_HIGH_PERCENT,
    RECEPTOR_CUTOFF_FMOL,
    RECEPTOR_NEGATIVE_FMOL,
    RECEPTOR_POSITIVE_FMOL,
    _number,
    age_spline,
    clinical_raw,
    molecular_subtype,
)

# Default names of the slide (pathomics) and ultrasound inputs. They are configuration: the card
# stores the list a model was trained with; a name a case does not provide is a missing input.
# Key names produced by models/pathomics/features.py (``<feature>_<stat>``), the slide model's contract.
DEFAULT_MORPHOLOGY: tuple[str, ...] = (
    "area_um2_mean", "area_um2_std", "perimeter_um_mean", "eccentricity_mean", "circularity_mean",
    "curvature_mean_per_um_mean", "glcm_contrast_mean", "glcm_homogeneity_mean", "intensity_mean_mean",
    "hematoxylin_mean_mean",
)
DEFAULT_TOPOLOGY: tuple[str, ...] = (
    "degree_mean", "clustering_mean", "closeness_mean", "betweenness_mean",
    "edge_length_um_mean", "edge_length_um_std", "nuclei_density_per_mm2", "lymphocyte_fraction",
)
DEFAULT_RADIOMICS: tuple[str, ...] = (
    "original_firstorder_Mean", "original_firstorder_Entropy", "original_firstorder_Skewness",
    "original_glcm_Contrast", "original_glcm_Correlation", "original_glrlm_RunLengthNonUniformity",
    "original_glszm_ZonePercentage", "original_shape2D_Elongation", "original_shape2D_Sphericity",
    "original_shape2D_PerimeterSurfaceRatio", "log_sigma_2_firstorder_Mean", "wavelet_HH_firstorder_Energy",
)
DEFAULT_WSI_EMBEDDING_DIM = 64  # models/slides/nets.py FEATURE_DIM
DEFAULT_US_DEEP_DIM = 32
TEXT_EMBEDDING_DIM = 384
# Structured BI-RADS lexicon fields used as text tokens (values are numeric codes, see lexicon).
TEXT_LEXICON_FIELDS: tuple[str, ...] = (
    "shape_irregular", "orientation_not_parallel", "margin_not_circumscribed",
    "posterior_shadowing", "calcifications_present", "birads_category", "size_mm",
)


class Standardizer(BaseModel):
    """Per-column mean/std learned on the training set (stored in the card)."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, x: np.ndarray, mask: np.ndarray) -> Standardizer:
        means, stds = [], []
        for j in range(x.shape[1]):
            col = x[mask[:, j] > 0, j]
            m = float(col.mean()) if col.size else 0.0
            s = float(col.std()) if col.size > 1 else 1.0
            means.append(m)
            stds.append(s if s > 1e-8 else 1.0)
        return cls(mean=means, std=stds)

    def apply(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.where(mask > 0, np.clip(z, -6, 6), 0.0).astype(np.float32)


class FeatureSpec(BaseModel):
    """Every input name, in network order, plus the training-set standardizers."""

    continuous: list[str] = Field(default_factory=lambda: list(CONTINUOUS_VARIABLES))
    categorical: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in CATEGORICAL_LEVELS.items()}
    )
    morphology: list[str] = Field(default_factory=lambda: list(DEFAULT_MORPHOLOGY))
    topology: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPOLOGY))
    radiomics: list[str] = Field(default_factory=lambda: list(DEFAULT_RADIOMICS))
    wsi_embedding_dim: int = DEFAULT_WSI_EMBEDDING_DIM
    us_deep_dim: int = DEFAULT_US_DEEP_DIM
    text_fields: list[str] = Field(default_factory=lambda: list(TEXT_LEXICON_FIELDS))
    text_embedding_dim: int = TEXT_EMBEDDING_DIM
    scalers: dict[str, Standardizer] = Field(default_factory=dict)




def named_vector(values: Mapping[str, float] | None, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Values in ``names`` order and a mask (0 where the name is absent or not finite)."""
    x = np.zeros(len(names), np.float32)
    m = np.zeros(len(names), np.float32)
    if values:
        for j, name in enumerate(names):
            v = _number(values.get(name))
            if v is not None:
                x[j], m[j] = v, 1.0
    return x, m


def fixed_vector(values: Sequence[float] | None, dim: int) -> tuple[np.ndarray, float]:
    """A deep-feature vector of the trained length, or zeros and availability 0 when it differs."""
    if values is None or len(values) != dim:
        return np.zeros(dim, np.float32), 0.0
    arr = np.asarray(values, np.float32)
    if not np.all(np.isfinite(arr)):
        return np.zeros(dim, np.float32), 0.0
    return arr, 1.0


INPUT_NAMES: tuple[str, ...] = (
    "clin_cont", "clin_cont_mask", "clin_cat",
    "wsi_deep", "morph", "morph_mask", "topo", "topo_mask",
    "us_deep", "rad", "rad_mask", "text_fields", "text_fields_mask", "text_emb",
    "modality_mask",
)
# modality_mask columns: WSI available, US available, text embedding available.
MODALITY_COLUMNS: tuple[str, ...] = ("wsi", "us", "text_embedding")


def empty_batch(spec: FeatureSpec, n: int) -> dict[str, np.ndarray]:
    """All-missing arrays for ``n`` patients (every modality absent)."""
    f = np.float32
    return {
        "clin_cont": np.zeros((n, len(spec.continuous)), f),
        "clin_cont_mask": np.zeros((n, len(spec.continuous)), f),
        "clin_cat": np.zeros((n, len(spec.categorical)), np.int64),
        "wsi_deep": np.zeros((n, spec.wsi_embedding_dim), f),
        "morph": np.zeros((n, len(spec.morphology)), f),
        "morph_mask": np.zeros((n, len(spec.morphology)), f),
        "topo": np.zeros((n, len(spec.topology)), f),
        "topo_mask": np.zeros((n, len(spec.topology)), f),
        "us_deep": np.zeros((n, spec.us_deep_dim), f),
        "rad": np.zeros((n, len(spec.radiomics)), f),
        "rad_mask": np.zeros((n, len(spec.radiomics)), f),
        "text_fields": np.zeros((n, len(spec.text_fields)), f),
        "text_fields_mask": np.zeros((n, len(spec.text_fields)), f),
        "text_emb": np.zeros((n, spec.text_embedding_dim), f),
        "modality_mask": np.zeros((n, len(MODALITY_COLUMNS)), f),
    }


# Groups that are standardized with a training-set Standardizer: array key -> mask key.
SCALED_GROUPS: dict[str, str] = {
    "clin_cont": "clin_cont_mask",
    "morph": "morph_mask",
    "topo": "topo_mask",
    "rad": "rad_mask",
    "text_fields": "text_fields_mask",
}


# Deep vectors are standardized too, per dimension, on the patients that have the modality:
# array key -> modality_mask column. Then a missing input is 0 = the training mean everywhere,
# which is what the zero-fill ablation reads it as.
DEEP_GROUPS: dict[str, int] = {"wsi_deep": 0, "us_deep": 1, "text_emb": 2}


def _deep_mask(batch: dict[str, np.ndarray], key: str) -> np.ndarray:
    col = batch["modality_mask"][:, DEEP_GROUPS[key]:DEEP_GROUPS[key] + 1]
    return np.broadcast_to(col, batch[key].shape)


def fit_scalers(batch: dict[str, np.ndarray]) -> dict[str, Standardizer]:
    scalers = {k: Standardizer.fit(batch[k], batch[m]) for k, m in SCALED_GROUPS.items()}
    for key in DEEP_GROUPS:
        scalers[key] = Standardizer.fit(batch[key], _deep_mask(batch, key))
    return scalers


def standardize(batch: dict[str, np.ndarray], scalers: Mapping[str, Standardizer]) -> dict[str, np.ndarray]:
    """A copy of ``batch`` with every scaled group (and deep vector, when the card has its scaler)
    standardized; masked entries become 0."""
    out = dict(batch)
    for key, mask_key in SCALED_GROUPS.items():
        if key in scalers:
            out[key] = scalers[key].apply(batch[key], batch[mask_key])
    for key in DEEP_GROUPS:
        if key in scalers:
            out[key] = scalers[key].apply(batch[key], _deep_mask(batch, key))
    return out


class CaseFeatures(BaseModel):
    """One case's arrays (batch of 1) and what was present, for the runtime's result."""

    model_config = {"arbitrary_types_allowed": True}

    arrays: dict[str, np.ndarray]
    present: list[str]
    missing: list[str]
    inputs: list[SourceRef]


def case_features(case: CaseInput, spec: FeatureSpec, text_embedding: Sequence[float] | None,
                  text_fields: Mapping[str, float] | None) -> CaseFeatures:
    """Build the (unstandardized) arrays of one :class:`CaseInput`, recording present/missing inputs.

    ``text_fields``/``text_embedding`` come from the report text (lexicon + sentence encoder); the
    caller passes None for what it could not compute.
    """
    batch = empty_batch(spec, 1)
    present: list[str] = []
    missing: list[str] = []
    inputs: list[SourceRef] = []

    x, m, idx = clinical_raw(case.clinical.values, spec.continuous)
    batch["clin_cont"][0], batch["clin_cont_mask"][0], batch["clin_cat"][0] = x, m, idx
    found = [k for k in (*CONTINUOUS_VARIABLES, *CATEGORICAL_VARIABLES) if k in case.clinical.values]
    if found:
        present.append("clinical")
    else:
        missing.append("clinical")
    for key in sorted(case.clinical.sources):
        inputs.append(case.clinical.sources[key])

    if case.slide is not None:
        morph = case.slide.pathomics.morphology if case.slide.pathomics else None
        topo = case.slide.pathomics.topology if case.slide.pathomics else None
        batch["morph"][0], batch["morph_mask"][0] = named_vector(morph, spec.morphology)
        batch["topo"][0], batch["topo_mask"][0] = named_vector(topo, spec.topology)
        deep, ok = fixed_vector(case.slide.embedding, spec.wsi_embedding_dim)
        batch["wsi_deep"][0] = deep
        has_any = ok > 0 or batch["morph_mask"].any() or batch["topo_mask"].any()
        batch["modality_mask"][0, 0] = 1.0 if has_any else 0.0
        (present if has_any else missing).append("wsi")
        inputs.append(SourceRef(kind="DicomInstance", reference=case.slide.base_sop_instance_uid,
                                display="whole-slide image"))
    else:
        missing.append("wsi")

    if case.ultrasound is not None:
        batch["rad"][0], batch["rad_mask"][0] = named_vector(case.ultrasound.radiomics, spec.radiomics)
        deep, ok = fixed_vector(case.ultrasound.deep_features, spec.us_deep_dim)
        batch["us_deep"][0] = deep
        has_any = ok > 0 or batch["rad_mask"].any()
        batch["modality_mask"][0, 1] = 1.0 if has_any else 0.0
        (present if has_any else missing).append("ultrasound")
        inputs.append(SourceRef(kind="DicomInstance", reference=case.ultrasound.sop_instance_uid,
                                display="breast ultrasound image"))
    else:
        missing.append("ultrasound")

    if text_fields:
        batch["text_fields"][0], batch["text_fields_mask"][0] = named_vector(text_fields, spec.text_fields)
    if text_fields and batch["text_fields_mask"].any():
        present.append("ultrasound_report")
        if case.clinical.ultrasound_report_ref is not None:
            inputs.append(case.clinical.ultrasound_report_ref)
    else:
        missing.append("ultrasound_report")
    emb, ok = fixed_vector(text_embedding, spec.text_embedding_dim)
    batch["text_emb"][0] = emb
    batch["modality_mask"][0, 2] = ok
    (present if ok > 0 else missing).append("ultrasound_report_embedding")
    return CaseFeatures(arrays=batch, present=present, missing=missing, inputs=inputs)
