"""Benchmark of the slide model: two-stage vs a single full-resolution pass (time AND AUC) at
stated slide sizes, onnxruntime vs torch eager, the pipeline path's stage timings and peak RSS.

Run:  .venv/bin/python bench/inference_slides.py [--sizes 4096 8192 16384] [--slides 8 8 4]
                                                 [--repeats 3] [--threads 2] [--out results.json]

For each size, held-out phantom slides (seeds 90 000+, never used in training or calibration; half
positive, half of the positives occult) are generated first in a child process, so generation
memory does not count in the peak RSS. Then every slide is analysed, ``--repeats`` times each,
in two modes through the same code (:func:`models.slides.analysis.analyze_slide`, slide opening
included):

* ``two_stage`` - tissue detection, stage-1 screen of every tissue tile at 2 um/px, stage 2 only on
  the suspicious tiles (what the pipeline runs);
* ``full`` - the named peer: every tissue tile read at full resolution through the stage-2
  encoder and the MIL head (no screen).

Per slide the median over repeats is kept; the table shows medians over slides, the ratio
full / two-stage, and the slide-level AUC of both modes on the same slides (calibrated
probabilities from the shipped card; AUC is rank-based, so calibration does not change it).
Once per slide (smallest size only, to keep the run short) it also times the pipeline entry
``SlideModel.analyze_series`` (adds pathomics and result files) and the two-stage model time
under torch eager vs onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _plan(n: int, seed: int) -> list[tuple[int, bool, bool]]:
    """(seed, metastasis, occult): half positive, half of the positives occult (as the card's test set)."""
    out = []
    for i in range(n):
        pos = i % 2 == 0
        out.append((seed + i, pos, pos and (i // 2) % 2 == 1))
    return out


def _generate(out: Path, n: int, size: int, seed: int) -> None:
    from cds.contracts.domain import PatientRef
    from synthetic.phantoms.slides import generate_slide

    truths = []
    for s, pos, occ in _plan(n, seed):
        tr = generate_slide(out / f"s{s}", s, PatientRef(patient_id="BENCH"), metastasis=pos, occult=occ, size=size)
        truths.append(json.loads(tr.model_dump_json()))
    (out / "truths.json").write_text(json.dumps(truths))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _auc(y: np.ndarray, p: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), res


def _bench_size(size: int, n: int, args, model, tnets) -> dict:
    from models.slides.analysis import analyze_slide
    from models.slides.calibrate import apply_map
    from models.slides.reader import open_slide
    from synthetic.phantoms.slides import SlideTruth

    work = (args.dir / str(size)) if args.dir else Path(tempfile.mkdtemp(prefix=f"bench-slides-{size}-"))
    seed = args.seed + size  # a distinct held-out seed range per size
    if not (work / "truths.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate-only", "--dir", str(work), "--slides", str(n),
                        "--sizes", str(size), "--seed", str(seed)], check=True)
        print(f"generated {n} phantom slides of {size}x{size} px in {time.perf_counter() - t0:.1f} s", flush=True)
    truths = [SlideTruth.model_validate(t) for t in json.loads((work / "truths.json").read_text())]

    def run(tr, mode, nets=None):
        with open_slide(list(tr.level_paths)) as rd:
            return analyze_slide(rd, nets or model.nets, model.params, mode=mode)

    for mode in ("two_stage", "full"):  # warm-up (first onnxruntime calls, file cache): not timed
        run(truths[0], mode)
    rows = []
    for tr in truths:
        row = {"label": int(tr.has_metastasis), "occult": tr.occult}
        for mode in ("two_stage", "full"):
            secs, raw = _timed(lambda tr=tr, mode=mode: run(tr, mode), args.repeats)
            row[f"{mode}_s"] = secs
            row[f"{mode}_p"] = float(apply_map(model.calibration, np.array([raw.slide_logit]))[0])
            row[f"{mode}_timings"] = raw.timings
            row[f"{mode}_base_read"] = raw.base_tiles_read
            row["tissue"] = int(raw.tissue.sum())
            row["grid"] = int(raw.grid[0] * raw.grid[1])
            del raw
        if size == min(args.sizes):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                _, st = model.analyze_series(list(tr.level_paths), Path(out))
                row["pipeline_s"] = time.perf_counter() - t0
                row["pathomics_s"] = st.seconds["pathomics"]
            if tnets is not None:
                row["torch_model_s"] = run(tr, "two_stage", tnets).timings["model"]
        rows.append(row)
        print(f"  {size}px seed-slide {len(rows)}/{len(truths)}: two-stage {row['two_stage_s']:.2f} s, "
              f"full {row['full_s']:.2f} s", flush=True)
    y = np.array([r["label"] for r in rows])

    def med(key: str) -> float:
        return float(np.median([r[key] for r in rows]))

    out = {
        "size_px": size,
        "n_slides": len(rows),
        "n_positive": int(y.sum()),
        "n_occult": int(sum(r["occult"] for r in rows)),
        "repeats": args.repeats,
        "median_tissue_tiles": med("tissue"),
        "median_grid_tiles": med("grid"),
        "median_two_stage_base_tiles_read": med("two_stage_base_read"),
        "median_full_base_tiles_read": med("full_base_read"),
        "median_two_stage_s": med("two_stage_s"),
        "median_full_s": med("full_s"),
        "speedup_full_over_two_stage": med("full_s") / med("two_stage_s"),
        "median_speedup_per_slide": float(np.median([r["full_s"] / r["two_stage_s"] for r in rows])),
        "auc_two_stage": _auc(y, [r["two_stage_p"] for r in rows]),
        "auc_full": _auc(y, [r["full_p"] for r in rows]),
        "two_stage_stage_seconds": {k: float(np.median([r["two_stage_timings"][k] for r in rows]))
                                    for k in rows[0]["two_stage_timings"]},
        "full_stage_seconds": {k: float(np.median([r["full_timings"][k] for r in rows])) for k in rows[0]["full_timings"]},
    }
    out["auc_loss_two_stage"] = out["auc_full"] - out["auc_two_stage"]
    if "pipeline_s" in rows[0]:
        out["median_pipeline_analyze_series_s"] = med("pipeline_s")
        out["median_pathomics_s"] = med("pathomics_s")
    if "torch_model_s" in rows[0]:
        out["median_two_stage_model_s_onnxruntime"] = out["two_stage_stage_seconds"]["model"]
        out["median_two_stage_model_s_torch_eager"] = med("torch_model_s")
        out["onnxruntime_speedup_over_torch"] = med("torch_model_s") / out["two_stage_stage_seconds"]["model"]
    out["peak_rss_mb"] = _rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    ap.add_argument("--slides", type=int, nargs="+", default=[8, 8, 4], help="slides per size (one value: all sizes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=90_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="reuse/generate slides here (one subfolder per size)")
    ap.add_argument("--out", type=Path, default=None, help="also write the summary JSON here")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch-eager comparison")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        _generate(args.dir, args.slides[0], args.sizes[0], args.seed)
        return
    counts = args.slides if len(args.slides) == len(args.sizes) else [args.slides[0]] * len(args.sizes)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from cds.contracts.settings import Settings
    from models.slides import runtime
    from models.slides.onnx_nets import OnnxTileNets

    model = runtime.load(Settings())
    model.nets = OnnxTileNets.load(model.weights, threads=args.threads)
    tnets, weights_note = None, "not measured"
    if not args.no_torch:
        import torch

        from models.slides.training.nets import GatedAttentionMIL, PatchCNN, TileEncoder, TorchTileNets
        from models.slides.training.train import TORCH_FILE

        torch.set_num_threads(args.threads)
        s1, enc, mil = PatchCNN(), TileEncoder(), GatedAttentionMIL()
        pt = model.weights / TORCH_FILE
        weights_note = "trained state dicts" if pt.is_file() else "same architecture, fresh init (speed only)"
        if pt.is_file():
            state = torch.load(pt)
            s1.load_state_dict(state["stage1"])
            enc.load_state_dict(state["encoder"])
            mil.load_state_dict(state["mil"])
        tnets = TorchTileNets(s1, enc, mil)

    results = []
    for size, n in zip(args.sizes, counts):
        results.append(_bench_size(size, n, args, model, tnets))

    print(f"\nslide benchmark: held-out phantoms at 0.5 um/px, {args.threads} threads, {os.cpu_count()} CPUs visible, "
          f"median over {args.repeats} repeats per slide, then over slides")
    print(f"{'size':>6} {'n':>3} {'pos':>3} {'occ':>3} {'tissue':>6} {'read2s':>6} {'2-stage s':>9} {'full s':>8} "
          f"{'ratio':>6} {'AUC 2s':>7} {'AUC full':>8} {'dAUC':>6}")
    for r in results:
        print(f"{r['size_px']:>6} {r['n_slides']:>3} {r['n_positive']:>3} {r['n_occult']:>3} {r['median_tissue_tiles']:>6.0f} "
              f"{r['median_two_stage_base_tiles_read']:>6.0f} {r['median_two_stage_s']:>9.2f} {r['median_full_s']:>8.2f} "
              f"{r['speedup_full_over_two_stage']:>6.1f} {r['auc_two_stage']:>7.3f} {r['auc_full']:>8.3f} "
              f"{r['auc_loss_two_stage']:>6.3f}")
    summary = {"threads": args.threads, "torch_weights": weights_note, "sizes": results}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
