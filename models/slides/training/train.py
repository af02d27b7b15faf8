"""Train, calibrate and export the slide metastasis model (PyTorch; CPU, minutes).

``train_synthetic`` regenerates the shipped weights from seeded phantoms:

1. phantom slides are written as real DICOM pyramids and read back through the runtime's reader,
   so the networks see exactly the pixels (JPEG tiles, pooled levels) the pipeline will see;
2. the stage-1 patch CNN and the stage-2 tile encoder are trained on tiles labelled from the
   ground-truth tumour masks (tile tumour fraction);
3. bags are built by the runtime's own stage-2 selection (:func:`analysis.select_stage2`) and the
   gated-attention MIL head is trained on slide labels only;
4. the three networks are exported to ONNX (parity against torch checked), the calibration map
   (Platt or isotonic against Platt's regularised targets, chosen by cross-validated Brier score;
   see :mod:`models.slides.training.calibrate`) and the thresholds are fitted on held-out
   calibration slides run through the ONNX runtime path, and the held-out test slides give the
   card's metrics.

Evaluation protocol: 200 phantoms split 48 train / 96 calibration / 56 test, all 2048 px; half the
positives are occult; the phantom has per-slide stain and cellularity variation
(:mod:`synthetic.phantoms.slides`). Calibration and test slides come from disjoint seed ranges and
never touch training. How the protocol got here is in ``models/slides/CHANGELOG.md``.

``train_from_folder`` adapts the model to a user's own slides (a folder of DICOM WSI plus a CSV of
slide labels): only slide labels exist there, so it keeps the shipped tile networks and retrains
the MIL head on their features, with a resumable feature cache and checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cds.contracts.cards import ModelCard
from models.slides.analysis import StageParams, analyze_slide, select_stage2
from models.slides.calibrate import apply_map
from models.slides.onnx_nets import ENCODER_FILE, MIL_FILE, STAGE1_FILE, OnnxTileNets
from models.slides.reader import open_slide
from models.slides.training.calibrate import fit_map, fit_thresholds
from models.slides.training.data import (  # noqa: F401  (re-exported)
    _generate,
    _progress,
    _series_paths,
    _slide_tiles,
    _split_plan,
    split_sizes,
)
from models.slides.training.domain import fit_slides_domain
from models.slides.training.evaluate import TOP_K, _calibrate_and_test, _metrics, evaluate_truths, recalibrate  # noqa: F401
from models.slides.training.export import export_onnx, onnx_parity  # noqa: F401
from models.slides.training.loops import _train_mil, _train_tile_net
from models.slides.training.nets import (
    ENCODER_INPUT,
    FEATURE_DIM,
    STAGE1_INPUT,
    GatedAttentionMIL,
    PatchCNN,
    TileEncoder,
    TorchTileNets,
)
from models.training import calibration as cal
from models.weights import sha256_file, shipped_dir

log = logging.getLogger(__name__)

MODEL_NAME = "slide-lymph-node-metastasis"
MODEL_VERSION = "0.1.0"
TILE_POSITIVE = 0.05  # tile tumour fraction above which a tile counts as tumour
SHIPPED_DIR = shipped_dir("slides")
_PATHOMICS_SAMPLING = {
    "tiles": "the 6 most-attended stage-2 tiles of the slide (models.slides.runtime.PATHOMICS_TILES)",
    "morphology": "every segmented nucleus for area, perimeter, axes, eccentricity, circularity and stain intensity",
    "texture_solidity_curvature": "a seeded sample of at most 32 nuclei per tile (GLCM, convex-hull solidity, "
                                  "boundary curvature)",
    "graph": "k=5 nearest-neighbour graph per tile; betweenness centrality from 32 sampled source nodes "
             "(Brandes) when a tile has more than 32 nuclei, exact otherwise; degree, clustering, closeness exact",
}
TORCH_FILE = "slide_nets.pt"  # torch state dicts beside the ONNX files (benchmark / fine-tuning only)


INTENDED_USE = (
    "Research and integration testing of the breast-cds pipeline: flags lymph-node slides that may "
    "contain metastatic carcinoma for pathologist review. Not a diagnostic device."
)
ARCHITECTURE = (
    "Two-stage: stage-1 4-layer CNN (stride-2 stem) on 64x64 patches at 2 um/px for every tissue tile (Otsu on saturation at "
    "the lowest level); stage-2 5-layer CNN tile encoder (64-d features) on 128x128 tiles at 1 um/px for the "
    "suspicious tiles only; gated-attention MIL head (Ilse et al. 2018) over the stage-2 features."
)


def _training_data(seed: int, n_train: int, n_cal: int, n_test: int, train_size: int, eval_size: int) -> str:
    return (
        f"Synthetic H&E lymph-node phantoms (synthetic.phantoms.slides, seed {seed}): {n_train} training slides "
        f"({train_size}px at 0.5 um/px), {n_cal} calibration slides, {n_test} test slides ({eval_size}px); half "
        "with metastatic clusters, half of those occult (a single cluster < 0.2 mm); per-slide stain-vector, "
        "stain-intensity and brightness variation, tumour cellularity 0.25-0.5 nuclei per 16x16 px and "
        "nuclear size x0.85-1.0. Tile labels from ground-truth masks."
    )


def _calibration_protocol(n_cal: int, n_test: int) -> str:
    return (
        f"map fitted on the {n_cal} calibration slides only (Platt and isotonic, both against Platt's "
        "regularised targets; the lower 4-fold cross-validated Brier score wins); thresholds from the same "
        "slides (Youden's J, and the highest threshold reaching 90 % sensitivity, each moved to the "
        f"logit midpoint of the gap it sits in); ECE before/after on the {n_test} test slides, 10 equal-width "
        "bins; 'before' is the MIL head's sigmoid")


def _train_networks(work: Path, seed: int, n_train: int, train_size: int, epochs: int, mil_epochs: int,
                    params: StageParams, progress: bool, t_start: float):
    """Train the stage-1 CNN and tile encoder on labelled tiles of training phantoms, then the MIL
    head on bags chosen by the runtime's stage-2 selection. Returns the nets, stats and timings."""
    train_truths = _generate(_split_plan(seed, n_train, 0), work / "train", train_size, progress, "phantoms (train)")
    data = []
    for tr in _progress(train_truths, "reading tiles", progress):
        d = _slide_tiles(tr.level_paths, np.load(tr.tumour_mask_path), tr.mask_downsample)
        d["label"] = int(tr.has_metastasis)
        data.append(d)
        shutil.rmtree(tr.level_paths[0].parent)
    phase = {"train_phantoms_and_tiles": time.time() - t_start}
    frac = np.concatenate([d["frac"] for d in data])
    keep = (frac == 0) | (frac >= TILE_POSITIVE)  # ambiguous edge tiles are left out
    ylab = (frac >= TILE_POSITIVE).astype(np.float32)[keep]
    patches = np.concatenate([d["patches"] for d in data])[keep]
    pooled = np.concatenate([d["pooled"] for d in data])[keep]
    s1, enc, mil = PatchCNN(), TileEncoder(), GatedAttentionMIL()
    s1_stats = _train_tile_net(s1, patches, ylab, STAGE1_INPUT, epochs, seed, progress, "stage-1 CNN")
    enc_stats = _train_tile_net(enc, pooled, ylab, ENCODER_INPUT, epochs, seed + 1, progress, "tile encoder")
    del patches, pooled
    tnets = TorchTileNets(s1, enc, mil)
    bags, labels = [], []
    for d in data:
        prob = np.zeros(d["grid"], np.float32)
        p1 = tnets.stage1(d["patches"])
        for (r, c), p in zip(d["tiles"], p1):
            prob[r, c] = p
        chosen = select_stage2(prob, d["tissue"], params)
        index = {t: i for i, t in enumerate(d["tiles"])}
        feats, _ = tnets.encode(d["pooled"][[index[t] for t in chosen]])
        bags.append(feats)
        labels.append(d["label"])
    del data
    mil_loss = _train_mil(mil, bags, labels, mil_epochs, seed + 2, progress)
    stats = {"stage1": s1_stats, "encoder": enc_stats, "mil_final_loss": mil_loss,
             "train_tiles": int(keep.sum()), "train_positive_tiles": int(ylab.sum())}
    return s1, enc, mil, stats, phase


