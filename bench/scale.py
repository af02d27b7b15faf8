"""bench/scale: the two throughput goals of issue 17, each against a peer measured in the same run.

1. Ingest of small (~64 KB) MG instances over parallel associations (one storescu process and one
   study per association, so completeness at release runs too) into `cds listen` on SQLite,
   `cds listen` on PostgreSQL (conformance/peers/postgres.py) and Orthanc. Prints instances/s
   (median over repeats) and the ratios cds / Orthanc. Goals: >= 400 instances/s durable on two
   cores, >= 2x Orthanc.
2. Studies per hour with 1, 2 and 4 `cds work --lane study` processes on PostgreSQL, shipped
   mammography model: N 4-view exams are ingested first (not timed), the workers are started and
   ready, then all studies are promoted in one transaction; the time is from that enqueue until
   every study job is done. On a two-core machine, more processes than cores only share the cores.

    .venv/bin/python -m bench.scale                      # both parts, defaults finish in minutes
    .venv/bin/python -m bench.scale --part ingest --instances 2000 --associations 4 --repeats 3
    .venv/bin/python -m bench.scale --part ingest --associations 1 --targets sqlite
    .venv/bin/python -m bench.scale --part studies --exams 8 --processes 1,2,4

Not part of the test run. Needs dcmtk, Orthanc and PostgreSQL (scripts/install_peers.sh).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cds.contracts.domain import PatientRef  # noqa: E402
from conformance.peers.orthanc import OrthancServer  # noqa: E402
from conformance.peers.postgres import PostgresServer, postgres_missing_reason  # noqa: E402
from conformance.peers.process import free_port, stop_process, wait_port_open  # noqa: E402
from synthetic.phantoms.mammography import generate_exam, generate_fast_image  # noqa: E402

QUIET = {"CDS_LOG_LEVEL": "WARNING", "CDS_HOST": "127.0.0.1", "CDS_HTTP_PORT": "0"}


# -- shared -------------------------------------------------------------------------------------
def storescu_parallel(groups: list[list[Path]], port: int, aet: str) -> float:
    """Wall time of one storescu association per group, all at once (every C-STORE must succeed)."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, g)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for g in groups]
    outs = [p.communicate() for p in procs]
    dt = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0 or "Failed" in err or "Status: " in err:
            raise RuntimeError(f"storescu to {aet} failed ({p.returncode}): {err[-1500:]}")
    return dt


