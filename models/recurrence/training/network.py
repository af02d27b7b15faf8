"""The MRRP recurrence network (training side: torch; the runtime uses its ONNX export).

Structure, following MRRP:

* every named scalar input (clinical variable, nuclear-morphology or topology feature, radiomics
  feature, report lexicon field) becomes a token ``value * w_i + b_i`` (a learnable linear map per
  variable); a missing value becomes that variable's learnable "missing" token;
* categorical clinical variables become tokens by embedding lookup (index 0 = missing);
* WSI: the slide deep feature (projected) is the query of two single-head cross-attentions, over
  the morphology tokens and over the topology tokens; both outputs are summed with the query;
* US: the ultrasound deep feature is the query over the radiomics tokens and over the report-text
  tokens (lexicon fields plus the sentence embedding); summed likewise;
* a missing modality is replaced by a learnable embedding selected by the availability mask;
  ``missing_mode="zero"`` (the ablation's baseline) instead reads every missing input as 0. As
  all inputs are standardized on the training set (deep vectors included), 0 is the training
  mean: zero fill is mean imputation, with no missing token and no modality embedding anywhere
  (the network runs on the imputed inputs as if they were observed). Measured in
  bench/recurrence.py (semi-synthetic cohort, 5 folds x 3 seeds, both trained identically with
  the same modality dropout): the learned embedding does NOT beat zero fill; paired differences
  were within +-0.002 C-index (p > 0.15) with a modality absent from all or half of the test
  patients. Why: standardized zero is the training mean, already the best constant stand-in,
  and a learned embedding is also a constant, so it can only help through interactions that
  this cohort (imaging features linear in one latent risk) does not need. Nor under
  informative missingness (cohort ``missingness="informative"``: slides absent more often at
  low latent risk, ultrasound absent more often for small tumours): natural missingness
  -0.0001 C, p = 0.96; fitting the absence flags themselves adds only ~+0.001 C. The learned
  embedding is kept because it is what MRRP specifies and costs nothing at runtime;
* fused WSI and US are projected and concatenated, then cross-attend over the clinical tokens;
  a residual connection adds the imaging vector back, and a linear head gives the log hazard.

``fusion="concat"`` (ablation) drops the intra-modality cross-attention and the clinical
cross-attention: it concatenates mean-pooled tokens and deep features into one MLP.

``image_branches=False`` gives the clinical-only model: clinical tokens, flattened, through a
small MLP with a linear skip (no imaging inputs are read).

Every attention has one always-present learnable "null" key, so a query whose keys are all
missing attends to it instead of producing NaN.
"""

from __future__ import annotations

import torch
from torch import nn

from models.recurrence.features import FeatureSpec


class ScalarTokens(nn.Module):
    """``n`` named scalars -> ``n`` tokens: value * w_i + b_i, or a learned token when missing."""

    def __init__(self, n: int, dim: int, learned_missing: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, dim) * 0.1)
        self.bias = nn.Parameter(torch.zeros(n, dim))
        self.missing = nn.Parameter(torch.randn(n, dim) * 0.1)
        self.learned_missing = learned_missing

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tok = x.unsqueeze(-1) * self.weight + self.bias
        if not self.learned_missing:  # zero fill: a missing (standardized) value is read as 0
            return tok
        m = mask.unsqueeze(-1)
        return m * tok + (1.0 - m) * self.missing


class CategoricalTokens(nn.Module):
    """One embedding table per categorical variable (row 0 = missing)."""

    def __init__(self, levels: list[int], dim: int, learned_missing: bool = True) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n + 1, dim) for n in levels)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.1)
            if not learned_missing:  # zero fill: row 0 stays a zero vector (like nn.Embedding's padding_idx)
                t.padding_idx = 0
                with torch.no_grad():
                    t.weight[0].zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(idx[:, j]) for j, t in enumerate(self.tables)], dim=1)