def train_synthetic(
    out_dir: Path,
    seed: int = 0,
    n_slides: int = 200,
    progress: bool = True,
    *,
    train_size: int = 2048,
    eval_size: int = 2048,
    epochs: int = 6,
    mil_epochs: int = 40,
) -> ModelCard:
    """Regenerate the slide model from seeded phantoms; writes 3 ONNX files + card.json to ``out_dir``.

    ``n_slides`` is split by :func:`split_sizes` (48 train, 96 calibration, 56 test by default):
    the held-out sets are the larger part so that ECE before/after calibration and the thresholds
    rest on enough slides. The defaults reproduce the shipped weights (``models/slides/weights``) in
    about 8 minutes on 2 CPU cores.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out_dir = Path(out_dir)
    n_train, n_cal, n_test = split_sizes(n_slides)
    if min(n_train, n_cal, n_test) < 2:
        raise ValueError(f"n_slides={n_slides} is too small: need at least 2 slides per split (8 in all)")
    params = StageParams()
    t_start = time.time()
    cpu_start = time.process_time()  # CPU seconds of all threads: the fair budget figure on a shared machine
    work = Path(tempfile.mkdtemp(prefix="slides-train-"))
    try:
        s1, enc, mil, stats, phase = _train_networks(work, seed, n_train, train_size, epochs, mil_epochs,
                                                     params, progress, t_start)
        phase["train_networks"] = time.time() - t_start - phase["train_phantoms_and_tiles"]
        tnets = TorchTileNets(s1, enc, mil)
        sums = export_onnx(s1, enc, mil, out_dir)
        # torch state dicts too (not used at runtime): for the torch-eager benchmark and fine-tuning
        torch.save({"stage1": s1.state_dict(), "encoder": enc.state_dict(), "mil": mil.state_dict()}, out_dir / TORCH_FILE)
        onets = OnnxTileNets.load(out_dir)
        parity = onnx_parity(tnets, onets, seed)

        t_eval = time.time()
        cal_rows, test_rows, calmap, thresholds = _calibrate_and_test(onets, params, seed, n_cal, n_test, train_size, eval_size, work, progress)
        phase["calibration_and_test"] = time.time() - t_eval
    finally:
        shutil.rmtree(work, ignore_errors=True)

    test_metrics = _metrics(test_rows, calmap, thresholds)
    cal_metrics = _metrics(cal_rows, calmap, thresholds)
    card = ModelCard(
        name=MODEL_NAME,
        version=MODEL_VERSION,
        task="Lymph-node metastasis detection on H&E whole-slide images (slide-level probability, attention heatmap, top tiles)",
        intended_use=INTENDED_USE,
        training_data=_training_data(seed, n_train, n_cal, n_test, train_size, eval_size),
        architecture=ARCHITECTURE,
        inputs={"modality": "SM", "sop_class": "VL Whole Slide Microscopy Image Storage", "stage1_um_per_px": 2.0, "stage2_um_per_px": 1.0},
        outputs={"slide_probability": "calibrated P(metastasis)", "attention_map": "per base tile", "top_k": TOP_K, "embedding_dim": FEATURE_DIM},
        metrics={"test": test_metrics, "calibration_set": cal_metrics, "onnx_parity_max_abs_diff": parity,
                 "training": {**stats,
                              "minutes": round((time.time() - t_start) / 60, 2),
                              "cpu_minutes": round((time.process_time() - cpu_start) / 60, 2),
                              "phase_seconds": {k: round(v, 1) for k, v in phase.items()}}},
        calibration=calmap,
        thresholds=thresholds,
        extra={"stage_params": {"stage1_threshold": params.stage1_threshold, "min_stage2": params.min_stage2,
                                "max_stage2": params.max_stage2}, "seed": seed,
               "calibration_protocol": _calibration_protocol(n_cal, n_test),
               "pathomics_sampling": _PATHOMICS_SAMPLING,
               "test_slides": test_rows},
        weights_sha256=sums,
    )
    card.write(out_dir / "card.json")
    log.info("slide model trained: test AUC %s", test_metrics["slide_auc"])
    fit_slides_domain(out_dir, seed, n_slides, size=eval_size)  # training domain + operating points
    return ModelCard.read(out_dir / "card.json")


def _read_labels(labels_csv: Path, dicom_dir: Path) -> tuple[list[str], np.ndarray, dict[str, list[Path]]]:
    """Slide labels by series UID (sorted), their 0/1 array, and each labelled series' files."""
    with open(labels_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"series_instance_uid", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{labels_csv}: expected columns series_instance_uid,label; got {reader.fieldnames}")
        labels = {row["series_instance_uid"].strip(): int(row["label"]) for row in reader}
    series = _series_paths(dicom_dir)
    missing = sorted(set(labels) - set(series))
    if missing:
        raise ValueError(f"{labels_csv}: {len(missing)} labelled series have no VL WSI instances under {dicom_dir} (first: {missing[0]})")
    uids = sorted(labels)
    y = np.array([labels[u] for u in uids])
    if min((y == 1).sum(), (y == 0).sum()) < 4:
        raise ValueError(f"{labels_csv}: need at least 4 slides of each class, got {int((y == 1).sum())} positive, {int((y == 0).sum())} negative")
    return uids, y, series


def train_from_folder(dicom_dir: Path, labels_csv: Path, out_dir: Path, resume: bool = True, *,
                      base_weights: Path | None = None, seed: int = 0, mil_epochs: int = 40,
                      progress: bool = True) -> ModelCard:
    """Retrain the MIL head (and recalibrate) on a site's own slides with slide-level labels.

    ``labels_csv`` needs columns ``series_instance_uid`` and ``label`` (1 = metastasis). Tile
    networks come from ``base_weights`` (default: the shipped ones). Per-slide features are cached
    under ``out_dir/cache`` and the MIL checkpoint in ``out_dir/mil.pt``, so an interrupted run
    continues where it stopped when ``resume`` is true. A quarter of the slides (at least 2 of each
    class) is held out for calibration and the card's metrics.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out_dir = Path(out_dir)
    base_weights = Path(base_weights or SHIPPED_DIR)
    uids, y, series = _read_labels(labels_csv, dicom_dir)
    onets = OnnxTileNets.load(base_weights)
    params = StageParams()
    cache = out_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for u in _progress(uids, "slide features", progress):
        f = cache / f"{hashlib.sha256(u.encode()).hexdigest()[:24]}.npy"
        if resume and f.is_file():
            continue
        with open_slide(series[u]) as rd:
            raw = analyze_slide(rd, onets, params)
        np.save(f, raw.features)
    bags = [np.load(cache / f"{hashlib.sha256(u.encode()).hexdigest()[:24]}.npy") for u in uids]
    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
    hold = set(pos[: max(2, len(pos) // 4)].tolist() + neg[: max(2, len(neg) // 4)].tolist())
    tr_idx = [i for i in range(len(uids)) if i not in hold]
    ho_idx = sorted(hold)
    mil = GatedAttentionMIL()
    ckpt = out_dir / "mil.pt"
    if resume and ckpt.is_file():
        mil.load_state_dict(torch.load(ckpt))
    else:
        _train_mil(mil, [bags[i] for i in tr_idx], [int(y[i]) for i in tr_idx], mil_epochs, seed, progress)
        torch.save(mil.state_dict(), ckpt)
    mil.eval()
    with torch.no_grad():
        ho_logits = np.array([float(mil(torch.from_numpy(bags[i]))[0]) for i in ho_idx])
    y_ho = y[ho_idx]
    calmap = fit_map(ho_logits, y_ho, seed)
    p_ho = apply_map(calmap, ho_logits)
    thresholds = fit_thresholds(ho_logits, y_ho, calmap)
    for name in (STAGE1_FILE, ENCODER_FILE):
        shutil.copyfile(base_weights / name, out_dir / name) if (base_weights / name).resolve() != (out_dir / name).resolve() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mil, (torch.randn(5, FEATURE_DIM),), str(out_dir / MIL_FILE), input_names=["features"],
                          output_names=["logit", "attention", "embedding"], dynamic_axes={"features": {0: "n"}, "attention": {0: "n"}},
                          opset_version=17, dynamo=False)
    sums = {n: sha256_file(out_dir / n) for n in (STAGE1_FILE, ENCODER_FILE, MIL_FILE)}
    card = ModelCard(
        name=MODEL_NAME,
        version=MODEL_VERSION + "+site",
        task="Lymph-node metastasis detection on H&E whole-slide images",
        intended_use="Site-adapted research model; validate locally before any use.",
        training_data=f"{len(tr_idx)} site slides from {dicom_dir} (labels {labels_csv}); tile networks from {base_weights}",
        synthetic_trained=False,
        notice="Tile networks trained on synthetic data; MIL head fitted to site data. Not for clinical use without local validation.",
        metrics={"holdout": {"n_slides": len(ho_idx), "slide_auc": float(roc_auc_score(y_ho, ho_logits)),
                             "ece_before": cal.expected_calibration_error(1 / (1 + np.exp(-ho_logits)), y_ho, 10),
                             "ece_after_in_sample": cal.expected_calibration_error(p_ho, y_ho, 10)}},
        calibration=calmap,
        thresholds=thresholds,
        extra={"stage_params": {"stage1_threshold": params.stage1_threshold, "min_stage2": params.min_stage2, "max_stage2": params.max_stage2}},
        weights_sha256=sums,
    )
    card.write(out_dir / "card.json")
    return card
