"""API latency under load, and what that load costs ingest.

Drives `cds serve` (models on, HTTP API on loopback; then again with the API in its own `cds api`
process beside it) with an open-loop load of --rate requests/s
over a mix of API reads, while mammography studies keep arriving over C-STORE and are analysed.
Latency is measured from each request's scheduled send time (open loop: a slow answer delays no
later request, so queueing shows up in the figure instead of hiding). Then `bench/ingest`'s
transfer (20 full-field 16-bit mammograms in one association) is timed with and without that load.

The named peer in the same run is Orthanc: the same load on its REST API (`/studies`,
`/statistics`, `/system`) while it receives the same studies, and the same ingest with and
without load. Printed: medians over --repeats, p50/p95 of each load window, and the ratios.

    .venv/bin/python -m bench.api_load [--rate 100] [--seconds 20] [--repeats 3]

Not part of the test run. Needs the peers (scripts/install_peers.sh) and the shipped models.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.ingest import send
from cds.contracts.domain import PatientRef
from conformance.peers.orthanc import OrthancServer
from conformance.peers.process import free_port, stop_process, wait_port_open
from synthetic.phantoms.mammography import generate_exam, generate_fast_image

REPO = Path(__file__).resolve().parents[1]
CDS_PATHS = ("/api/v1/studies?limit=50", "/api/v1/jobs?limit=50", "/api/v1/results?limit=20",
             "/api/v1/outbox?limit=50", "/health")
ORTHANC_PATHS = ("/studies", "/statistics", "/system", "/changes?limit=50", "/patients")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _open_loop(base: str, paths: tuple[str, ...], headers: dict[str, str], rate: float,
                     seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of rate*seconds requests sent on schedule; plus the count of failures."""
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30.0, limits=limits) as client:
        start = time.perf_counter()

        async def one(i: int) -> None:
            nonlocal failures
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            try:
                r = await client.get(paths[i % len(paths)])
                if r.status_code >= 400:
                    failures += 1
            except httpx.HTTPError:
                failures += 1
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(i) for i in range(int(rate * seconds))))
    return latencies, failures


def load(base: str, paths: tuple[str, ...], headers: dict[str, str], rate: float,
         seconds: float) -> tuple[list[float], int]:
    return asyncio.run(_open_loop(base, paths, headers, rate, seconds))


