"""Training entry points of the mammography model (needs torch), wired to ``cds train``.

* :func:`train_synthetic`: renders phantom exams, trains, evaluates on a held-out split,
  fits temperature scaling on a calibration split, runs leave-one-vendor-out (LOVO) with and
  without MixStyle, exports ONNX and checks parity with onnxruntime, writes the model card;
* :func:`train_from_folder`: the same on a user's DICOM folder and labels CSV.

Every long stage checkpoints (the rendered/decoded dataset as ``.npz``, each network after each
epoch; for ``train_synthetic`` in ``out_dir/cache``, which git ignores), so an interrupted run
resumes where it stopped.

Evaluation protocol (all on the held-out test split; nothing fitted on it):

* malignant-vs-not AUC on P(in situ) + P(invasive) after temperature scaling; per image;
* IoU and Dice: per image, at the network's 256x208 geometry, averaged over test images that
  have a lesion; the probability map is thresholded at the value that maximises mean IoU on the
  CALIBRATION split (grid 0.20-0.85), components under 12 pixels dropped; also per lesion type;
* ECE: 15 equal-width bins, top-label confidence vs correctness (and binary, on malignancy),
  before and after the temperature fitted on the calibration split;
* leave-one-vendor-out (LOVO): for each vendor, a network trained on the other vendors' training
  split with MixStyle and one without (same seed, same data order), scored on the held-out
  vendor's calibration + test images. LOVO runs :data:`LOVO_EPOCHS` epochs per arm: it compares
  MixStyle with none at equal epochs, and more LOVO epochs would multiply the training time.

The bilateral input shows 10 % of training pairs self-paired, as the runtime does when the other
side is missing, and lesion components are reported only on images whose calibrated P(normal) is
at most a value fitted on the calibration split (:func:`evaluate.fit_lesion_gate`). How the
recipe was chosen, with the numbers, is in ``models/mammography/CHANGELOG.md``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cds.contracts.cards import ModelCard
from cds.contracts.domain import NOT_FOR_CLINICAL_USE
from models.mammography.training.config import (  # noqa: F401  (re-exported for callers)
    CARD_NAME,
    EPOCHS,
    LOVO_EPOCHS,
    MIN_LESION_PIXELS,
    MODEL_NAME,
    MODEL_VERSION,
    N_EXAMS,
    ONNX_NAME,
    SEG_THRESHOLD,
    TTA_ALPHA,
    EvalResult,
    TrainConfig,
)
from models.mammography.training.data import MammoArrays, concat, folder_arrays, synthetic_arrays
from models.mammography.training.domain import fit_mammography_domain
from models.mammography.training.evaluate import (  # noqa: F401
    clean_mask,
    detection_rates,
    evaluate,
    fit_lesion_gate,
    seg_scores,
    seg_scores_by_type,
)
from models.mammography.training.export import _card, export_onnx, onnx_parity
from models.mammography.training.loop import (  # noqa: F401
    _fit_job,
    _net_from_state,
    _net_input,
    _progress,
    _self_pair,
    fit,
    net_for_config,
    predict,
)
from models.mammography.training.lovo import lovo_jobs, lovo_table
from models.mammography.training.parallel import run_jobs
from models.training.files import sha256_file as _sha256
from synthetic.phantoms.mammography import GENERATOR_VERSION as PHANTOM_VERSION

log = logging.getLogger(__name__)


def train_on_arrays(data: MammoArrays, out_dir: Path, cfg: TrainConfig, *, training_data: str,
                    progress: bool = True, resume: bool = True, lovo_epochs: int | None = None,
                    synthetic: bool = True, workers: int = 1, cache_dir: Path | None = None) -> ModelCard:
    """Train, evaluate, calibrate, optionally run LOVO, export ONNX and write the card.

    ``lovo_epochs`` None runs LOVO with the main model's epochs, 0 skips it. ``workers`` > 1
    trains the main and LOVO networks in that many forked processes, one thread each.
    Checkpoints go to ``cache_dir`` (default ``out_dir``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(cache_dir) if cache_dir else out_dir
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    is_train = data.split == "train"
    calib = data.subset(data.split == "calibration")
    test = data.subset(data.split == "test")
    if not is_train.any() or len(calib) == 0 or len(test) == 0:
        raise ValueError(f"need train, calibration and test images; got "
                         f"{int(is_train.sum())}/{len(calib)}/{len(test)}")
    inline = workers <= 1
    jobs = [("main", lambda: _fit_job(data, is_train, cfg, ckpt_dir / "checkpoint_main.pt", resume,
                                      "main", progress and inline))]
    lovo_cfg = TrainConfig(**{**asdict(cfg), "epochs": cfg.epochs if lovo_epochs is None else lovo_epochs})
    rows: list = []
    if lovo_cfg.epochs > 0:
        more, rows = lovo_jobs(data, lovo_cfg, ckpt_dir, progress and inline, resume)
        jobs += more
    timings: dict[str, float] = {}
    with _progress(progress and not inline) as bar:
        task = bar.add_task(f"training {len(jobs)} networks ({workers} processes)", total=len(jobs), info="")

        def done(name: str, seconds: float) -> None:
            timings[name] = round(seconds, 1)
            bar.update(task, advance=1, info=f"{name} {seconds:.0f} s")

        results = run_jobs(jobs, workers, done)
    net = _net_from_state(results[0]["state"], cfg)
    t_train = time.time() - t0
    ev = evaluate(net, calib, test)
    lovo: dict = {"skipped": "lovo_epochs=0"}
    if rows:
        lovo = lovo_table(data, rows, results[1:], lovo_cfg.epochs)
    onnx_path = export_onnx(net, out_dir / ONNX_NAME)
    parity = onnx_parity(net, onnx_path, np.ascontiguousarray(_net_input(test.x[:4], net)))
    train_info = {"config": asdict(cfg), "n_train": int(is_train.sum()), "n_calibration": len(calib),
                  "n_test": len(test), "workers": workers, "job_seconds": timings,
                  # over every run that trained each network (a resumed job's own seconds above
                  # cover only its remaining epochs); null where a checkpoint predates the count
                  "job_train_seconds_all_runs": {name: r["train_seconds"] for (name, _), r in zip(jobs, results)},
                  "resumed_at_epoch": {name: r["start_epoch"] for (name, _), r in zip(jobs, results)
                                       if r["start_epoch"]},
                  "training_wall_seconds": round(t_train, 1),
                  "total_seconds": round(time.time() - t0, 1), "torch": torch.__version__,
                  "vendors": sorted(set(data.vendor.tolist()))}
    card = _card(ev, lovo, parity, onnx_path, training_data, train_info, synthetic)
    card.write(out_dir / CARD_NAME)
    log.info("mammography model written to %s: %s", out_dir, json.dumps(ev.metrics, default=str))
    return card


def _cached(path: Path, key: dict, build) -> MammoArrays:
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        return MammoArrays.load(path)
    arrays = build()
    arrays.save(path)
    meta.write_text(json.dumps(key))
    return arrays


def train_synthetic(out_dir: Path, seed: int = 0, n_exams: int = N_EXAMS, epochs: int = EPOCHS,
                    progress: bool = True, lovo_epochs: int | None = LOVO_EPOCHS, resume: bool = True,
                    rows: int = 512, columns: int = 416, workers: int = 2) -> ModelCard:
    """Render phantoms, train and ship: ``out_dir`` gets mammography.onnx and card.json.

    The rendered data set and the checkpoints are kept in ``out_dir/cache`` (ignored by git), so
    an interrupted run resumes; LOVO runs :data:`LOVO_EPOCHS` epochs per arm (None: the main
    model's). ``workers`` processes render and train in parallel (one thread each).
    """
    out_dir = Path(out_dir)
    cache_dir = out_dir / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache, meta = cache_dir / "dataset.npz", cache_dir / "dataset.json"
    key = {"seed": seed, "rows": rows, "columns": columns, "generator": PHANTOM_VERSION}
    data = None
    if cache.is_file() and meta.is_file():
        stored = json.loads(meta.read_text())
        if {k: stored.get(k) for k in key} == key:
            data = MammoArrays.load(cache)
            if len(data) // 4 >= n_exams:
                data = data.subset(np.arange(4 * n_exams))
    have = 0 if data is None else len(data) // 4
    if have < n_exams:
        with _progress(progress) as bar:
            task = bar.add_task("rendering phantom exams", total=n_exams, completed=have, info="")
            more = synthetic_arrays(n_exams, seed, rows, columns, on_exam=lambda i: bar.advance(task),
                                    start=have, workers=workers)
        data = more if data is None else concat([data, more])
        data.save(cache)
        meta.write_text(json.dumps({**key, "n_exams": n_exams}))
    desc = (f"{n_exams} synthetic 4-view exams (synthetic.phantoms.mammography generator v{PHANTOM_VERSION}, "
            f"seed {seed}, {rows}x{columns}, 4 simulated vendors, balanced labels), split 3:1:1 by "
            f"exam into train/calibration/test. {NOT_FOR_CLINICAL_USE}")
    train_on_arrays(data, out_dir, TrainConfig(epochs=epochs, seed=seed), training_data=desc,
                    progress=progress, resume=resume, lovo_epochs=lovo_epochs, synthetic=True,
                    workers=workers, cache_dir=cache_dir)
    # training domain (embedding density, acquisition ranges) and operating points, same splits
    fit_mammography_domain(out_dir, seed, n_exams=n_exams, rows=rows, columns=columns, workers=workers)
    return ModelCard.read(out_dir / CARD_NAME)


def train_from_folder(dicom_dir: Path, labels_csv: Path, out_dir: Path, resume: bool = True,
                      epochs: int = 12, seed: int = 0, progress: bool = True,
                      lovo_epochs: int = 0) -> ModelCard:
    """Train on a user's MG DICOM folder and labels CSV (see :func:`data.folder_arrays`), or on
    CBIS-DDSM as distributed: its description CSVs (one, or their folder) and DICOM tree
    (:mod:`models.mammography.training.cbis_ddsm`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from models.mammography.training import cbis_ddsm

    cbis = cbis_ddsm.is_cbis_ddsm(Path(labels_csv))  # CBIS-DDSM's own CSVs (a file or their folder)
    key = {"dicom_dir": str(Path(dicom_dir).resolve()), "seed": seed,
           "labels_csv": cbis_ddsm.labels_digest(Path(labels_csv)) if cbis else _sha256(Path(labels_csv))}

    def build() -> MammoArrays:
        with _progress(progress) as bar:
            task = bar.add_task("decoding DICOM", total=None, info="")
            read = cbis_ddsm.cbis_arrays if cbis else folder_arrays
            return read(dicom_dir, labels_csv, seed, on_row=lambda k, n: bar.update(task, completed=k, total=n))

    data = _cached(out_dir / "dataset.npz", key, build)
    desc = f"User data: {Path(labels_csv).name} ({len(data)} images) from {Path(dicom_dir).name}."
    card = train_on_arrays(data, out_dir, TrainConfig(epochs=epochs, seed=seed), training_data=desc,
                           progress=progress, resume=resume, lovo_epochs=lovo_epochs, synthetic=False)
    return card