class CrossAttention(nn.Module):
    """Single-head cross-attention of one query vector over a token set (plus a null key)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.null = nn.Parameter(torch.zeros(1, 1, dim))
        self.scale = dim ** -0.5

    def forward(self, query: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        kv = torch.cat([self.null.expand(b, 1, -1), tokens], dim=1)
        q = self.q(query).unsqueeze(1)  # (B, 1, D)
        att = torch.softmax((q * self.k(kv)).sum(-1) * self.scale, dim=-1)  # (B, N+1)
        return self.out((att.unsqueeze(-1) * self.v(kv)).sum(1))


class MRRPNet(nn.Module):
    def __init__(
        self,
        spec: FeatureSpec,
        dim: int = 16,
        dropout: float = 0.2,
        image_branches: bool = True,
        fusion: str = "attention",
        missing_mode: str = "learned",
    ) -> None:
        super().__init__()
        if fusion not in ("attention", "concat") or missing_mode not in ("learned", "zero"):
            raise ValueError(f"unknown fusion {fusion!r} or missing_mode {missing_mode!r}")
        self.image_branches, self.fusion, self.missing_mode = image_branches, fusion, missing_mode
        n_cont, n_cat = len(spec.continuous), len(spec.categorical)
        learned = missing_mode == "learned"
        self.clin_cont = ScalarTokens(n_cont, dim, learned)
        self.clin_cat = CategoricalTokens([len(v) for v in spec.categorical.values()], dim, learned)
        self.drop = nn.Dropout(dropout)
        n_clin = n_cont + n_cat
        if not image_branches:
            self.clin_mlp = nn.Sequential(nn.Linear(n_clin * dim, dim), nn.GELU(), nn.Dropout(dropout))
            self.head = nn.Linear(dim, 1)
            self.skip = nn.Linear(n_clin * dim, 1)
            return
        self.morph = ScalarTokens(len(spec.morphology), dim, learned)
        self.topo = ScalarTokens(len(spec.topology), dim, learned)
        self.rad = ScalarTokens(len(spec.radiomics), dim, learned)
        self.text = ScalarTokens(len(spec.text_fields), dim, learned)
        self.wsi_q = nn.Sequential(nn.Linear(spec.wsi_embedding_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.us_q = nn.Sequential(nn.Linear(spec.us_deep_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.text_emb = nn.Linear(spec.text_embedding_dim, dim)
        self.text_emb_missing = nn.Parameter(torch.randn(1, dim) * 0.1)
        self.wsi_missing = nn.Parameter(torch.randn(1, dim) * 0.1)
        self.us_missing = nn.Parameter(torch.randn(1, dim) * 0.1)
        if fusion == "attention":
            self.att_morph, self.att_topo = CrossAttention(dim), CrossAttention(dim)
            self.att_rad, self.att_text = CrossAttention(dim), CrossAttention(dim)
            self.att_clin = CrossAttention(dim)
            self.proj_wsi, self.proj_us = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.fuse = nn.Linear(2 * dim, dim)
            self.clin_pool = nn.Linear(n_clin * dim, dim)
        else:
            self.concat_wsi = nn.Linear(3 * dim, dim)
            self.concat_us = nn.Linear(3 * dim, dim)
            self.concat_mlp = nn.Sequential(nn.Linear(2 * dim + n_clin * dim, dim), nn.GELU())
        self.head = nn.Linear(dim, 1)

    def _fill(self, vec: torch.Tensor, avail: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        if self.missing_mode == "zero":  # mean imputation: the vector computed from imputed inputs
            return vec
        a = avail.unsqueeze(-1)
        return a * vec + (1.0 - a) * missing

    def forward(
        self,
        clin_cont: torch.Tensor, clin_cont_mask: torch.Tensor, clin_cat: torch.Tensor,
        wsi_deep: torch.Tensor, morph: torch.Tensor, morph_mask: torch.Tensor,
        topo: torch.Tensor, topo_mask: torch.Tensor,
        us_deep: torch.Tensor, rad: torch.Tensor, rad_mask: torch.Tensor,
        text_fields: torch.Tensor, text_fields_mask: torch.Tensor, text_emb: torch.Tensor,
        modality_mask: torch.Tensor,
    ) -> torch.Tensor:
        clin = torch.cat([self.clin_cont(clin_cont, clin_cont_mask), self.clin_cat(clin_cat)], dim=1)
        clin_flat = self.drop(clin.flatten(1))
        if not self.image_branches:
            return (self.head(self.clin_mlp(clin_flat)) + self.skip(clin_flat)).squeeze(-1)

        wsi_avail, us_avail, emb_avail = modality_mask[:, 0], modality_mask[:, 1], modality_mask[:, 2]
        morph_t, topo_t = self.morph(morph, morph_mask), self.topo(topo, topo_mask)
        rad_t = self.rad(rad, rad_mask)
        emb_tok = self._fill(self.text_emb(text_emb), emb_avail, self.text_emb_missing).unsqueeze(1)
        text_t = torch.cat([self.text(text_fields, text_fields_mask), emb_tok], dim=1)
        q_w, q_u = self.wsi_q(wsi_deep), self.us_q(us_deep)
        if self.fusion == "attention":
            wsi = q_w + self.att_morph(q_w, morph_t) + self.att_topo(q_w, topo_t)
            us = q_u + self.att_rad(q_u, rad_t) + self.att_text(q_u, text_t)
        else:
            wsi = self.concat_wsi(torch.cat([q_w, morph_t.mean(1), topo_t.mean(1)], dim=1))
            us = self.concat_us(torch.cat([q_u, rad_t.mean(1), text_t.mean(1)], dim=1))
        wsi = self._fill(self.drop(wsi), wsi_avail, self.wsi_missing)
        us = self._fill(self.drop(us), us_avail, self.us_missing)
        if self.fusion == "attention":
            img = self.fuse(torch.cat([self.proj_wsi(wsi), self.proj_us(us)], dim=1))
            h = img + self.att_clin(img, clin) + self.clin_pool(clin_flat)
        else:
            h = self.concat_mlp(torch.cat([wsi, us, clin_flat], dim=1))
        return self.head(self.drop(h)).squeeze(-1)


def cox_loss(lp: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood with Breslow's handling of ties, averaged per event.

    Breslow: every subject with an event at time t shares the same denominator, the sum of
    exp(lp) over everyone still at risk at t (time >= t), tied subjects included.
    """
    order = torch.argsort(time, descending=True, stable=True)
    lp_s, t_s, e_s = lp[order], time[order], event[order]
    lse = torch.logcumsumexp(lp_s, dim=0)
    # index of the last subject in each tie group (sorted descending, so the largest risk set).
    n = t_s.shape[0]
    same_next = torch.cat([t_s[1:] == t_s[:-1], torch.tensor([False])])
    idx = torch.arange(n)
    # propagate, from the end, the last index of each run of equal times.
    last = torch.where(same_next, torch.full_like(idx, n), idx)
    last = torch.flip(torch.cummin(torch.flip(last, [0]), dim=0).values, [0])
    ll = e_s * (lp_s - lse[last])
    return -ll.sum() / torch.clamp(e_s.sum(), min=1.0)
