"""The training loop of :class:`MammoNet`: augmentation, self-pairing, checkpointed epochs, prediction."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from models.mammography.preprocess import INPUT_SHAPE
from models.mammography.training.config import TrainConfig
from models.mammography.training.data import MammoArrays
from models.mammography.training.net import MammoNet, multitask_loss, upsample_seg

log = logging.getLogger(__name__)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), disable=not enabled,
                    transient=False)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Intensity augmentation: random gamma, contrast and noise (geometry is left alone)."""
    n = x.shape[0]
    gamma = torch.exp(torch.empty(n, 1, 1, 1).uniform_(-0.25, 0.25, generator=gen))
    xc = x.clamp(0.0, 1.5)
    x = torch.where(x > 0, xc.pow(gamma), x)
    scale = torch.empty(n, 1, 1, 1).uniform_(0.85, 1.15, generator=gen)
    noise = torch.randn(x.shape, generator=gen) * torch.empty(n, 1, 1, 1).uniform_(0, 0.03, generator=gen)
    return x * scale + noise


def _seg_target(mask: np.ndarray) -> torch.Tensor:
    """Ground truth at the input resolution (n, 1, H, W), the geometry IoU is scored in."""
    return torch.from_numpy(mask[:, None].astype(np.float32))


def _new_net(cfg: TrainConfig) -> MammoNet:
    return MammoNet(mixstyle=cfg.mixstyle, seg_stride=cfg.seg_stride, dec_width=cfg.dec_width,
                    dec_convs=cfg.dec_convs, in_channels=2 if cfg.bilateral else 1)


def _net_input(x: np.ndarray, net: MammoNet) -> np.ndarray:
    """The channels ``net`` reads from bilateral arrays (n, 2, H, W): both, or the image alone."""
    return x[:, : net.in_channels]


def _self_pair(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, replace the contralateral channel by the image itself.

    The runtime does that when a study lacks the other breast's view; trained this way, the
    network still reads such an image on its own instead of seeing a spurious "no difference".
    """
    if x.shape[1] < 2 or p <= 0:
        return x
    swap = torch.rand(x.shape[0], generator=gen) < p
    if not bool(swap.any()):
        return x
    x = x.clone()
    x[swap, 1] = x[swap, 0]
    return x


def net_for_config(config: dict) -> MammoNet:
    """An untrained network of the architecture a card's ``training.config`` records (keys this
    version does not know, such as a removed option, are ignored)."""
    known = {k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__}
    return _new_net(TrainConfig(**known))


def fit(data: MammoArrays, cfg: TrainConfig, progress: bool = True, checkpoint: Path | None = None,
        resume: bool = True, label: str = "train") -> MammoNet:
    """Train a fresh :class:`MammoNet` on ``data`` (all of it); checkpoint after each epoch."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = _new_net(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(data)
    steps_per_epoch = max(1, n // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    start = 0
    spent: float | None = 0.0  # training seconds over all runs of this network (None: unknown)
    if checkpoint is not None and resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        same = {k: v for k, v in state.get("config", {}).items() if k != "threads"} == \
            {k: v for k, v in asdict(cfg).items() if k != "threads"}
        if same and state.get("n") == n:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            gen.set_state(state["gen"])
            start = int(state["epoch"]) + 1
            spent = state.get("train_seconds")  # absent in older checkpoints
            log.info("resuming %s from epoch %d (%s)", label, start, checkpoint)
        else:
            log.info("checkpoint %s is for another configuration; starting afresh", checkpoint)
    x_all = torch.from_numpy(_net_input(data.x, net))
    seg_all = _seg_target(data.mask)
    y_all = torch.from_numpy(data.y)
    g_all = torch.from_numpy(data.grade)
    w_all = torch.from_numpy(data.has_mask.astype(np.float32))
    with _progress(progress) as bar:
        task = bar.add_task(f"[{label}] epochs", total=cfg.epochs, completed=start, info="")
        for epoch in range(start, cfg.epochs):
            t_epoch = time.time()
            net.train()
            perm = torch.randperm(n, generator=gen)
            tot, parts_sum = 0.0, torch.zeros(3)
            for s in range(steps_per_epoch):
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                xb = _augment(_self_pair(x_all[idx], cfg.self_pair_p, gen), gen)
                logits, seg, grade_probs, _ = net(xb)
                loss, parts = multitask_loss(net, logits, seg, grade_probs, y_all[idx], seg_all[idx],
                                             g_all[idx], w_all[idx], pos_weight=cfg.pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach())
                parts_sum += parts
            p = parts_sum / steps_per_epoch
            info = f"loss {tot / steps_per_epoch:.3f} cls {p[0]:.3f} seg {p[1]:.3f} grade {p[2]:.3f}"
            bar.update(task, advance=1, info=info)
            log.info("[%s] epoch %d/%d %s", label, epoch + 1, cfg.epochs, info)
            if spent is not None:
                spent += time.time() - t_epoch
            if checkpoint is not None:
                torch.save({"train_seconds": spent, "epoch": epoch, "model": net.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "gen": gen.get_state(), "config": asdict(cfg),
                            "n": n}, checkpoint)
    net.eval()
    # what the card reports: a resumed run's own wall time says nothing of the training
    net.start_epoch, net.train_seconds = start, spent
    return net


@torch.no_grad()
def predict(net: MammoNet, x: np.ndarray, alpha: float = 0.0, batch: int = 32):
    """Class logits, segmentation probabilities (n, H, W) at input size, grade probabilities."""
    net.eval()
    out_l, out_s, out_g = [], [], []
    a = torch.tensor([alpha], dtype=torch.float32)
    x = _net_input(x, net)
    for i in range(0, len(x), batch):
        logits, seg, gp, _ = net(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])), a)
        out_l.append(logits.numpy())
        out_s.append(torch.sigmoid(upsample_seg(seg, INPUT_SHAPE))[:, 0].numpy())
        out_g.append(gp.numpy())
    return np.concatenate(out_l), np.concatenate(out_s), np.concatenate(out_g)


def _state_numpy(net: MammoNet) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def _net_from_state(state: dict[str, np.ndarray], cfg: TrainConfig) -> MammoNet:
    net = _new_net(cfg)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return net.eval()


def _fit_job(data: MammoArrays, train_sel: np.ndarray, cfg: TrainConfig, checkpoint: Path,
             resume: bool, label: str, progress: bool, eval_sel: np.ndarray | None = None) -> dict:
    """Train on ``data[train_sel]``; return the weights and, if asked, logits on ``data[eval_sel]``."""
    net = fit(data.subset(train_sel), cfg, progress, checkpoint, resume, label=label)
    out: dict = {"state": _state_numpy(net), "start_epoch": net.start_epoch,
                 "train_seconds": None if net.train_seconds is None else round(net.train_seconds, 1)}
    if eval_sel is not None:
        out["logits"] = predict(net, data.x[eval_sel])[0]
    return out
