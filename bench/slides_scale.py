"""Benchmark: the end-to-end slide path at real slide sizes, against a converter run on the same slide.

Usage::

    .venv/bin/python -m bench.slides_scale [--widths 25000 50000 100000] [--repeats 3]
                                           [--tile 512] [--out results.json]

For each base width W (height 0.8 W) a lazily built slide phantom
(:mod:`synthetic.phantoms.large_slide`: one rendered 2048-px tissue section, glass elsewhere,
TILED_FULL JPEG pyramid) is written as DICOM and as the same pyramid in a tiled TIFF, in a child
process so generation does not count. Then, ``--repeats`` times each, in fresh child processes:

* ``cds analyze``: the whole slide path (intake into the spool, model, SEG + TID 1500 SR +
  RiskAssessment, recurrence case, outbox to a folder), with the mammography model disabled;
* the named peer, ``OrthancWSIDicomizer`` (Debian orthanc-wsi 1.1) converting the same TIFF to
  DICOM (JPEG tiles transcoded, not re-encoded, ``--threads 1``, its default; our side runs
  onnxruntime on 2 threads), which is the step a lab runs on every
  slide before we ever see it: a pass over every tile of the slide. Our analysis reads only the
  lowest level in full and a few high-magnification tiles, so it should cost no more than a small
  multiple of that pass, whatever the slide size.

Printed per width: median wall time and median peak RSS of both, and the ratio ours / peer.
Peak RSS is the child's own (``os.wait4``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generate(work: Path, width: int, tile: int) -> tuple[Path, Path]:
    """Write the DICOM slide and the TIFF in a child process (its memory is not measured)."""
    code = (
        "import sys; from pathlib import Path\n"
        "from cds.contracts.domain import PatientRef\n"
        "from synthetic.phantoms.large_slide import generate_large_slide, write_large_tiff\n"
        "w, t, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])\n"
        "generate_large_slide(out / 'dicom', PatientRef(patient_id='BENCH', name='Bench^Slide'),"
        " width=w, height=w * 4 // 5, tile=t)\n"
        "write_large_tiff(out / 'slide.tif', w, w * 4 // 5, tile=t)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(width), str(tile), str(work)], check=True, cwd=ROOT)
    return work / "dicom", work / "slide.tif"


def _measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one child process."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nothing blocks while we wait4
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err.read().decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024.0


def _ours(dicom: Path, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "CDS_DISABLED_MODELS": "mammography"}
    return _measure([sys.executable, "-m", "app.cli", "analyze", str(dicom), "--out", str(out)], env)


def _peer(tool: str, tiff: Path, work: Path, width: int) -> tuple[float, float]:
    out = work / "dicomizer"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    dataset = work / "dataset.json"
    if not dataset.exists():
        dataset.write_text(subprocess.run([tool, "--sample-dataset"], capture_output=True, text=True,
                                          check=True).stdout)
    height = width * 4 // 5
    return _measure([tool, "--threads", "1", "--dataset", str(dataset), "--folder", str(out), "--compression", "jpeg",
                     "--imaged-width", str(height * 0.0005), "--imaged-height", str(width * 0.0005), str(tiff)])


def run(widths: list[int], repeats: int, tile: int) -> list[dict]:
    tool = shutil.which("OrthancWSIDicomizer")
    if tool is None:  # a figure without its peer's ratio is not a benchmark result
        raise SystemExit("bench/slides_scale: OrthancWSIDicomizer is missing (scripts/install_peers.sh)")
    rows = []
    for width in widths:
        with tempfile.TemporaryDirectory(prefix=f"slides-scale-{width}-") as tmp:
            work = Path(tmp)
            dicom, tiff = _generate(work, width, tile)
            ours = [_ours(dicom, work / "out") for _ in range(repeats)]
            peer = [_peer(tool, tiff, work, width) for _ in range(repeats)] if tool else []
            row = {
                "width": width, "height": width * 4 // 5, "tile": tile, "repeats": repeats,
                "slide_mb": round(sum(p.stat().st_size for p in dicom.glob("*.dcm")) / 1e6, 1),
                "ours_s": statistics.median(s for s, _ in ours),
                "ours_rss_mb": statistics.median(m for _, m in ours),
                "peer": "OrthancWSIDicomizer 1.1 (TIFF -> DICOM, JPEG transcode)" if tool else "absent",
                "peer_s": statistics.median(s for s, _ in peer) if peer else None,
                "peer_rss_mb": statistics.median(m for _, m in peer) if peer else None,
            }
            row["ratio_s"] = row["ours_s"] / row["peer_s"] if peer else None
            rows.append(row)
            _print_row(row)
    return rows


def _print_row(r: dict) -> None:
    peer = (f"peer {r['peer_s']:.2f} s / {r['peer_rss_mb']:.0f} MB, ratio ours/peer {r['ratio_s']:.2f}"
            if r["peer_s"] is not None else "peer OrthancWSIDicomizer not installed")
    print(f"{r['width']:>6} x {r['height']:<6} ({r['slide_mb']} MB DICOM): cds analyze {r['ours_s']:.2f} s / "
          f"{r['ours_rss_mb']:.0f} MB peak RSS; {peer}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs="+", default=[25_000, 50_000, 100_000],
                    help="base-level widths in pixels (height is 0.8 x width)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per width; medians are reported")
    ap.add_argument("--tile", type=int, default=512, help="tile size of the slide and the TIFF")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = run(args.widths, args.repeats, args.tile)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
