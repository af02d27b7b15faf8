"""Slide model runtime: what the pipeline loads for SM studies (onnxruntime only, no torch).

``load(settings)`` finds the weights (``<models_dir>/slides`` when ``settings.models_dir`` is set,
else the shipped ``models/slides/weights``) and their card; ``analyze(study, work_dir)`` opens the
study's slide series from the spool paths, runs the two-stage analysis, applies the card's
calibration and threshold, computes pathomics features on the stage-2 tiles and writes the
heatmaps and top-tile thumbnails as ``.npy`` files under ``work_dir``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cds.contracts.cards import ModelCard
from cds.contracts.domain import (
    ArrayFile,
    Calibrated,
    ModelIdentity,
    OperatingPoint,
    SlideResult,
    SlideTile,
    StudyAnalysis,
    StudyInput,
)
from cds.contracts.errors import InvalidWeights, ModelUnavailable
from cds.contracts.settings import Settings
from models.domain import load_domain
from models.operating_points import resolve as resolve_operating_point
from models.pathomics.features import slide_features
from models.slides.analysis import StageParams, analyze_slide
from models.slides.calibrate import apply_map
from models.slides.domain import slide_check
from models.slides.onnx_nets import WEIGHT_FILES, OnnxTileNets
from models.slides.reader import VL_WSI_SOP_CLASS, LevelInfo, SlideReadError, open_slide, pool_to
from models.weights import load_weights, shipped_dir
from models.weights import weights_dir as shared_weights_dir

log = logging.getLogger(__name__)

SHIPPED_WEIGHTS = shipped_dir("slides")
TOP_K = 5
PATHOMICS_TILES = 6  # stage-2 tiles (most attended first) measured for pathomics
THUMBNAIL_FACTOR = 2  # top-tile thumbnails are the base tile pooled by this factor
# The SEG of a slide is written on the finest pyramid level whose total pixel matrix is at most
# this (the attention and tumour maps are one value per base tile, so nothing is lost): a bounded
# object that viewers overlay on that level, whatever the slide's size.
MAP_LEVEL_MAX_PIXELS = 2**22  # ~2048x2048: the maps hold one value per analysis tile; a finer SEG only costs time


def map_level(levels: list[LevelInfo], max_pixels: int = MAP_LEVEL_MAX_PIXELS) -> LevelInfo:
    """The finest level (levels are base first) with at most ``max_pixels``; else the lowest."""
    return next((lv for lv in levels if lv.rows * lv.columns <= max_pixels), levels[-1])


@dataclass
class SlideRunStats:
    """What one analysis cost: the evidence that the base level was read sparsely."""

    base_tiles_read: int
    base_tiles_total: int
    tissue_tiles: int
    seconds: dict[str, float] = field(default_factory=dict)


def weights_dir(settings: Settings) -> Path:
    return shared_weights_dir(settings, "slides")


class SlideModel:
    """Two-stage lymph-node metastasis model over DICOM whole-slide images."""

    modalities = frozenset({"SM"})

    def __init__(self, weights: Path, card: ModelCard, nets: OnnxTileNets,
                 operating_point: OperatingPoint | None = None) -> None:
        self.weights = weights
        self.card = card
        self.nets = nets
        self.identity: ModelIdentity = card.identity(weights / "card.json")
        sp = card.extra.get("stage_params", {})
        self.params = StageParams(**sp) if sp else StageParams()
        self.calibration = dict(card.calibration)
        try:
            apply_map(self.calibration, np.zeros(1))
        except (KeyError, ValueError) as exc:
            raise ModelUnavailable(f"{weights / 'card.json'}: unusable calibration map ({exc})") from exc
        self.operating_point = operating_point or OperatingPoint(name="youden", threshold=card.thresholds["youden"])
        self.threshold_name, self.threshold = self.operating_point.name, self.operating_point.threshold
        self.domain = load_domain(card, weights)

    # -- pipeline entry -------------------------------------------------------------------------
    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis:
        series: dict[str, list[Path]] = {}
        for inst in study.instances:
            if inst.sop_class_uid == VL_WSI_SOP_CLASS:
                series.setdefault(inst.series_instance_uid, []).append(Path(inst.path))
        if not series:
            raise SlideReadError(
                f"study {study.study_instance_uid}: no VL Whole Slide Microscopy instances (SOP class {VL_WSI_SOP_CLASS})"
            )
        chosen = max(series, key=lambda s: sum(p.stat().st_size for p in series[s]))
        if len(series) > 1:
            log.warning("study %s has %d slide series; analysing the largest, %s", study.study_instance_uid, len(series), chosen)
        result, stats = self.analyze_series(series[chosen], Path(work_dir))
        log.info(
            "slide %s analysed: %d/%d base tiles read, %.1f s",
            chosen, stats.base_tiles_read, stats.base_tiles_total, sum(stats.seconds.values()),
        )
        return StudyAnalysis(
            study_instance_uid=study.study_instance_uid,
            modality="SM",
            patient=study.patient,
            model=self.identity,
            work_dir=Path(work_dir),
            slide=result,
        )

    def analyze_series(self, paths: list[Path], work_dir: Path) -> tuple[SlideResult, SlideRunStats]:
        """Analyse one slide series given its instance paths; also returns read/time statistics."""
        t0 = time.perf_counter()
        with open_slide(paths) as rd:
            raw = analyze_slide(rd, self.nets, self.params)
            base = rd.base
            rows, cols = rd.grid
            uids = [lv.sop_instance_uid for lv in rd.levels]
            map_uid = map_level(rd.levels).sop_instance_uid
            series_uid = rd.series_instance_uid
        seconds = dict(raw.timings)
        prob = float(apply_map(self.calibration, np.array([raw.slide_logit]))[0])
        sub = f"slide/{series_uid}"
        att_grid = raw.attention_grid()
        attention_map = ArrayFile.save(work_dir, f"{sub}/attention.npy", att_grid.astype(np.float32))
        tumour_map = ArrayFile.save(work_dir, f"{sub}/tumour_probability.npy", raw.tumour_grid().astype(np.float32))
        order = np.argsort(-raw.attention, kind="stable")
        top = []
        for rank, i in enumerate(order[:TOP_K]):
            r, c = raw.stage2_tiles[i]
            thumb = pool_to(raw.stage2_full[i], THUMBNAIL_FACTOR)
            top.append(
                SlideTile(
                    x=c * base.tile_columns,
                    y=r * base.tile_rows,
                    width=base.tile_columns,
                    height=base.tile_rows,
                    attention=float(raw.attention[i]),
                    probability=float(raw.tile_prob[i]),
                    image=ArrayFile.save(work_dir, f"{sub}/top_tile_{rank}.npy", thumb),
                )
            )
        t1 = time.perf_counter()
        path_tiles = [raw.stage2_full[i] for i in order[:PATHOMICS_TILES]]
        pathomics = slide_features(path_tiles, base.um_per_px) if path_tiles else None
        seconds["pathomics"] = time.perf_counter() - t1
        seconds["total"] = time.perf_counter() - t0
        result = SlideResult(
            sop_instance_uids=uids,
            series_instance_uid=series_uid,
            base_sop_instance_uid=base.sop_instance_uid,
            base_rows=base.rows,
            base_columns=base.columns,
            tile_rows=base.tile_rows,
            tile_columns=base.tile_columns,
            pixel_spacing_mm=(base.um_per_px / 1000.0, base.um_per_px / 1000.0),
            metastasis=Calibrated(probability=min(1.0, max(0.0, prob)), threshold=self.threshold, threshold_name=self.threshold_name,
                                  operating_point=self.operating_point),
            domain=slide_check(self.domain, base.um_per_px, raw.stage2_full, raw.embedding),
            attention_map=attention_map,
            tumour_probability_map=tumour_map,
            top_tiles=top,
            tiles_stage1=int(raw.tissue.sum()),
            tiles_stage2=len(raw.stage2_tiles),
            pathomics=pathomics,
            embedding=[float(v) for v in raw.embedding],
            map_level_sop_instance_uid=map_uid,
        )
        stats = SlideRunStats(
            base_tiles_read=raw.base_tiles_read,
            base_tiles_total=rows * cols,
            tissue_tiles=int(raw.tissue.sum()),
            seconds=seconds,
        )
        return result, stats


def load(settings: Settings) -> SlideModel:
    """Load the ONNX slide networks and their card; ModelUnavailable says what is missing."""
    wdir = weights_dir(settings)
    weights = load_weights(wdir, "card.json", model="slide", files=WEIGHT_FILES,
                           hint="run `cds train slides` or `cds train synthetic`")
    card, card_path = weights.card, weights.card_path
    if "method" not in card.calibration:
        raise InvalidWeights(f"{card_path}: calibration map missing")
    if "youden" not in card.thresholds:
        raise InvalidWeights(f"{card_path}: thresholds.youden missing")
    try:
        nets = OnnxTileNets.load(wdir)
    except Exception as exc:
        raise ModelUnavailable(f"{wdir}: cannot load ONNX slide networks ({exc})") from exc
    return SlideModel(wdir, card, nets, resolve_operating_point(card, settings, "slides"))
