"""The mammography network (PyTorch; training and export only).

The input has two channels: the image and the contralateral image of the same view, both in the
canonical orientation (:func:`models.mammography.pairing.bilateral_input`); a radiologist finds an
asymmetry by comparing the two breasts, and so can the first convolution (``in_channels=1``
builds a single-image network).

One small residual CNN backbone feeds three heads:

* classification: 4 logits (normal, benign, in situ, invasive) from average- and max-pooled deep
  features, features of two stages pooled with attention weights taken from the localization
  logits (so the classifier describes the lesion, not the whole breast), and the map's maximum
  and log-mean-exp (lesion presence);
* localization: an FPN-style decoder (lateral 1x1 projections, then three 3x3 convolutions of
  width 32 at stride 4), its logits upsampled to the input size; its sigmoid is the lesion mask
  and doubles as the per-image saliency heatmap;
* grading: a cumulative-link (proportional-odds) head: one score ``s`` and K-1 ordered thresholds
  ``theta_1 < ... < theta_{K-1}`` (first threshold plus cumulative softplus increments), so
  ``P(grade <= k) = sigmoid(theta_k - s)`` is monotone in k by construction.

MixStyle (Zhou et al., 2021) mixes instance feature statistics between images of a batch after
the first stages, in training only: vendors differ mostly in such low-level statistics, so this
is cheap domain generalization. Normalization layers take a ``tta_alpha`` input: at inference the
statistics used are ``(1 - alpha) * running + alpha * batch`` over the exam's images (test-time
adaptation; alpha 0 = plain eval). The alpha is a graph input so one ONNX file serves both modes.

Multitask loss: homoscedastic-uncertainty weighting (Kendall et al., 2018),
``sum_i exp(-s_i) * L_i + s_i`` with learned log-variances ``s_i``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.mammography.preprocess import INPUT_SHAPE

N_CLASSES = 4
N_GRADES = 4


class AdaptiveNorm(nn.BatchNorm2d):
    """BatchNorm whose eval-time statistics can be blended with the current batch's (TTA)."""

    def forward(self, x: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if self.training or alpha is None:
            return super().forward(x)
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        a = alpha.reshape(())
        m = (1.0 - a) * self.running_mean + a * mean
        v = (1.0 - a) * self.running_var + a * var
        scale = self.weight / torch.sqrt(v + self.eps)
        shift = self.bias - m * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class MixStyle(nn.Module):
    """Mix per-instance channel mean/std between samples (training only)."""

    def __init__(self, p: float = 0.5, alpha: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.eps = p, eps
        self.beta = torch.distributions.Beta(alpha, alpha)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.enabled or x.shape[0] < 2 or torch.rand(()) > self.p:
            return x
        n = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True)
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt()
        mu, sig = mu.detach(), sig.detach()
        xn = (x - mu) / sig
        lam = self.beta.sample((n, 1, 1, 1)).to(x)
        perm = torch.randperm(n)
        mu2, sig2 = mu[perm], sig[perm]
        return xn * (lam * sig + (1 - lam) * sig2) + lam * mu + (1 - lam) * mu2


class ConvNorm(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.norm = AdaptiveNorm(cout)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        return self.norm(self.conv(x), alpha)


class ResBlock(nn.Module):
    """Downsampling residual block: conv-norm-relu-conv-norm plus a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.a = ConvNorm(cin, cout, 2)
        self.b = ConvNorm(cout, cout, 1)
        self.skip = ConvNorm(cin, cout, 2, k=1)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        y = F.relu(self.a(x, alpha))
        return F.relu(self.b(y, alpha) + self.skip(x, alpha))


class CumulativeLinkHead(nn.Module):
    """Ordinal head: K-1 ordered thresholds on one latent score; returns class probabilities."""

    def __init__(self, cin: int, k: int = N_GRADES) -> None:
        super().__init__()
        self.score = nn.Linear(cin, 1)
        self.theta0 = nn.Parameter(torch.tensor(-1.0))
        self.deltas = nn.Parameter(torch.zeros(k - 2))

    def thresholds(self) -> torch.Tensor:
        inc = F.softplus(self.deltas) + 1e-3
        return torch.cat([self.theta0.reshape(1), self.theta0 + torch.cumsum(inc, 0)])

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.score(feat)  # (n, 1)
        cum = torch.sigmoid(self.thresholds()[None, :] - s)  # (n, K-1), non-decreasing in k
        ones = torch.ones_like(cum[:, :1])
        zeros = torch.zeros_like(cum[:, :1])
        upper = torch.cat([cum, ones], dim=1)
        lower = torch.cat([zeros, cum], dim=1)
        return upper - lower, cum


class MammoNet(nn.Module):
    """Backbone + classification, localization and cumulative-link grading heads.

    The stem is a 4x4/stride-4 patch convolution followed by a 3x3 convolution: it keeps
    calcification-sized detail (a 4x4 filter sees every input pixel) while no tensor is larger
    than 1/4 of the input, which is what makes CPU training take minutes, not hours.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64), mixstyle: bool = True,
                 seg_stride: int = 4, dec_width: int = 32, dec_convs: int = 3,
                 in_channels: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        if seg_stride not in (2, 4):
            raise ValueError(f"seg_stride must be 2 or 4, got {seg_stride}")
        self.seg_stride = seg_stride
        w0, w1, w2, w3 = widths
        self.patch = nn.Conv2d(in_channels, w0, 4, 4, 0, bias=False)
        self.patch_norm = AdaptiveNorm(w0)
        self.stem = ConvNorm(w0, w0, 1)  # 1/4
        self.s1 = ResBlock(w0, w1)  # 1/8
        self.s2 = ResBlock(w1, w2)  # 1/16
        self.s3 = ResBlock(w2, w3)  # 1/32
        self.mix = nn.ModuleList([MixStyle(), MixStyle(), MixStyle()])
        self.set_mixstyle(mixstyle)
        n_feat = 2 * w3 + w1 + w2 + 2
        self.cls = nn.Sequential(nn.Dropout(0.1), nn.Linear(n_feat, N_CLASSES))
        self.grade = CumulativeLinkHead(n_feat, N_GRADES)
        d = dec_width
        self.lat3 = nn.Conv2d(w3, d, 1)
        self.lat2 = nn.Conv2d(w2, d, 1)
        self.lat1 = nn.Conv2d(w1, d, 1)
        self.lat0 = nn.Conv2d(w0, d, 1)
        self.seg_conv = ConvNorm(d, d, 1)
        # extra 3x3 convolutions at stride 4 (measured: the one-convolution decoder underfits,
        # train-split IoU only ~0.53)
        self.seg_more = nn.ModuleList([ConvNorm(d, d, 1) for _ in range(dec_convs - 1)])
        if seg_stride == 2:
            # stride-2 refinement: a cheap full-detail image branch sharpens lesion borders that a
            # stride-4 map (a 7-13 pixel lesion radius is 2-3 cells) can only place coarsely
            self.fine = ConvNorm(in_channels, 8, 2)
            self.seg_mid = nn.Conv2d(d, 8, 1)
            self.fine_conv = ConvNorm(16, 8, 1)
            self.seg_out = nn.Conv2d(8, 1, 1)
        else:
            self.seg_out = nn.Conv2d(d, 1, 1)
        self.log_vars = nn.Parameter(torch.zeros(3))  # classification, localization, grading

    def set_mixstyle(self, enabled: bool) -> None:
        for m in self.mix:
            m.enabled = enabled

    def forward(self, x: torch.Tensor, tta_alpha: torch.Tensor | None = None):
        """Class logits (n,4), segmentation logits at ``seg_stride``, grade probs, cum probs."""
        a = tta_alpha
        x0 = F.relu(self.patch_norm(self.patch(x), a))
        x0 = F.relu(self.stem(x0, a))
        x0 = self.mix[0](x0)
        x1 = self.mix[1](self.s1(x0, a))
        x2 = self.mix[2](self.s2(x1, a))
        x3 = self.s3(x2, a)
        p = self.lat3(x3)
        p = F.interpolate(p, size=x2.shape[-2:], mode="bilinear", align_corners=False) + self.lat2(x2)
        p = F.interpolate(p, size=x1.shape[-2:], mode="bilinear", align_corners=False) + self.lat1(x1)
        p = F.interpolate(p, size=x0.shape[-2:], mode="bilinear", align_corners=False) + self.lat0(x0)
        p = F.relu(self.seg_conv(F.relu(p), a))
        for conv in self.seg_more:
            p = F.relu(conv(p, a))
        if self.seg_stride == 2:
            f = F.relu(self.fine(x, a))
            p = F.interpolate(self.seg_mid(p), size=f.shape[-2:], mode="bilinear", align_corners=False)
            p = F.relu(self.fine_conv(torch.cat([p, f], dim=1), a))
        seg = self.seg_out(p)  # stride 2 or 4; upsampled to the input size by :func:`upsample_seg`
        # lesion-guided pooling: the localization map says where to look, so the classifier
        # describes the lesion's texture (spicules, calcifications, margins) rather than the breast
        feat = torch.cat([
            x3.mean(dim=(2, 3)), x3.amax(dim=(2, 3)),
            _attention_pool(x1, seg), _attention_pool(x2, seg),
            seg.amax(dim=(1, 2, 3))[:, None], torch.logsumexp(seg.flatten(1), dim=1, keepdim=True)
            - float(np.log(seg[0].numel())),
        ], dim=1)
        logits = self.cls(feat)
        grade_probs, cum = self.grade(feat)
        return logits, seg, grade_probs, cum


def _attention_pool(x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Average of ``x`` weighted by a spatial softmax of the segmentation logits (n, C)."""
    k = seg.shape[-1] // x.shape[-1]
    s = F.avg_pool2d(seg, kernel_size=k, stride=k)[..., : x.shape[-2], : x.shape[-1]]
    w = torch.softmax(s.flatten(1), dim=1)  # (n, h*w)
    return torch.einsum("nchw,nhw->nc", x, w.view(-1, x.shape[-2], x.shape[-1]))


def upsample_seg(seg: torch.Tensor, size: tuple[int, int] = INPUT_SHAPE) -> torch.Tensor:
    return F.interpolate(seg, size=size, mode="bilinear", align_corners=False)


class ExportWrapper(nn.Module):
    """What goes into ONNX: named outputs, probabilities for segmentation and grade."""

    def __init__(self, net: MammoNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, tta_alpha: torch.Tensor):
        logits, seg, grade_probs, _ = self.net(image, tta_alpha)
        return logits, torch.sigmoid(upsample_seg(seg, image.shape[-2:])), grade_probs


def multitask_loss(net: MammoNet, logits, seg, grade_probs, y_cls, y_mask, y_grade, seg_weight=None,
                   pos_weight: float = 1.0):
    """Uncertainty-weighted sum of CE, BCE+Dice and ordinal NLL; returns (total, parts).

    ``y_mask`` is the binary target at the input resolution: the logits are upsampled to it
    (as at inference) so the loss trains exactly the map that is thresholded and scored;
    ``seg_weight`` (n,) is 0 for images whose mask is unknown (user data without masks) so they
    do not teach "no lesion". ``pos_weight`` up-weights lesion pixels in the BCE term (a weight
    above 1 pushes every border outwards; see CHANGELOG.md).
    """
    if seg_weight is None:
        seg_weight = torch.ones(seg.shape[0], device=seg.device)
    w = seg_weight[:, None, None, None]
    if seg.shape[-2:] != y_mask.shape[-2:]:
        seg = upsample_seg(seg, tuple(y_mask.shape[-2:]))
    l_cls = F.cross_entropy(logits, y_cls)
    bce = F.binary_cross_entropy_with_logits(seg, y_mask, pos_weight=torch.tensor(pos_weight), reduction="none")
    bce = (bce * w).sum() / (w.sum() * seg[0].numel()).clamp_min(1.0)
    prob = torch.sigmoid(seg) * w
    tgt = y_mask * w
    # Dice per lesion image, averaged: the scored IoU is a per-image mean, so a small lesion
    # counts as much as a large one (a batch-level Dice is dominated by the large ones)
    inter = (prob * tgt).sum(dim=(1, 2, 3))
    dice_i = 1.0 - (2 * inter + 1.0) / (prob.sum(dim=(1, 2, 3)) + tgt.sum(dim=(1, 2, 3)) + 1.0)
    has = (tgt.sum(dim=(1, 2, 3)) > 0).float()
    if float(has.sum()) > 0:
        dice = (dice_i * has).sum() / has.sum()
    else:  # no lesion in this batch: penalise predicted area only
        dice = 1.0 - 1.0 / (prob.sum() + 1.0)
    l_seg = bce + dice
    l_grade = F.nll_loss(torch.log(grade_probs.clamp_min(1e-6)), y_grade)
    parts = torch.stack([l_cls, l_seg, l_grade])
    total = (torch.exp(-net.log_vars) * parts + net.log_vars).sum()
    return total, parts.detach()


def dummy_input(n: int = 1, channels: int = 2) -> torch.Tensor:
    return torch.zeros(n, channels, *INPUT_SHAPE)
