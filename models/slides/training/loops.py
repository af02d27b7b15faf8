"""Torch training loops of the slide networks: supervised tile nets and the MIL head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.slides.onnx_nets import to_nchw
from models.slides.training.data import _progress
from models.slides.training.nets import GatedAttentionMIL


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Random flips, 90-degree rotations and a mild stain-intensity jitter (a batch at a time)."""
    if torch.rand(1).item() < 0.5:
        x = x.flip(3)
    if torch.rand(1).item() < 0.5:
        x = x.flip(2)
    x = torch.rot90(x, int(torch.randint(0, 4, (1,)).item()), (2, 3))
    gain = 1.0 + 0.06 * torch.randn(x.shape[0], 3, 1, 1)
    return (1.0 - (1.0 - x) * gain).clamp(0.0, 1.0)


def _train_tile_net(
    net: nn.Module, images: np.ndarray, labels: np.ndarray, size: int, epochs: int, seed: int, progress: bool, desc: str
) -> dict[str, float]:
    """Supervised tile training with class-balanced BCE; returns training accuracy/loss."""
    g = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(to_nchw(images, size))
    y_all = torch.from_numpy(labels.astype(np.float32))
    pos = float(y_all.sum())
    pos_weight = torch.tensor(min(10.0, max(1.0, (len(y_all) - pos) / max(pos, 1.0))))
    lossf = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * (-(-len(y_all) // 64))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    last = 0.0
    for _ in _progress(range(epochs), desc, progress):
        perm = torch.randperm(len(y_all), generator=g)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            out = net(_augment(x_all[idx]))
            logit = out[1] if isinstance(out, tuple) else out
            loss = lossf(logit, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            last = loss.item()
    net.eval()
    with torch.no_grad():
        logits = []
        for i in range(0, len(y_all), 128):
            out = net(x_all[i : i + 128])
            logits.append(out[1] if isinstance(out, tuple) else out)
        acc = float(((torch.cat(logits) > 0).float() == y_all).float().mean())
    return {"train_accuracy": acc, "final_loss": last}


def _train_mil(
    mil: GatedAttentionMIL, bags: list[np.ndarray], labels: list[int], epochs: int, seed: int, progress: bool
) -> float:
    """Train the MIL head on bags (one slide = one bag), with random instance subsampling."""
    rng = np.random.default_rng(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small bag per step: extra threads only add synchronisation
    opt = torch.optim.AdamW(mil.parameters(), lr=1e-3, weight_decay=1e-3)
    lossf = nn.BCEWithLogitsLoss()
    mil.train()
    last = 0.0
    for _ in _progress(range(epochs), "MIL head", progress):
        total = 0.0
        for i in rng.permutation(len(bags)):
            bag = bags[i]
            keep = rng.random(len(bag)) < rng.uniform(0.6, 1.0)
            if keep.sum() < 2:
                keep[:] = True
            feats = torch.from_numpy(bag[keep].astype(np.float32))
            feats = feats + 0.05 * torch.randn_like(feats) * feats.std()
            logit, _, _ = mil(feats)
            loss = lossf(logit.reshape(1), torch.tensor([float(labels[i])]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        last = total / max(1, len(bags))
    mil.eval()
    torch.set_num_threads(threads)
    return last
