"""Training one arm of the cross-modal model and scoring it (AUC, ECE, cosine, retrieval).

An arm is an :class:`ArmConfig`: MixStyle on/off, IRM weight and warm-up, alignment weight
lambda and temperature. Arms with the same seed see the same initial weights and the same
patient order and patch choices (a numpy generator seeded by the seed alone), so arm-to-arm
differences come from the arm, not the draw; MixStyle's own mixing draws consume torch's
generator, so the arms' torch streams differ after the first mixed batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from models.crossmodal.training.data import Arrays, crops_to_input, patches_to_input
from models.crossmodal.training.net import CrossModalNet, info_nce, irm_penalty
from models.training.calibration import expected_calibration_error


@dataclass(frozen=True)
class ArmConfig:
    """One experimental arm; defaults are the values chosen on the calibration split (CHANGELOG)."""

    mixstyle: bool = False
    irm_weight: float = 0.0
    irm_warmup: int = 3  # epochs of plain risk before the IRM penalty is switched on
    align: float = 0.0  # lambda, weight of the InfoNCE term (0 = no alignment)
    tau: float = 0.1
    epochs: int = 14
    batch: int = 48
    lr: float = 3e-3
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _flip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal and vertical flips per sample (both modalities are orientation-free here)."""
    out = x.copy()
    h, v = rng.random(len(x)) < 0.5, rng.random(len(x)) < 0.5
    out[h] = out[h][..., ::-1]
    out[v] = out[v][..., ::-1, :]
    return out


def _batch_loss(net: CrossModalNet, cfg: ArmConfig, data: Arrays, idx: np.ndarray,
                rng: np.random.Generator, irm_on: bool) -> torch.Tensor:
    """Task CE (+ pathology CE) + lambda * InfoNCE over same-patient pairs (+ IRM penalty)."""
    xm = torch.from_numpy(_flip(crops_to_input(data["crops"][idx]), rng))
    ym = torch.from_numpy(data["labels"][idx])
    pick = rng.integers(0, data["patches"].shape[1], len(idx))  # drawn for every patient: same order in all arms
    lesion = data["patch_labels"][idx] >= 0
    zm_all, logits_m = net(xm, "mammo")
    loss = F.cross_entropy(logits_m, ym)
    if lesion.sum() >= 2:
        xp = patches_to_input(data["patches"][idx[lesion], pick[lesion]])
        zp, logits_p = net(torch.from_numpy(_flip(xp, rng)), "path")
        loss = loss + F.cross_entropy(logits_p, torch.from_numpy(data["patch_labels"][idx[lesion]]))
        if cfg.align > 0:
            loss = loss + cfg.align * info_nce(zm_all[torch.from_numpy(lesion)], zp, cfg.tau)
    if irm_on and cfg.irm_weight > 0:
        _, env = np.unique(data["vendors"][idx], return_inverse=True)
        loss = loss + cfg.irm_weight * irm_penalty(logits_m, ym, torch.from_numpy(env))
    return loss


def train_arm(data: Arrays, cfg: ArmConfig, log_every: int = 0) -> tuple[CrossModalNet, dict]:
    """Train a fresh network on ``data`` (already restricted to its training patients)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = CrossModalNet(mixstyle=cfg.mixstyle)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    n = len(data["labels"])
    steps = cfg.epochs * math.ceil(n / cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    t0, losses = time.monotonic(), []
    for epoch in range(cfg.epochs):
        net.train()
        order = rng.permutation(n)
        total = 0.0
        for s in range(0, n, cfg.batch):
            idx = order[s:s + cfg.batch]
            if len(idx) < 4:
                continue
            loss = _batch_loss(net, cfg, data, idx, rng, irm_on=epoch >= cfg.irm_warmup)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if log_every and (epoch + 1) % log_every == 0:
            print(f"  epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.3f}", flush=True)
    net.eval()
    return net, {"seconds": round(time.monotonic() - t0, 1), "loss_per_epoch": [round(v, 4) for v in losses]}


@torch.no_grad()
def embed(net: CrossModalNet, x: np.ndarray, modality: str, alpha: float | None = None,
          batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, logits) in eval mode; ``alpha`` blends in the statistics of ALL of ``x`` (TTA)."""
    net.eval()
    if alpha is not None:  # test-time adaptation: the whole target set is one batch
        z, lo = net(torch.from_numpy(x), modality, torch.tensor([alpha]))
        return z.numpy(), lo.numpy()
    outs = [net(torch.from_numpy(x[s:s + batch]), modality) for s in range(0, len(x), batch)]
    return (np.concatenate([o[0].numpy() for o in outs]), np.concatenate([o[1].numpy() for o in outs]))


def malignancy_scores(net: CrossModalNet, data: Arrays, alpha: float | None = None) -> dict:
    """AUC (in situ + invasive vs normal + benign) and 15-bin binary ECE of P(malignant)."""
    _, logits = embed(net, crops_to_input(data["crops"]), "mammo", alpha)
    p = torch.softmax(torch.from_numpy(logits), 1).numpy()
    p_mal = p[:, 2] + p[:, 3]
    y = (data["labels"] >= 2).astype(int)
    auc = float(roc_auc_score(y, p_mal)) if len(np.unique(y)) == 2 else float("nan")
    return {"auc": auc, "ece": expected_calibration_error(p_mal, y, n_bins=15),
            "accuracy4": float((p.argmax(1) == data["labels"]).mean())}


def pair_cosines(net: CrossModalNet, data: Arrays) -> dict:
    """Mean cosine of each lesion patient's crop with its own patches, and with other patients'."""
    les = data["patch_labels"] >= 0
    zm, _ = embed(net, crops_to_input(data["crops"][les]), "mammo")
    k = data["patches"].shape[1]
    zp, _ = embed(net, patches_to_input(data["patches"][les].reshape(-1, *data["patches"].shape[2:])), "path")
    sims = zm @ zp.reshape(len(zm), k, -1).mean(1).T  # crop vs patient's mean patch direction
    per_patch = np.einsum("nd,nkd->nk", zm, zp.reshape(len(zm), k, -1))
    full = zm @ zp.T
    owner = np.repeat(np.arange(len(zm)), k)
    non = full[np.arange(len(zm))[:, None] != owner[None, :]]
    rank = (sims > np.diag(sims)[:, None]).sum(1)  # 0 = own patient's patches rank first
    return {"intra_pair_cosine": float(per_patch.mean()), "non_pair_cosine": float(non.mean()),
            "top1_patient_rate": float((rank == 0).mean()), "mean_patient_rank": float(rank.mean() + 1),
            "n_patients": int(les.sum()), "chance_top1": 1.0 / max(int(les.sum()), 1)}


def retrieval(query_z: np.ndarray, query_cls: np.ndarray, bank_z: np.ndarray, bank_cls: np.ndarray) -> dict:
    """Fraction of each query's top-1 / top-3 bank items of the query's class, against chance
    (the bank's prevalence of the query's class, averaged over queries)."""
    order = np.argsort(-(query_z @ bank_z.T), axis=1)
    hits = bank_cls[order[:, :3]] == query_cls[:, None]
    prevalence = np.array([(bank_cls == c).mean() for c in query_cls])
    return {"top1": float(hits[:, 0].mean()), "top3": float(hits.mean()),
            "chance": float(prevalence.mean()), "n_queries": int(len(query_z))}
