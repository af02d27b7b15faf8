"""Helpers for the slide tests at real size: peers, `cds analyze` in a child process, dciodvfy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom

from tests.peers import need  # noqa: F401 (re-exported for the slide tests)

# A slide-only run: the mammography model is not needed (and other engineers' work on it must not
# make these tests fail).
SLIDE_ONLY_ENV = {"CDS_DISABLED_MODELS": "mammography"}




def dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run([need("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    lines = (res.stdout + res.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    if res.returncode not in (0,) and not errors:
        errors = [f"dciodvfy exit {res.returncode}"]
    return errors


@dataclass
class AnalyzeRun:
    out: Path
    seconds: float
    peak_rss_mb: float
    stdout: str

    def files(self, pattern: str) -> list[Path]:
        return sorted(self.out.rglob(pattern))

    @property
    def seg(self) -> Path:
        return _one(self.files("*_seg-1.dcm"), "SEG")

    @property
    def sr(self) -> Path:
        return _one([p for p in self.files("*_sr.dcm") if "case_" not in p.name], "SR")

    @property
    def risk_assessment(self) -> dict:
        return json.loads(_one(self.files("*_fhir-riskassessment.json"), "RiskAssessment").read_text())


def _one(paths: list[Path], what: str) -> Path:
    assert len(paths) == 1, f"expected one {what}, found {[p.name for p in paths]}"
    return paths[0]


# Peak RSS from /proc/self/status VmHWM: getrusage's ru_maxrss survives execve, so a child of a
# large pytest process would report the parent's peak instead of its own.
_LAUNCH = """
import atexit, sys
_RSS_FILE = sys.argv[1]
def _peak():
    with open("/proc/self/status") as st:
        kb = next(line.split()[1] for line in st if line.startswith("VmHWM:"))
    with open(_RSS_FILE, "w") as fh:
        fh.write(kb)
atexit.register(_peak)
sys.argv = ["cds", "analyze", sys.argv[2], "--out", sys.argv[3]]
from app.cli import main
main()
"""


def run_analyze(inputs: Path, out: Path, timeout: float = 600) -> AnalyzeRun:
    """`cds analyze INPUTS --out OUT` in a child process: its wall time and its own peak RSS."""
    env = {**os.environ, **SLIDE_ONLY_ENV}
    rss_file = out.parent / f".{out.name}.peak_rss"
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _LAUNCH, str(rss_file), str(inputs), str(out)],
                         capture_output=True, text=True, env=env, timeout=timeout,
                         cwd=Path(__file__).resolve().parents[3])
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    peak_kb = int(rss_file.read_text())
    return AnalyzeRun(out=out, seconds=seconds, peak_rss_mb=peak_kb / 1024.0, stdout=res.stdout)


def referenced_instance(seg_path: Path) -> tuple[pydicom.Dataset, str]:
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    return seg, str(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
