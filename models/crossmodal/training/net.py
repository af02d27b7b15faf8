"""The shared encoder with one adapter per modality, and its losses (PyTorch; training and export).

Architecture (one set of convolution weights for both modalities, so what is learned on one
transfers to the other, and the alignment has something shared to align):

* stems: mammography crop 1 channel, pathology patch RGB 3 channels, each a 3x3 convolution to
  the backbone width (the input adapters);
* shared backbone: three stride-2 convolution blocks, 48 -> 24 -> 12 -> 6, global average pool.
  Its normalization layers are per modality (domain-specific batch norm): mammography and H&E
  statistics differ by orders of magnitude, and one set of running statistics fed by both would
  fit neither at eval. The mammography norms are :class:`~models.mammography.training.net.AdaptiveNorm`,
  so test-time adaptation blends running and target-batch statistics (AdaBN when alpha = 1);
* MixStyle (imported from the mammography network) after the stem and the first block, on the
  mammography branch only, in training only (vendors differ in low-level statistics);
* per-modality bottleneck adapter (residual 64 -> 16 -> 64) after the pool;
* a shared projection head (64 -> 64 -> D) to the L2-normalised embedding;
* task heads: mammography 4 classes, pathology 3 classes, both on the adapted features.

Losses: :func:`info_nce` (symmetric, over the batch's same-patient pairs) and :func:`irm_penalty`
(IRMv1, Arjovsky et al. 2019: the squared gradient of an environment's risk w.r.t. a dummy scale
w = 1 on the logits, summed over environments).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.crossmodal.crop import CROP
from models.mammography.training.net import AdaptiveNorm, MixStyle

MODALITIES = ("mammo", "path")
N_MAMMO_CLASSES = 4
N_PATH_CLASSES = 3


class _Block(nn.Module):
    """Convolution shared by both modalities, normalization per modality, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm = nn.ModuleDict({m: AdaptiveNorm(cout) for m in MODALITIES})

    def forward(self, x: torch.Tensor, modality: str, alpha: torch.Tensor | None) -> torch.Tensor:
        return F.relu(self.norm[modality](self.conv(x), alpha))


class _Adapter(nn.Module):
    """Residual bottleneck MLP: a few hundred parameters of modality-specific correction."""

    def __init__(self, width: int, hidden: int = 16) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(width, hidden), nn.Linear(hidden, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.relu(self.down(h)))


class CrossModalNet(nn.Module):
    """Shared CNN encoder with per-modality stems, norms and adapters; see the module docstring."""

    def __init__(self, widths: tuple[int, int, int] = (24, 48, 64), dim: int = 64,
                 mixstyle: bool = False) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.dim, self.width = dim, w2
        self.stem = nn.ModuleDict({"mammo": nn.Conv2d(1, w0, 3, 1, 1, bias=False),
                                   "path": nn.Conv2d(3, w0, 3, 1, 1, bias=False)})
        self.stem_norm = nn.ModuleDict({m: AdaptiveNorm(w0) for m in MODALITIES})
        self.blocks = nn.ModuleList([_Block(w0, w1, 2), _Block(w1, w2, 2), _Block(w2, w2, 2)])
        self.mix = nn.ModuleList([MixStyle(p=0.5, alpha=0.1), MixStyle(p=0.5, alpha=0.1)])
        self.set_mixstyle(mixstyle)
        self.adapter = nn.ModuleDict({m: _Adapter(w2) for m in MODALITIES})
        self.proj = nn.Sequential(nn.Linear(w2, w2), nn.ReLU(), nn.Linear(w2, dim))
        self.head = nn.ModuleDict({"mammo": nn.Linear(w2, N_MAMMO_CLASSES),
                                   "path": nn.Linear(w2, N_PATH_CLASSES)})

    def set_mixstyle(self, enabled: bool) -> None:
        for m in self.mix:
            m.enabled = enabled  # type: ignore[assignment]

    def features(self, x: torch.Tensor, modality: str, alpha: torch.Tensor | None = None) -> torch.Tensor:
        """Adapted, pooled features (N, width)."""
        h = F.relu(self.stem_norm[modality](self.stem[modality](x), alpha))
        for i, block in enumerate(self.blocks):
            if modality == "mammo" and i < len(self.mix):
                h = self.mix[i](h)
            h = block(h, modality, alpha)
        return self.adapter[modality](h.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor, modality: str,
                alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised embedding (N, D), task logits) of one modality's batch."""
        h = self.features(x, modality, alpha)
        return F.normalize(self.proj(h), dim=1), self.head[modality](h)


class MammoEncoder(nn.Module):
    """The inference graph that ships: crop (N,1,48,48) -> (embedding, class_logits), plain eval."""

    def __init__(self, net: CrossModalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(crop, "mammo")


def info_nce(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``z_a`` and row i of ``z_b`` are the positive pair, every other
    row of the batch a negative; mean of the a->b and b->a cross-entropies over ``a @ b.T / tau``."""
    logits = z_a @ z_b.T / tau
    target = torch.arange(len(z_a), device=z_a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def irm_penalty(logits: torch.Tensor, y: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    """IRMv1: sum over environments e of (d/dw CE(w * logits_e, y_e) at w = 1)^2.

    The gradient is taken with ``create_graph`` so the penalty itself is differentiable.
    """
    total = logits.new_zeros(())
    for e in torch.unique(env):
        sel = env == e
        w = torch.ones((), requires_grad=True, device=logits.device)
        loss = F.cross_entropy(logits[sel] * w, y[sel])
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        total = total + g.pow(2)
    return total


def dummy_crop(n: int = 2) -> torch.Tensor:
    return torch.zeros(n, 1, CROP, CROP)
