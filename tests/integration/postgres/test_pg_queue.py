"""The job queue on a real PostgreSQL, claimed by three separate worker processes.

Proves: 300 jobs each run exactly once across 3 processes (FOR UPDATE SKIP LOCKED claims); a
worker SIGKILLed mid-job has its job taken over after its lease and finished by another; a
PostgreSQL restart mid-run is survived (the workers reconnect, every job ends done); a
mammography study job is claimed before slide jobs that were queued earlier.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.contracts.handoffs import CaseJobPayload, StudyJobPayload
from cds.store import Store
from cds.store.jobs import insert_job
from tests.integration.postgres.pg_worker import RUNS
from tests.peers import need_postgres

pytestmark = pytest.mark.peers

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("pg_worker.py")
LEASE_S = 2.0  # pg_worker.py's job_lease_s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str, list[subprocess.Popen], Path]]:
    """A PostgreSQL server, a store on it, and 3 worker processes (each its own Store and pool)."""
    need_postgres()
    from conformance.peers.postgres import PostgresServer

    work = tmp_path_factory.mktemp("pgq")
    with PostgresServer() as server:
        url = server.create_database("queue")
        store = Store(url)
        store._con().execute(RUNS)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, str(WORKER), url, str(work)], cwd=ROOT, env=env,
                                  stdout=open(work / f"w{i}.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
                 for i in range(3)]
        deadline = time.monotonic() + 60
        while len(list(work.glob("ready.*"))) < 3:
            assert time.monotonic() < deadline, "workers did not start: " + (work / "w0.log").read_text()[-2000:]
            assert all(p.poll() is None for p in procs), (work / "w0.log").read_text()[-2000:]
            time.sleep(0.1)
        try:
            yield server, url, procs, work
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
            store.close()


def _wait_done(store: Store, prefix: str, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done = store._count("SELECT COUNT(*) FROM jobs WHERE key LIKE ? AND state='done'", (prefix + "%",))
        except Exception:  # noqa: BLE001 - the server is restarting
            done = -1
        if done == n:
            return
        time.sleep(0.1)
    states = store._query("SELECT state, COUNT(*) FROM jobs WHERE key LIKE ? GROUP BY state", (prefix + "%",))
    raise AssertionError(f"{prefix}: not all {n} jobs done after {timeout_s} s: {[tuple(r) for r in states]}")


def _runs(store: Store, prefix: str, phase: str) -> Counter[str]:
    return Counter(r[0] for r in store._query("SELECT key FROM runs WHERE key LIKE ? AND phase=?",
                                              (prefix + "%", phase)))


def test_three_processes_run_300_jobs_exactly_once(cluster) -> None:
    _, url, _, _ = cluster
    store = Store(url)
    t0 = time.monotonic()
    for i in range(300):
        store.enqueue("x", f"quick:{i}", CaseJobPayload(patient_key=f"p{i}"), max_attempts=10)
    _wait_done(store, "quick:", 300, 60)
    elapsed = time.monotonic() - t0
    starts, finishes = _runs(store, "quick:", "start"), _runs(store, "quick:", "finish")
    assert len(finishes) == 300 and set(finishes.values()) == {1}, "a job ran twice or not at all"
    assert set(starts.values()) == {1}
    pids = Counter(r[0] for r in store._query("SELECT pid FROM runs WHERE key LIKE 'quick:%' AND phase='finish'"))
    assert len(pids) == 3, f"not every process took jobs: {pids}"
    print(f"300 jobs over 3 processes in {elapsed:.2f} s; per process {sorted(pids.values())}")
    store.close()


def test_a_killed_worker_s_job_is_taken_over_after_its_lease(cluster) -> None:
    _, url, procs, _ = cluster
    store = Store(url)
    job_id = store.enqueue("x", "slow:1", CaseJobPayload(patient_key="s"), max_attempts=10)
    deadline = time.monotonic() + 20
    while not (rows := store._query("SELECT pid, at FROM runs WHERE key='slow:1' AND phase='start'")):
        assert time.monotonic() < deadline, "the slow job never started"
        time.sleep(0.05)
    victim = rows[0]["pid"]
    assert victim in [p.pid for p in procs]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    _wait_done(store, "slow:", 1, 20)
    starts = store._query("SELECT pid, attempt, at FROM runs WHERE key='slow:1' AND phase='start' ORDER BY id")
    finishes = store._query("SELECT pid FROM runs WHERE key='slow:1' AND phase='finish'")
    assert len(starts) == 2 and len(finishes) == 1 and finishes[0]["pid"] != victim
    assert starts[1]["attempt"] == 2 and starts[1]["at"] >= killed_at + LEASE_S / 3  # not before its lease ran out
    job = store.job(job_id)
    assert job and job.state == "done" and job.attempts == 2
    print(f"taken over {starts[1]['at'] - killed_at:.2f} s after SIGKILL (lease {LEASE_S} s)")
    store.close()


def test_mammography_before_slides_queued_earlier(cluster) -> None:
    _, url, _, _ = cluster
    store = Store(url)
    now = time.time()
    with store.tx() as con:  # one commit: every job becomes visible (and due) at once
        for i in range(12):
            insert_job(con, "study", f"prio:sm{i}", StudyJobPayload(study_uid=f"sm{i}", modality="SM",
                                                                     patient_key="p"), 3, now - 10)
        for i in range(4):
            insert_job(con, "study", f"prio:mg{i}", StudyJobPayload(study_uid=f"mg{i}", modality="MG",
                                                                     patient_key="p"), 3, now - 5)
    _wait_done(store, "prio:", 16, 30)
    order = [r[0] for r in store._query(
        "SELECT key FROM runs WHERE key LIKE 'prio:%' AND phase='start' ORDER BY claimed_at")]
    live_claimers = 2 * 2  # two surviving processes, two worker threads each
    assert {k for k in order[:live_claimers] if k.startswith("prio:mg")} == {f"prio:mg{i}" for i in range(4)}, order
    store.close()


def test_workers_recover_from_a_postgres_restart_mid_run(cluster) -> None:
    server, url, procs, work = cluster
    store = Store(url)
    for i in range(300):
        store.enqueue("x", f"restart:{i}", CaseJobPayload(patient_key=f"r{i}"), max_attempts=10)
    deadline = time.monotonic() + 30
    while store._count("SELECT COUNT(*) FROM jobs WHERE key LIKE 'restart:%' AND state='done'") < 60:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    t0 = time.monotonic()
    server.restart()  # type: ignore[attr-defined]
    restart_s = time.monotonic() - t0
    _wait_done(store, "restart:", 300, 60)
    finishes = _runs(store, "restart:", "finish")
    assert set(_runs(store, "restart:", "start")) == {f"restart:{i}" for i in range(300)}
    assert store._count("SELECT COUNT(*) FROM jobs WHERE key LIKE 'restart:%' AND state!='done'") == 0
    assert sorted(str(p.poll()) for p in procs) == [str(-signal.SIGKILL), "None", "None"]  # no other exit
    logs = "".join(p.read_text(errors="replace") for p in work.glob("w*.log"))
    assert "StoreUnavailable: PostgreSQL store" in logs, "the restart did not interrupt the workers"
    twice = sum(1 for n in finishes.values() if n > 1)
    print(f"restart took {restart_s:.2f} s; all 300 done {time.monotonic() - t0:.2f} s after it began; "
          f"{twice} jobs whose run completed twice (at-least-once across the outage)")
    store.close()
