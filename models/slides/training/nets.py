"""PyTorch architectures of the slide model (training and ONNX export only; never imported at runtime).

* :class:`PatchCNN` — stage 1: scores a low-magnification patch (2 um/px) for tumour, cheap enough
  to run on every tissue tile (a fifteenth of the encoder's multiply-adds);
* :class:`TileEncoder` — stage 2: a small CNN over a high-magnification tile (1 um/px) that gives
  a feature vector (the MIL instance) and an auxiliary tile tumour logit;
* :class:`GatedAttentionMIL` — gated-attention multiple-instance pooling (Ilse, Tomczak & Welling,
  ICML 2018): attention a_k = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k))), slide embedding
  z = sum_k a_k h_k, slide logit from z. The attention weights are the heatmap.

Inputs are float32 RGB in [0, 1], NCHW; each network normalises internally so the ONNX graph is
self-contained.
"""

from __future__ import annotations

import torch
from torch import nn

STAGE1_INPUT = 64
ENCODER_INPUT = 128
FEATURE_DIM = 64


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Normalise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.25


class PatchCNN(nn.Module):
    """Stage-1 patch classifier: (N,3,64,64) -> tumour logit (N,).

    It runs on every tissue tile, so its cost per tile sets the two-stage speed-up on large slides
    (full resolution costs one encoder pass per tissue tile, two-stage one PatchCNN pass). The
    first convolution has stride 2 (about 2.9 M multiply-adds per patch, a fifteenth of the
    encoder's 44 M); the first shipped version ran it at full patch resolution (11.8 M, a third of
    the encoder) and capped the speed-up near 4x whatever the slide size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _Normalise(),
            _block(3, 16, stride=2),
            nn.MaxPool2d(2),
            _block(16, 32),
            nn.MaxPool2d(2),
            _block(32, 48),
            nn.MaxPool2d(2),
            _block(48, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


class TileEncoder(nn.Module):
    """Stage-2 tile encoder: (N,3,128,128) -> (features (N,64), tumour logit (N,))."""

    def __init__(self, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _Normalise(),
            _block(3, 16, stride=2),
            _block(16, 32),
            nn.MaxPool2d(2),
            _block(32, 48),
            nn.MaxPool2d(2),
            _block(48, 64),
            nn.MaxPool2d(2),
            _block(64, feature_dim),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(feature_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f).squeeze(1)


class GatedAttentionMIL(nn.Module):
    """Gated-attention MIL head over one bag: (N,D) -> (slide logit (1,), attention (N,), embedding (D,))."""

    def __init__(self, in_dim: int = FEATURE_DIM, hidden: int = 64, attn_dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1))
        self.att_v = nn.Linear(hidden, attn_dim)
        self.att_u = nn.Linear(hidden, attn_dim)
        self.att_w = nn.Linear(attn_dim, 1)
        self.classifier = nn.Linear(hidden, 1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.embed(feats)
        gate = torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))
        scores = self.att_w(gate).squeeze(1)
        attention = torch.softmax(scores, dim=0)
        z = (attention.unsqueeze(1) * h).sum(dim=0)
        logit = self.classifier(z)
        return logit, attention, z


class TorchTileNets:
    """Torch-eager implementation of :class:`models.slides.analysis.TileNets` (training, bench)."""

    def __init__(self, stage1: PatchCNN, encoder: TileEncoder, mil: GatedAttentionMIL) -> None:
        self.stage1_net, self.encoder_net, self.mil_net = stage1.eval(), encoder.eval(), mil.eval()

    @staticmethod
    def _x(images, size: int) -> torch.Tensor:
        from models.slides.onnx_nets import to_nchw

        return torch.from_numpy(to_nchw(images, size))

    @torch.no_grad()
    def stage1(self, patches):
        out = [torch.sigmoid(self.stage1_net(self._x(patches[i : i + 128], STAGE1_INPUT))) for i in range(0, len(patches), 128)]
        return torch.cat(out).numpy() if out else torch.zeros(0).numpy()

    @torch.no_grad()
    def encode(self, tiles):
        fs, ps = [], []
        for i in range(0, len(tiles), 32):
            f, lg = self.encoder_net(self._x(tiles[i : i + 32], ENCODER_INPUT))
            fs.append(f)
            ps.append(torch.sigmoid(lg))
        return torch.cat(fs).numpy(), torch.cat(ps).numpy()

    @torch.no_grad()
    def mil(self, features):
        logit, att, emb = self.mil_net(torch.from_numpy(features.astype("float32")))
        return float(logit.reshape(-1)[0]), att.numpy(), emb.numpy()
