"""The two-stage slide analysis shared by the runtime, the training evaluation and the benchmark.

1. tissue detection on the lowest pyramid level (:func:`reader.tissue_tiles`);
2. stage 1: every tissue tile is scored from its low-magnification patch (2 um/px), in chunks of
   whole stage-1 frames (:data:`STAGE1_CHUNK` patches), so memory does not grow with the slide;
3. stage 2: only the most suspicious tiles (stage-1 probability over a threshold, at least
   ``min_stage2`` and at most ``max_stage2`` of them) are read at full resolution, encoded, and
   pooled by the gated-attention MIL head into the slide's metastasis score.

``mode="full"`` skips the screen and sends every tissue tile to stage 2: the single
full-resolution pass the benchmark compares against. The networks are anything with the three
methods of :class:`TileNets` (onnxruntime at runtime, torch while training), so the bags used to
train the MIL head are built by exactly the code that serves them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from models.slides.reader import (
    SlideReader,
    SlideReadError,
    stage1_frame_span,
    stage1_patches,
    stage2_tiles,
    tissue_tiles,
)

STAGE1_CHUNK = 1024  # stage-1 patches held at once (about 12 MB of uint8)


class TileNets(Protocol):
    def stage1(self, patches: np.ndarray) -> np.ndarray:
        """(N,h,w,3) uint8 -> tumour probability (N,)."""

    def encode(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,H,W,3) uint8 -> (features (N,D), tile tumour probability (N,))."""

    def mil(self, features: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(N,D) -> (slide logit, attention (N,) summing to 1, embedding (D,))."""


@dataclass(frozen=True)
class StageParams:
    stage1_threshold: float = 0.3
    min_stage2: int = 8
    max_stage2: int = 32


@dataclass
class SlideAnalysisRaw:
    grid: tuple[int, int]
    tissue: np.ndarray  # bool grid
    stage1_prob: np.ndarray  # float32 grid (0 outside tissue)
    stage2_tiles: list[tuple[int, int]]  # (row, col) of base tiles read at high magnification
    stage2_full: np.ndarray  # their base-level RGB frames
    features: np.ndarray  # stage-2 tile encoder features (N, D): the MIL bag
    tile_prob: np.ndarray  # stage-2 tile tumour probability, per stage-2 tile
    attention: np.ndarray  # per stage-2 tile, sums to 1
    slide_logit: float
    embedding: np.ndarray
    base_tiles_read: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def raw_probability(self) -> float:
        return float(1.0 / (1.0 + np.exp(-self.slide_logit)))

    def attention_grid(self) -> np.ndarray:
        """Attention over the base tile grid, scaled so the most attended tile is 1."""
        g = np.zeros(self.grid, np.float32)
        for (r, c), a in zip(self.stage2_tiles, self.attention):
            g[r, c] = a
        m = float(g.max())
        return g / m if m > 0 else g

    def tumour_grid(self) -> np.ndarray:
        """Tile tumour probability: stage-2 where read at high magnification, else stage-1."""
        g = self.stage1_prob.astype(np.float32).copy()
        for (r, c), p in zip(self.stage2_tiles, self.tile_prob):
            g[r, c] = p
        return g


def select_stage2(prob: np.ndarray, tissue: np.ndarray, params: StageParams) -> list[tuple[int, int]]:
    """The tiles to read at high magnification: suspicious ones first, within [min, max]."""
    cand = np.argwhere(tissue)
    if len(cand) == 0:
        return []
    scores = prob[cand[:, 0], cand[:, 1]]
    order = np.argsort(-scores, kind="stable")
    n = int((scores >= params.stage1_threshold).sum())
    n = min(max(n, params.min_stage2), params.max_stage2, len(cand))
    return [(int(cand[i, 0]), int(cand[i, 1])) for i in order[:n]]


def analyze_slide(
    reader: SlideReader,
    nets: TileNets,
    params: StageParams = StageParams(),
    mode: Literal["two_stage", "full"] = "two_stage",
) -> SlideAnalysisRaw:
    """Run tissue detection, stage 1 and stage 2 on an opened slide (see module docstring)."""
    t = {"decode": 0.0, "preprocess": 0.0, "model": 0.0}
    start_base = reader.base_tiles_read
    t0 = time.perf_counter()
    frac, tissue = tissue_tiles(reader)
    t["preprocess"] += time.perf_counter() - t0
    grid = tissue.shape
    if not tissue.any():
        raise SlideReadError(f"series {reader.series_instance_uid}: no tissue found on the lowest level")
    tissue_list = [(int(r), int(c)) for r, c in np.argwhere(tissue)]
    prob = np.zeros(grid, np.float32)
    if mode == "two_stage":
        # Stage 1 in chunks of whole stage-1 frames: memory stays bounded by STAGE1_CHUNK patches
        # however large the slide, and no frame is decoded twice.
        span = stage1_frame_span(reader)
        ordered = sorted(tissue_list, key=lambda rc: (rc[0] // span, rc[1] // span))
        for i in range(0, len(ordered), STAGE1_CHUNK):
            chunk = ordered[i : i + STAGE1_CHUNK]
            t0 = time.perf_counter()
            patches, _ = stage1_patches(reader, chunk)
            t["decode"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            p1 = nets.stage1(patches)
            t["model"] += time.perf_counter() - t0
            rows_, cols_ = np.array(chunk).T
            prob[rows_, cols_] = p1
            del patches
        chosen = select_stage2(prob, tissue, params)
    else:
        chosen = tissue_list
    t0 = time.perf_counter()
    full, pooled = stage2_tiles(reader, chosen)
    t["decode"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    feats, tile_prob = nets.encode(pooled)
    logit, att, emb = nets.mil(feats)
    t["model"] += time.perf_counter() - t0
    if mode == "full":
        prob = np.zeros(grid, np.float32)
    return SlideAnalysisRaw(
        grid=grid,
        tissue=tissue,
        stage1_prob=prob,
        stage2_tiles=chosen,
        stage2_full=full,
        features=np.asarray(feats, np.float32),
        tile_prob=np.asarray(tile_prob, np.float32),
        attention=np.asarray(att, np.float32),
        slide_logit=float(logit),
        embedding=np.asarray(emb, np.float32),
        base_tiles_read=reader.base_tiles_read - start_base,
        timings=t,
    )