@contextlib.contextmanager
def cds_process(args: list[str], data: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """One `cds ...` process with its own log file; stopped (SIGTERM, then SIGKILL) on exit."""
    full = {**os.environ, "CDS_DATA_DIR": str(data), "PYTHONPATH": str(ROOT), **QUIET, **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=full, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def report(title: str, rows: dict[str, list[float]], unit: str, per: float) -> dict[str, float]:
    """Print median rates (``per`` items / median seconds) and return them by row name."""
    print(title)
    rates: dict[str, float] = {}
    for name, times in rows.items():
        if not times:
            continue
        rates[name] = per / statistics.median(times)
        print(f"  {name:34s} {rates[name]:8.1f} {unit}   median of {len(times)}: "
              f"{statistics.median(times):.2f} s  (runs {', '.join(f'{t:.2f}' for t in times)})")
    return rates


# -- part 1: ingest -----------------------------------------------------------------------------
def small_instances(work: Path, n: int, associations: int, rows: int, cols: int,
                    series: int) -> list[list[Path]]:
    """``n`` small MG instances split into one study (and patient) per association, ``series``
    series per study (a spool folder each): a copy of one synthetic image with fresh UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    groups: list[list[Path]] = [[] for _ in range(associations)]
    for a in range(associations):
        patient = PatientRef(patient_id=f"SCALE{a}", name="Scale^Bench", sex="F")
        base = pydicom.dcmread(generate_fast_image(work / "base" / f"a{a}.dcm", seed=a, rows=rows,
                                                   columns=cols, patient=patient))
        base.StudyInstanceUID = generate_uid()
        series_uids = [generate_uid() for _ in range(series)]
        for k, i in enumerate(range(a, n, associations)):
            base.SeriesInstanceUID = series_uids[k % series]
            base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            base.InstanceNumber = k + 1
            path = work / "in" / f"a{a}" / f"{i:05d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            base.save_as(path, enforce_file_format=True)
            groups[a].append(path)
    return groups


def ingest_cds(groups: list[list[Path]], work: Path, repeats: int, db: PostgresServer | None,
               listeners: int = 1) -> list[float]:
    """``listeners`` > 1: that many `cds listen` processes sharing the port (CDS_LISTEN_REUSE_PORT)."""
    times = []
    for r in range(repeats):
        data = work / f"cds-{'pg' if db else 'sqlite'}-{listeners}-{r}"
        port = free_port()
        env = {"CDS_PORT": str(port), "CDS_STABLE_AGE_S": "3600"}
        if listeners > 1:
            env["CDS_LISTEN_REUSE_PORT"] = "true"
        if db is not None:
            env["CDS_DATABASE_URL"] = db.create_database(f"ingest{r}_{listeners}_{os.getpid()}")
        data.mkdir(parents=True)
        with contextlib.ExitStack() as stack:
            for n in range(listeners):
                proc = stack.enter_context(cds_process(["listen"], data, env, work / f"listen-{r}-{n}.log"))
                wait_listening(proc, port, timeout_s=60)
            times.append(storescu_parallel(groups, port, "CDS"))
        shutil.rmtree(data, ignore_errors=True)
    return times


def wait_listening(proc: subprocess.Popen, port: int, timeout_s: float) -> None:
    """Until ``proc`` itself listens on ``port``: with SO_REUSEPORT the port answers as soon as the
    first listener is up, so an open port says nothing of the second (Linux /proc)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cds listen exited with {proc.returncode}")
        inodes = set()
        for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                    return
        time.sleep(0.2)
    raise RuntimeError(f"cds listen (pid {proc.pid}) not listening on {port} after {timeout_s:.0f} s")


def ingest_orthanc(groups: list[list[Path]], work: Path, repeats: int) -> list[float]:
    times = []
    for r in range(repeats):
        with OrthancServer(work / f"orthanc-{r}", aet="ORTHANC") as orthanc:
            times.append(storescu_parallel(groups, orthanc.dicom_port, "ORTHANC"))
        shutil.rmtree(work / f"orthanc-{r}", ignore_errors=True)
    return times


def part_ingest(args: argparse.Namespace, work: Path) -> None:
    groups = small_instances(work, args.instances, args.associations, args.rows, args.cols, args.series)
    size = sum(f.stat().st_size for g in groups for f in g) / args.instances
    print(f"ingest: {args.instances} instances of {size / 1024:.0f} KB, {args.associations} parallel "
          f"association(s), one study of {args.series} series each; {args.repeats} repeat(s); {os.cpu_count()} CPU(s)")
    rows: dict[str, list[float]] = {}
    if "sqlite" in args.targets:
        rows["cds listen, SQLite (durable)"] = ingest_cds(groups, work, args.repeats, None)
        if args.listeners > 1:
            rows[f"{args.listeners} x cds listen, SQLite"] = ingest_cds(groups, work, args.repeats, None,
                                                                         args.listeners)
    if "pg" in args.targets:
        if postgres_missing_reason():
            print(f"  PostgreSQL skipped: {postgres_missing_reason()}")
        else:
            with PostgresServer() as pg:  # its own folder: the postgres user cannot enter ours
                rows["cds listen, PostgreSQL (durable)"] = ingest_cds(groups, work, args.repeats, pg)
                if args.listeners > 1:
                    rows[f"{args.listeners} x cds listen, PostgreSQL"] = ingest_cds(
                        groups, work, args.repeats, pg, args.listeners)
    if "orthanc" in args.targets:
        if shutil.which("Orthanc") is None:
            print("  Orthanc not installed: skipped")
        else:
            rows["Orthanc"] = ingest_orthanc(groups, work, args.repeats)
    rates = report("instances/s (goal >= 400 durable; >= 2x Orthanc):", rows, "inst/s", args.instances)
    if "Orthanc" in rates:
        for name, rate in rates.items():
            if name != "Orthanc":
                print(f"  ratio {name} / Orthanc: {rate / rates['Orthanc']:.2f}  (goal >= 2)")


# -- part 2: studies per hour -------------------------------------------------------------------
def make_exams(work: Path, n: int, size: int) -> list[list[Path]]:
    exams = []
    for i in range(n):
        patient = PatientRef(patient_id=f"SCALEX{i}", name="Scale^Exam", sex="F")
        truth = generate_exam(work / "exams" / f"e{i}", seed=1000 + i, patient=patient, rows=size,
                              columns=size * 13 // 16 // 8 * 8)
        exams.append(sorted((work / "exams" / f"e{i}").glob("*.dcm")))
        del truth
    return exams


def _study_jobs(url: str) -> tuple[int, int, int]:
    """(study jobs in total, finished: done or failed for good, failed)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        total, finished, failed = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE state IN ('done','failed')), "
            "count(*) FILTER (WHERE state='failed') FROM jobs WHERE kind='study'").fetchone()
    return int(total), int(finished), int(failed)


def _wait_ready(logs: list[Path], timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if all(p.exists() and "running work" in p.read_text(errors="replace") for p in logs):
            return
        time.sleep(0.2)
    raise RuntimeError(f"workers not ready after {timeout_s:.0f} s; see {logs[0]}")


def studies_once(exams: list[list[Path]], work: Path, pg: PostgresServer, k: int) -> float:
    """Ingest the exams into a fresh database, start ``k`` workers, enqueue all, time until done."""
    from cds.store import Store

    url = pg.create_database(f"studies{k}_{os.urandom(6).hex()}")
    data = work / f"cds-studies-{k}-{os.urandom(4).hex()}"
    data.mkdir(parents=True)
    port = free_port()
    base = {"CDS_DATABASE_URL": url, "CDS_STABLE_AGE_S": "86400", "CDS_COMPLETE_ON_RELEASE": "false",
            "CDS_DISABLED_MODELS": "slides,ultrasound,recurrence"}
    with cds_process(["listen"], data, {**base, "CDS_PORT": str(port), "CDS_LOG_LEVEL": "INFO"},
                     work / f"studies-listen-{k}.log"):
        wait_port_open(port, timeout_s=60)
        for i in range(0, len(exams), 4):  # four associations at a time: the listener's limit is higher
            storescu_parallel(exams[i:i + 4], port, "CDS")
    logs = [work / f"work-{k}-{i}.log" for i in range(k)]
    with contextlib.ExitStack() as stack:
        for log in logs:
            stack.enter_context(cds_process(["work", "--lane", "study"], data,
                                            {**base, "CDS_LOG_LEVEL": "INFO"}, log))
        _wait_ready(logs)
        store = Store(url)
        t0 = time.perf_counter()
        uids = sorted({u for (u,) in _study_uids(url)})
        store.promote_studies(uids, 3)
        total, done, failed = _study_jobs(url)
        while done < total:
            time.sleep(0.1)
            total, done, failed = _study_jobs(url)
        dt = time.perf_counter() - t0
        store.close()
    if failed or total != len(exams):
        raise RuntimeError(f"{failed} of {total} study jobs failed ({len(exams)} studies); see {logs[0]}")
    shutil.rmtree(data, ignore_errors=True)
    return dt


def _study_uids(url: str) -> list[tuple[str]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        return [tuple(r) for r in con.execute("SELECT study_uid FROM studies").fetchall()]


def part_studies(args: argparse.Namespace, work: Path) -> None:
    if postgres_missing_reason():
        print(f"studies/hour skipped: {postgres_missing_reason()}")
        return
    exams = make_exams(work, args.exams, args.exam_rows)
    print(f"studies/hour: {args.exams} 4-view exams ({args.exam_rows} rows), `cds work --lane study` "
          f"on PostgreSQL; {os.cpu_count()} CPU(s); {args.repeats} repeat(s)")
    rows: dict[str, list[float]] = {}
    with PostgresServer() as pg:  # its own folder: the postgres user cannot enter ours
        for k in args.processes:
            rows[f"{k} worker process(es)"] = [studies_once(exams, work, pg, k) for _ in range(args.repeats)]
    rates = report("studies/hour:", {k: v for k, v in rows.items()}, "studies/h", args.exams * 3600)
    first = next(iter(rates.values()), None)
    for name, rate in rates.items():
        print(f"  speed-up {name} vs the first: {rate / first:.2f}" if first else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["ingest", "studies", "all"], default="all")
    ap.add_argument("--instances", type=int, default=2000)
    ap.add_argument("--associations", type=int, default=4)
    ap.add_argument("--listeners", type=int, default=2,
                    help="also measure this many `cds listen` processes sharing the port (SO_REUSEPORT); 1: not")
    ap.add_argument("--rows", type=int, default=176, help="rows of a small instance (x cols x 2 bytes)")
    ap.add_argument("--cols", type=int, default=184)
    ap.add_argument("--series", type=int, default=4, help="series per study (one spool folder each)")
    ap.add_argument("--targets", type=lambda s: s.split(","), default=["sqlite", "pg", "orthanc"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exams", type=int, default=16)
    ap.add_argument("--exam-rows", type=int, default=1024)
    ap.add_argument("--processes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir on /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cds-bench-scale-", dir=args.workdir or "/var/tmp"))
    try:
        if args.part in ("ingest", "all"):
            part_ingest(args, work)
        if args.part in ("studies", "all"):
            part_studies(args, work)
    finally:
        if args.keep:
            print(f"scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