class StudyFeeder(threading.Thread):
    """Sends a fresh 4-view mammography study every ``interval_s`` until stopped."""

    def __init__(self, work: Path, port: int, aet: str, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.work, self.port, self.aet, self.interval_s = work, port, aet, interval_s
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        i = 0
        while not self.stop_event.is_set():
            out = self.work / f"feed-{self.aet}-{i}"
            patient = PatientRef(patient_id=f"BENCH{i:05d}", name="Bench^Load")
            exam = generate_exam(out, seed=1000 + i, patient=patient)
            send([img.path for img in exam.images], self.port, self.aet)
            shutil.rmtree(out, ignore_errors=True)
            self.sent += 1
            i += 1
            self.stop_event.wait(self.interval_s)


def timed_ingest(work: Path, port: int, aet: str, n: int, tag: str) -> float:
    files_dir = work / f"ingest-{tag}"
    files = [generate_fast_image(files_dir / f"mg{i:02d}.dcm", seed=zlib.crc32(tag.encode()) % 100_000 + i)
             for i in range(n)]
    try:
        return send(files, port, aet)
    finally:
        shutil.rmtree(files_dir, ignore_errors=True)


def measure(name: str, work: Path, port: int, aet: str, base: str, paths: tuple[str, ...],
            headers: dict[str, str], args: argparse.Namespace) -> dict[str, float]:
    """Ingest alone, load with studies arriving, and ingest under load, for one system."""
    quiet = [timed_ingest(work, port, aet, args.n, f"{name}-quiet-{r}") for r in range(args.repeats)]
    feeder = StudyFeeder(work, port, aet)
    feeder.start()
    p50s, p95s, p95_ingest, loaded, fails = [], [], [], [], 0
    try:
        for r in range(args.repeats):
            lat, failed = load(base, paths, headers, args.rate, args.seconds)
            p50s.append(percentile(lat, 0.50))
            p95s.append(percentile(lat, 0.95))
            fails += failed
            holder: dict[str, float] = {}
            tag = f"{name}-loaded-{r}"
            t = threading.Thread(target=lambda h=holder, tg=tag: h.update(
                t=timed_ingest(work, port, aet, args.n, tg)))
            t.start()
            lat2, failed2 = load(base, paths, headers, args.rate, args.seconds)
            t.join()
            fails += failed2
            loaded.append(holder["t"])
            p95_ingest.append(percentile(lat2, 0.95))
    finally:
        feeder.stop_event.set()
        feeder.join(120)
    result = {"p50": statistics.median(p50s), "p95": statistics.median(p95s),
              "p95_ingest": statistics.median(p95_ingest),
              "ingest_quiet": statistics.median(quiet), "ingest_loaded": statistics.median(loaded),
              "failures": fails, "studies_fed": feeder.sent}
    print(f"{name:22s} API p50 {result['p50'] * 1000:7.1f} ms  p95 {result['p95'] * 1000:7.1f} ms "
          f"(p95 {result['p95_ingest'] * 1000:.1f} ms during the timed ingest; {fails} failed requests)  ingest quiet {result['ingest_quiet']:.2f} s, under load "
          f"{result['ingest_loaded']:.2f} s  ({feeder.sent} studies fed)")
    return result


def with_cds(work: Path, fn: Callable[[int, str, dict[str, str]], dict[str, float]], *,
             split: bool = False) -> dict[str, float]:
    """Run ``fn`` against `cds serve` (everything in one process), or with ``split`` against
    `cds serve` without HTTP plus a separate `cds api` process on the same store."""
    work.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tokens = work / "api-tokens"
    tokens.write_text(f"{hashlib.sha256(token.encode()).hexdigest()} admin bench\n")
    tokens.chmod(0o600)
    port, http_port = free_port(), free_port()
    env = {**os.environ, "CDS_DATA_DIR": str(work / "cds-data"), "CDS_PORT": str(port),
           "CDS_HOST": "127.0.0.1", "CDS_HTTP_PORT": str(http_port), "CDS_STABLE_AGE_S": "2",
           "CDS_LOG_LEVEL": "WARNING", "CDS_HTTP_API_TOKENS_FILE": str(tokens),
           "CDS_OUTPUT_DIR": str(work / "cds-output")}
    procs = [subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], cwd=REPO,
                              env={**env, "CDS_HTTP_ENABLED": "false"} if split else env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_port_open(port, timeout_s=120)
        if split:
            procs.append(subprocess.Popen([sys.executable, "-m", "app.cli", "api"], env=env, cwd=REPO,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port_open(http_port, timeout_s=120)
        return fn(port, f"http://127.0.0.1:{http_port}", {"Authorization": f"Bearer {token}"})
    finally:
        for proc in procs:
            stop_process(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load window")
    ap.add_argument("--n", type=int, default=20, help="instances in each timed ingest")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if shutil.which("Orthanc") is None or shutil.which("storescu") is None:
        sys.exit("bench/api_load needs Orthanc and dcmtk (scripts/install_peers.sh): no peer, no figure")
    work = Path(tempfile.mkdtemp(prefix="cds-bench-api-", dir=args.workdir or "/var/tmp"))
    print(f"open-loop load {args.rate:.0f} req/s for {args.seconds:.0f} s per window, {args.repeats} "
          f"repeats (medians); ingest {args.n} x 27 MB MG in one association; {os.cpu_count()} cores")
    try:
        cds = with_cds(work / "one", lambda port, base, headers: measure(
            "cds serve", work, port, "CDS", base, CDS_PATHS, headers, args))
        split = with_cds(work / "split", lambda port, base, headers: measure(
            "cds api", work, port, "CDS", base, CDS_PATHS, headers, args), split=True)
        with OrthancServer(work / "orthanc", aet="ORTHANC") as orthanc:
            peer = measure("Orthanc", work, orthanc.dicom_port, "ORTHANC",
                           f"http://127.0.0.1:{orthanc.http_port}", ORTHANC_PATHS, {}, args)
        print(f"ratio API p95 / Orthanc REST p95: cds serve (one process) {cds['p95'] / peer['p95']:.2f}, "
              f"cds api (own process) {split['p95'] / peer['p95']:.2f}")
        print(f"ingest under load / quiet: cds serve {cds['ingest_loaded'] / cds['ingest_quiet']:.2f}, "
              f"cds api beside cds serve {split['ingest_loaded'] / split['ingest_quiet']:.2f}, "
              f"Orthanc {peer['ingest_loaded'] / peer['ingest_quiet']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
