"""Benchmark of the slide model: per-slide decode / preprocessing / model time, two-stage vs a single
full-resolution pass (time and AUC), onnxruntime vs torch eager, peak RSS; medians and ratios.

Run:  .venv/bin/python bench/inference_slides.py [--slides 8] [--size 4096] [--threads 2]

Phantom slides are generated first in a child process (so generation memory does not count in the
peak RSS), then every slide is analysed three ways in this process:

* two-stage, onnxruntime — what the pipeline runs (``SlideModel.analyze_series``, including the
  pathomics features and result files);
* full resolution, onnxruntime — every tissue tile through the stage-2 encoder and MIL head (the
  named peer: a single full-resolution pass);
* two-stage, torch eager — the same networks in PyTorch (state dicts from ``slide_nets.pt`` when
  shipped, else the same architecture freshly initialised: eager speed does not depend on weights).
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


def _generate(out: Path, n: int, size: int, seed: int) -> None:
    from cds.domain import PatientRef
    from models.phantoms.slides import generate_slide

    truths = []
    for i in range(n):
        pos = i % 2 == 0
        occult = pos and (i // 2) % 3 == 1
        tr = generate_slide(out / f"s{i}", seed + i, PatientRef(patient_id="BENCH"), metastasis=pos, occult=occult, size=size)
        truths.append(json.loads(tr.model_dump_json()))
    (out / "truths.json").write_text(json.dumps(truths))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slides", type=int, default=8)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=90_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None, help="reuse/generate slides here")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-slides-"))
    if args.generate_only:
        _generate(work, args.slides, args.size, args.seed)
        return
    if not (work / "truths.json").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate-only", "--dir", str(work), "--slides", str(args.slides),
                        "--size", str(args.size), "--seed", str(args.seed)], check=True)
        print(f"generated {args.slides} phantom slides ({args.size}px) in {time.perf_counter() - t0:.1f} s")

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    from sklearn.metrics import roc_auc_score

    from cds.settings import Settings
    from models.slides.calibrate import apply_map
    from models.phantoms.slides import SlideTruth
    from models.slides import runtime
    from models.slides.analysis import analyze_slide
    from models.slides.nets import GatedAttentionMIL, PatchCNN, TileEncoder, TorchTileNets
    from models.slides.onnx_nets import OnnxTileNets
    from models.slides.reader import open_slide
    from models.slides.train import TORCH_FILE

    torch.set_num_threads(args.threads)
    truths = [SlideTruth.model_validate(t) for t in json.loads((work / "truths.json").read_text())]
    model = runtime.load(Settings())
    model.nets = OnnxTileNets.load(model.weights, threads=args.threads)
    rss_start = _rss_mb()

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for tr in truths:  # two-stage, onnxruntime (the pipeline path)
            t0 = time.perf_counter()
            res, st = model.analyze_series(list(tr.level_paths), Path(out))
            rows.append({"label": int(tr.has_metastasis), "occult": tr.occult, "two_stage_s": time.perf_counter() - t0,
                         "p_two": res.metastasis.probability, "decode_s": st.seconds["decode"],
                         "preprocess_s": st.seconds["preprocess"], "model_s": st.seconds["model"],
                         "pathomics_s": st.seconds["pathomics"], "base_read": st.base_tiles_read,
                         "base_total": st.base_tiles_total, "tissue": st.tissue_tiles})
    rss_two = _rss_mb()
    for row, tr in zip(rows, truths):  # single full-resolution pass, onnxruntime
        t0 = time.perf_counter()
        with open_slide(list(tr.level_paths)) as rd:
            raw = analyze_slide(rd, model.nets, model.params, mode="full")
        row["full_s"] = time.perf_counter() - t0
        row["full_model_s"] = raw.timings["model"]
        row["full_decode_s"] = raw.timings["decode"]
        row["p_full"] = float(apply_map(model.calibration, np.array([raw.slide_logit]))[0])
    rss_full = _rss_mb()
    s1, enc, mil = PatchCNN(), TileEncoder(), GatedAttentionMIL()
    pt = model.weights / TORCH_FILE
    weights_note = "trained state dicts" if pt.is_file() else "same architecture, fresh init (speed only)"
    if pt.is_file():
        state = torch.load(pt)
        s1.load_state_dict(state["stage1"])
        enc.load_state_dict(state["encoder"])
        mil.load_state_dict(state["mil"])
    tnets = TorchTileNets(s1, enc, mil)
    for row, tr in zip(rows, truths):  # two-stage, torch eager
        with open_slide(list(tr.level_paths)) as rd:
            raw = analyze_slide(rd, tnets, model.params)
        row["torch_model_s"] = raw.timings["model"]

    def med(key: str) -> float:
        return float(np.median([r[key] for r in rows]))

    y = np.array([r["label"] for r in rows])
    auc_two = float(roc_auc_score(y, [r["p_two"] for r in rows])) if len(set(y)) == 2 else float("nan")
    auc_full = float(roc_auc_score(y, [r["p_full"] for r in rows])) if len(set(y)) == 2 else float("nan")
    print(f"\nslide benchmark: {len(rows)} phantom slides {args.size}x{args.size} px at 0.5 um/px, "
          f"{args.threads} threads, {os.cpu_count()} CPUs visible")
    hdr = f"{'#':>2} {'lab':>3} {'occ':>3} {'tiss':>4} {'read':>4} {'decode':>7} {'prep':>6} {'model':>6} {'pathom':>6} {'2stage':>7} {'full':>7} {'torch':>6} {'p2':>5} {'pfull':>5}"
    print(hdr)
    for i, r in enumerate(rows):
        print(f"{i:>2} {r['label']:>3} {int(r['occult']):>3} {r['tissue']:>4} {r['base_read']:>4} {r['decode_s']:>7.2f} "
              f"{r['preprocess_s']:>6.2f} {r['model_s']:>6.2f} {r['pathomics_s']:>6.2f} {r['two_stage_s']:>7.2f} "
              f"{r['full_s']:>7.2f} {r['torch_model_s']:>6.2f} {r['p_two']:>5.2f} {r['p_full']:>5.2f}")
    summary = {
        "median_two_stage_s": med("two_stage_s"),
        "median_two_stage_without_pathomics_s": float(np.median([r["two_stage_s"] - r["pathomics_s"] for r in rows])),
        "median_full_resolution_s": med("full_s"),
        "speedup_full_over_two_stage": med("full_s") / med("two_stage_s"),
        "speedup_full_over_two_stage_model_path": float(np.median([r["full_s"] for r in rows]) / np.median([r["two_stage_s"] - r["pathomics_s"] for r in rows])),
        "median_decode_s": med("decode_s"),
        "median_preprocess_s": med("preprocess_s"),
        "median_model_s_onnxruntime": med("model_s"),
        "median_model_s_torch_eager": med("torch_model_s"),
        "onnxruntime_speedup_over_torch": med("torch_model_s") / med("model_s"),
        "median_pathomics_s": med("pathomics_s"),
        "median_base_tiles_read": med("base_read"),
        "median_base_tiles_total": med("base_total"),
        "auc_two_stage": auc_two,
        "auc_full_resolution": auc_full,
        "auc_loss_two_stage": auc_full - auc_two,
        "peak_rss_mb_before": rss_start,
        "peak_rss_mb_after_two_stage": rss_two,
        "peak_rss_mb_after_full": rss_full,
        "torch_weights": weights_note,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
