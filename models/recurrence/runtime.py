"""Recurrence case model (MRRP) at runtime: onnxruntime only, no torch.

Two exported models are loaded: the full MRRP fusion (trained on the semi-synthetic cohort) and
the clinical branch alone (trained on real GBSG2). A case with any imaging input (slide or
ultrasound features) goes through the fusion model; a case with clinical data only goes through
the clinical model, which was trained and validated on real patients. Either way the result
names the model, the inputs used (FHIR Observations, DICOM instances, the report) and the
modalities that were missing (those were replaced by the learned missing-modality embeddings).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cds.contracts.cards import ModelCard
from cds.contracts.domain import CaseInput, RecurrenceResult
from cds.contracts.errors import InsufficientInput
from cds.contracts.model import ModelUnavailable
from cds.contracts.settings import Settings
from models.recurrence.encoding import describe_encoding
from models.recurrence.features import INPUT_NAMES, CaseFeatures, FeatureSpec, case_features, standardize
from models.recurrence.survival import DAYS_PER_YEAR, HORIZONS_YEARS, BaselineHazard
from models.text.embedding import SentenceEncoder, load_sentence_encoder, text_model_dir
from models.text.lexicon import extract_lexicon
from models.weights import load_weights, shipped_dir
from models.weights import weights_dir as shared_weights_dir

log = logging.getLogger(__name__)

CLINICAL_NAME = "recurrence-clinical"
FUSION_NAME = "recurrence-mrrp"
SHIPPED_WEIGHTS = shipped_dir("recurrence")


class ExportedCoxModel:
    """One ONNX recurrence network with its card (feature spec, baseline hazard, cut-off)."""

    def __init__(self, card_path: Path, card: ModelCard | None = None) -> None:
        import onnxruntime as ort

        if card is None:  # not verified: callers that load for the pipeline go through load()
            card = ModelCard.read(card_path)
        self.card = card
        onnx_path = card_path.parent / self.card.extra["onnx_file"]
        if not onnx_path.exists():
            raise ModelUnavailable(f"{onnx_path} missing (card {card_path.name} names it)")
        self.identity = self.card.identity(card_path)
        self.spec = FeatureSpec.model_validate(self.card.inputs["feature_spec"])
        self.baseline = BaselineHazard.model_validate(self.card.calibration["baseline_hazard"])
        self.cutoff = float(self.card.thresholds["risk_group_cutoff"])
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}

    def risk_score(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Calibrated log hazard for unstandardized arrays (batch first)."""
        std = standardize(arrays, self.spec.scalers)
        feed = {k: std[k] for k in INPUT_NAMES if k in self._inputs}
        (out,) = self.session.run(["risk_score"], feed)
        return out.astype(float)

    def absolute_risk(self, lp: float) -> dict[int, float]:
        return {y: float(self.baseline.absolute_risk(np.array([lp]), y * DAYS_PER_YEAR)[0]) for y in HORIZONS_YEARS}


class RecurrenceModel:
    """CaseModel: risk score, risk group and absolute risk at 3/5/7 years for one patient case."""

    def __init__(self, fusion: ExportedCoxModel, clinical: ExportedCoxModel | None,
                 encoder: SentenceEncoder | None) -> None:
        self.fusion, self.clinical, self.encoder = fusion, clinical, encoder
        self.identity = fusion.identity

    def analyze_case(self, case: CaseInput) -> RecurrenceResult:
        """The one answer the model would give: the fusion with imaging, else the clinical branch."""
        return self.analyze_case_all(case)[0]

    def analyze_case_all(self, case: CaseInput) -> list[RecurrenceResult]:
        """Every variant that can answer this case, the default first: the fusion model when the
        case has imaging features, and the clinical model whenever it has clinical values."""
        text = case.clinical.ultrasound_report_text.strip()
        fields = extract_lexicon(text).model_fields_numeric() if text else None
        embedding = self.encoder.encode(text) if (text and self.encoder is not None) else None
        feats = case_features(case, self.fusion.spec, embedding, fields)
        has_imaging = bool(feats.arrays["modality_mask"][0, :2].any())
        if "clinical" in feats.missing and not has_imaging:
            raise InsufficientInput("recurrence model: the case has no clinical values and no imaging features")
        models = [self.fusion] if (has_imaging or self.clinical is None) else []
        if self.clinical is not None and "clinical" not in feats.missing:
            models.append(self.clinical)
        return [self._result(case, feats, m) for m in models]

    def _result(self, case: CaseInput, feats: CaseFeatures, model: ExportedCoxModel) -> RecurrenceResult:
        clinical_only = model is self.clinical
        score = float(model.risk_score(feats.arrays)[0])
        missing = list(feats.missing)
        if self.encoder is None and case.clinical.ultrasound_report_text.strip():
            log.info("report embedding unavailable: sentence encoder not exported")
        absolute = model.absolute_risk(score)
        log.info("recurrence case %s: model %s, present %s, missing %s",
                 case.patient.key, model.identity.name, feats.present, missing)
        return RecurrenceResult(
            model=model.identity,
            risk_score=score,
            risk_group="high" if score >= model.cutoff else "low",
            cutoff=model.cutoff,
            absolute_risk=absolute,
            modalities_present=["clinical"] if clinical_only else feats.present,
            modalities_missing=missing,
            inputs=[i for i in feats.inputs if i.kind in ("Observation", "Patient")] if clinical_only
            else feats.inputs,
            scope="clinical" if clinical_only else "multimodal",
            clinical_values=list(case.clinical.measured.values()),
            not_used=list(case.clinical.not_used),
            input_encoding=describe_encoding(case.clinical),
        )


def weights_dir(settings: Settings) -> Path:
    return shared_weights_dir(settings, "recurrence")


def _verified(directory: Path, name: str) -> ExportedCoxModel:
    weights = load_weights(directory, f"{name}.card.json", model=f"recurrence ({name})",
                           files=lambda card: [card.extra["onnx_file"]])
    return ExportedCoxModel(weights.card_path, weights.card)


def load(settings: Settings) -> RecurrenceModel:
    directory = weights_dir(settings)
    fusion = _verified(directory, FUSION_NAME)
    clinical = _verified(directory, CLINICAL_NAME) if (directory / f"{CLINICAL_NAME}.card.json").exists() else None
    encoder = load_sentence_encoder(text_model_dir(settings.models_dir, settings.data_dir))
    return RecurrenceModel(fusion, clinical, encoder)
