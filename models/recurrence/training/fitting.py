"""Fitting one recurrence network ensemble: tensors, missing-input augmentation, the Cox training loop."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel

from models.recurrence.features import DERIVED_FROM, INPUT_NAMES, FeatureSpec, standardize
from models.recurrence.survival import DAYS_PER_YEAR, HORIZONS_YEARS, BaselineHazard
from models.recurrence.training import cohort
from models.recurrence.training.network import MRRPNet, cox_loss


class TrainConfig(BaseModel):
    dim: int = 16
    dropout: float = 0.2
    lr: float = 3e-3
    weight_decay: float = 1e-3
    epochs: int = 200
    image_branches: bool = True
    fusion: str = "attention"
    missing_mode: str = "learned"
    clinical_dropout: float = 0.1  # chance a clinical variable is hidden in a training step
    modality_dropout: float = 0.15  # chance an image modality is hidden in a training step
    ensemble: int = 3


def _tensors(batch: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(batch[k])) for k in INPUT_NAMES]


def _clinical_columns(spec: FeatureSpec) -> np.ndarray:
    """Column index of the source variable of each continuous input (derived inputs share it)."""
    names = list(spec.continuous)
    return np.array([names.index(DERIVED_FROM.get(n, n)) if DERIVED_FROM.get(n, n) in names else j
                     for j, n in enumerate(names)])


def _augment(batch: dict[str, np.ndarray], cfg: TrainConfig, rng: np.random.Generator,
             source_cols: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Hide random clinical variables and image modalities so the missing embeddings get trained.

    A derived input (the age spline terms) is hidden together with its source variable, as it
    would be at runtime.
    """
    out = dict(batch)
    n = batch["clin_cont"].shape[0]
    if cfg.clinical_dropout > 0:
        keep = rng.random(batch["clin_cont_mask"].shape) >= cfg.clinical_dropout
        if source_cols is not None:
            keep = keep[:, source_cols]
        out["clin_cont_mask"] = batch["clin_cont_mask"] * keep
        out["clin_cont"] = batch["clin_cont"] * keep
        keep_c = rng.random(batch["clin_cat"].shape) >= cfg.clinical_dropout
        out["clin_cat"] = batch["clin_cat"] * keep_c
    if cfg.image_branches and cfg.modality_dropout > 0:
        mm = batch["modality_mask"] * (rng.random((n, 3)) >= cfg.modality_dropout)
        out["modality_mask"] = mm.astype(np.float32)
        cohort.apply_modality_mask(out)
    return out


def fit_network(spec: FeatureSpec, batch: dict[str, np.ndarray], time: np.ndarray, event: np.ndarray,
                cfg: TrainConfig, seed: int,
                checkpoints: tuple[int, ...] = (),
                on_checkpoint=None) -> MRRPNet:
    """Full-batch Adam on the Cox loss (the cohorts are a few hundred patients).

    ``on_checkpoint(epoch, net)`` is called (network in eval mode) after each epoch listed in
    ``checkpoints``; the inner CV uses it to score several epoch budgets from one run.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = MRRPNet(spec, cfg.dim, cfg.dropout, cfg.image_branches, cfg.fusion, cfg.missing_mode)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    t = torch.from_numpy(time.astype(np.float32))
    e = torch.from_numpy(event.astype(np.float32))
    cols = _clinical_columns(spec)
    net.train()
    for epoch in range(1, cfg.epochs + 1):
        inputs = _tensors(_augment(batch, cfg, rng, cols))
        opt.zero_grad()
        loss = cox_loss(net(*inputs), t, e)
        loss.backward()
        opt.step()
        if on_checkpoint is not None and epoch in checkpoints:
            net.eval()
            on_checkpoint(epoch, net)
            net.train()
    net.eval()
    return net


def predict(nets: list[MRRPNet], batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        inputs = _tensors(batch)
        return np.mean([n(*inputs).numpy() for n in nets], axis=0).astype(float)


class Ensemble(torch.nn.Module):
    """Averages member log hazards and applies the calibration slope (what ONNX exports)."""

    def __init__(self, nets: list[MRRPNet], shrinkage: float) -> None:
        super().__init__()
        self.nets = torch.nn.ModuleList(nets)
        self.register_buffer("shrinkage", torch.tensor(float(shrinkage)))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.shrinkage * torch.stack([n(*inputs) for n in self.nets], 0).mean(0)


class FittedModel(BaseModel):
    """Everything a trained model needs besides its weights (goes into the card)."""

    model_config = {"arbitrary_types_allowed": True}

    config: TrainConfig
    spec: FeatureSpec
    shrinkage: float
    baseline: BaselineHazard
    cutoff: float
    selection: list[dict]
    nets: list = []

    def risk_score(self, batch_raw: dict[str, np.ndarray]) -> np.ndarray:
        """Calibrated log hazard for an unstandardized batch."""
        return self.shrinkage * predict(self.nets, standardize(batch_raw, self.spec.scalers))

    def absolute_risk(self, lp: np.ndarray) -> dict[int, np.ndarray]:
        return {y: self.baseline.absolute_risk(lp, y * DAYS_PER_YEAR) for y in HORIZONS_YEARS}
