"""Ingest benchmark: one storescu association sending 20 synthetic 4096x3328 16-bit mammograms to
(a) dcmtk storescp, (b) this listener with durable writes (`cds serve`: fsync + rename + SQLite
index before each Success), (c) Orthanc, in the same run. Prints per-receiver wall times (median
over repeats) and the ratio listener / storescp.

    .venv/bin/python -m bench.ingest [--n 20] [--repeats 5]

Not part of the test run. The peers come from `make peers` (dcmtk, orthanc).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conformance.peers.orthanc import OrthancServer
from conformance.peers.process import free_port, stop_process, wait_port_open
from synthetic.phantoms.mammography import generate_fast_image

REPO = Path(__file__).resolve().parents[1]


def send(files: list[Path], port: int, aet: str) -> float:
    """Wall time of one storescu association sending every file (checks they all succeeded)."""
    t0 = time.perf_counter()
    r = subprocess.run(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0 or "Failed" in r.stderr:
        raise RuntimeError(f"storescu to {aet} failed: {r.stderr[-2000:]}")
    return dt


def run_storescp(files: list[Path], work: Path, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        out = work / f"storescp-{i}"
        out.mkdir()
        port = free_port()
        proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port_open(port)
            times.append(send(files, port, "STORESCP"))
        finally:
            stop_process(proc)
            shutil.rmtree(out, ignore_errors=True)
    return times


def run_listener(files: list[Path], work: Path, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        data = work / f"cds-{i}"
        port = free_port()
        env = {**os.environ, "CDS_DATA_DIR": str(data), "CDS_PORT": str(port), "CDS_HOST": "127.0.0.1",
               "CDS_STABLE_AGE_S": "3600", "CDS_LOG_LEVEL": "WARNING",
               "CDS_DISABLED_MODELS": "mammography,slides,ultrasound,recurrence"}
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port_open(port, timeout_s=60)
            times.append(send(files, port, "CDS"))
        finally:
            stop_process(proc)
            shutil.rmtree(data, ignore_errors=True)
    return times


def run_orthanc(files: list[Path], work: Path, repeats: int) -> list[float]:
    if shutil.which("Orthanc") is None:
        print("Orthanc not installed: skipped (make peers installs it)")
        return []
    times = []
    for i in range(repeats):
        with OrthancServer(work / f"orthanc-{i}", aet="ORTHANC") as orthanc:
            times.append(send(files, orthanc.dicom_port, "ORTHANC"))
        shutil.rmtree(work / f"orthanc-{i}", ignore_errors=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir on /var/tmp)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cds-bench-ingest-", dir=args.workdir or "/var/tmp"))
    try:
        files = [generate_fast_image(work / "in" / f"mg{i:02d}.dcm", seed=i) for i in range(args.n)]
        total = sum(f.stat().st_size for f in files)
        print(f"{args.n} instances, {total / 1e6:.0f} MB, {args.repeats} repeats each (medians)")
        results = {
            "dcmtk storescp (no fsync)": run_storescp(files, work, args.repeats),
            "cds listener (durable)": run_listener(files, work, args.repeats),
            "Orthanc 1.10": run_orthanc(files, work, args.repeats),
        }
        med = {k: statistics.median(v) for k, v in results.items() if v}
        for name, v in results.items():
            if v:
                print(f"{name:28s} median {med[name]:6.2f} s  ({total / 1e6 / med[name]:5.0f} MB/s)  "
                      f"runs: {', '.join(f'{x:.2f}' for x in v)}")
        ratio = med["cds listener (durable)"] / med["dcmtk storescp (no fsync)"]
        print(f"ratio listener / storescp: {ratio:.2f}  (goal <= 1.25)")
        if "Orthanc 1.10" in med:
            print(f"ratio listener / Orthanc:  {med['cds listener (durable)'] / med['Orthanc 1.10']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
