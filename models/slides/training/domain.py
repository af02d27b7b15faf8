"""Training domain and operating points of the shipped slide model (no retraining).

Re-generates the phantom slides of the SAME splits as :func:`models.slides.training.train.train_synthetic`
(:func:`data._split_plan` with offsets 0 / 10 000 / 20 000 for train / calibration / test, sizes
from :func:`data.split_sizes`), analyses each with the shipped ONNX networks through the runtime's
own two-stage path, and writes into the card the embedding density (fitted on the training
slides' MIL embeddings), the flag threshold (calibration slides), the test false-flag rate, the
acquisition ranges and the operating points with expected sensitivity/specificity on the test slides.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from models.slides.analysis import StageParams, analyze_slide
from models.slides.calibrate import apply_map
from models.slides.domain import acquisition_values
from models.slides.onnx_nets import OnnxTileNets
from models.slides.reader import open_slide
from models.slides.training.data import _generate, _split_plan, split_sizes
from models.training import domain as fitdom

log = logging.getLogger(__name__)

UNITS = {"pixel_spacing_um": "um", "intensity_mean": "", "intensity_std": ""}
LABELS = {"pixel_spacing_um": "base pixel size", "intensity_mean": "mean tile intensity (fraction of 255)",
          "intensity_std": "tile intensity standard deviation (fraction of 255)"}
FIXED = {"pixel_spacing_um": (0.2, 1.0, "training 0.5 um/px; stage 1 and 2 resample to 2 and 1 um/px, "
                              "which a base level between 0.2 and 1 um/px supports")}


def slide_rows(plan, size: int, nets, params: StageParams, work: Path) -> dict:
    """Embedding, logit, label and acquisition values of each planned phantom slide."""
    feats, logits, ys, acq = [], [], [], []
    for s, pos, occ in plan:
        truth = _generate([(s, pos, occ)], work, size, False, "")[0]
        with open_slide(truth.level_paths) as rd:
            raw = analyze_slide(rd, nets, params)
            um = rd.base.um_per_px
        feats.append(raw.embedding)
        logits.append(raw.slide_logit)
        ys.append(int(pos))
        acq.append(acquisition_values(um, raw.stage2_full))
        shutil.rmtree(truth.level_paths[0].parent, ignore_errors=True)
    return {"features": np.stack(feats), "logits": np.asarray(logits), "y": np.asarray(ys), "acquisition": acq}


def _gap_midpoint(logits: np.ndarray, probs: np.ndarray, thr: float, calmap: dict) -> float:
    """``thr`` moved to the calibrated value at the logit midpoint of the gap it sits in (same
    decisions on the calibration slides; the map is nearly a step, so a threshold just above the
    floor would call every test slide off the floor positive)."""
    above, below = logits[probs >= thr], logits[probs < thr]
    if above.size == 0 or below.size == 0:
        return float(thr)
    p_mid = float(apply_map(calmap, np.array([0.5 * (above.min() + below.max())]))[0])
    ok = float(probs[probs < thr].max()) < p_mid <= float(probs[probs >= thr].min())
    return p_mid if ok else float(thr)


def _rows_cached(cache: Path | None, name: str, build) -> dict:  # noqa: ANN001
    """A split's rows, from ``cache/<name>.npz`` when there (re-fitting costs no re-analysis)."""
    import pickle

    path = cache / f"slides-domain-{name}.pkl" if cache else None
    if path is not None and path.is_file():
        return pickle.loads(path.read_bytes())
    rows = build()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(rows))
    return rows


def fit_slides_domain(folder: Path, seed: int = 0, n_slides: int = 200, size: int = 2048,
                      n_extra_fit: int = 96, cache: Path | None = None) -> dict:
    """Fit on the training slides plus ``n_extra_fit`` more of the training distribution (seed
    offset 30 000, disjoint from calibration and test): 48 slides are too few for a 64-d density."""
    from cds.contracts.cards import ModelCard

    folder = Path(folder)
    card = ModelCard.read(folder / "card.json")
    sp = card.extra.get("stage_params", {})
    params = StageParams(**sp) if sp else StageParams()
    nets = OnnxTileNets.load(folder)
    n_train, n_cal, n_test = split_sizes(n_slides)
    work = Path(tempfile.mkdtemp(prefix="slides-domain-"))
    try:
        plans = {"fit": _split_plan(seed, n_train, 0), "extra": _split_plan(seed, n_extra_fit, 30_000),
                 "calibration": _split_plan(seed, n_cal, 10_000), "test": _split_plan(seed, n_test, 20_000)}
        splits = {name: _rows_cached(cache, f"{name}-{len(plan)}",
                                     lambda plan=plan: slide_rows(plan, size, nets, params, work))
                  for name, plan in plans.items() if plan}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    extra = splits.pop("extra", None)
    if extra is not None:
        splits["fit"] = {key: (np.concatenate([splits["fit"][key], extra[key]]) if key != "acquisition"
                               else splits["fit"][key] + extra[key]) for key in splits["fit"]}
    # k and the transform chosen by cross-validated false flags on the fit set (test split unseen)
    options = [(tf, k) for tf in ("none", "sqrt") for k in (2, 4, 8, 16)]
    cv = {f"{tf}/k={k}": fitdom.cv_false_flags(splits["fit"]["features"], splits["calibration"]["features"], k, tf)
          for tf, k in options}
    # within 0.01 of the fewest false flags (about 1.5 of 144 slides), the most axes: the finer
    # density (4 axes missed recoloured slides that 8-16 axes flag; see the CHANGELOG)
    best = min(cv.values())
    tf, k = max((o for o in options if cv[f"{o[0]}/k={o[1]}"] <= best + 0.01), key=lambda o: (o[1], -cv[f"{o[0]}/k={o[1]}"]))
    density = fitdom.fit_density(splits["fit"]["features"], k=k, transform=tf)
    dist = {k: density.distance(v["features"]) for k, v in splits.items()}
    threshold = fitdom.flag_threshold(dist["calibration"])
    acquisition = fitdom.fit_ranges(splits["fit"]["acquisition"], UNITS, margin=0.25, fixed=FIXED, labels=LABELS)
    summary = fitdom.split_summary(density, dist["fit"], dist["calibration"], dist["test"], threshold,
                                   acquisition, "slide", f"{n_train} training-split slides + {n_extra_fit} more from the training "
                                   "distribution (seed offset 30000), MIL embedding")
    summary["embedding_output"] = "SlideResult.embedding (MIL attention-pooled features)"
    summary["selection"] = {"chosen": f"{tf}/k={k}", "cv_false_flag_rate_on_fit_set": {n: round(v, 4) for n, v in cv.items()}}
    prob = {k: apply_map(card.calibration, v["logits"]) for k, v in splits.items()}
    # as the card's other thresholds: moved to the logit midpoint of the gap it sits in (the map is a step)
    cal_logit, cal_y = splits["calibration"]["logits"], splits["calibration"]["y"]
    spec = _gap_midpoint(cal_logit, prob["calibration"],
                         fitdom.threshold_at_specificity(prob["calibration"], cal_y, 0.9), card.calibration)
    points = fitdom.operating_points(prob["calibration"], cal_y, prob["test"], splits["test"]["y"],
                                     {**card.thresholds, "specificity_0.9": spec}, "slide")
    fitdom.write_domain(folder, "card.json", density, summary, points)
    log.info("slide domain: threshold %.2f, flag rates %s", threshold, summary["flag_rate"])
    return {"summary": summary, "points": points, "distances": dist,
            "test_logits": splits["test"]["logits"].tolist()}
