"""The multi-host deployment: one services host (root namespace) and one namespace per process.

WHY a module of its own: the test reads as the faults and the checks; how the hosts, the peers and
the `cds` processes are brought up (and their logs gathered for a failure message) lives here.

The services host is the bridge's gateway address in the root namespace: PostgreSQL listens there
(plus loopback), Orthanc on every interface, the FHIR peer on the gateway address (its
``--host``). Each `cds listen` / `cds work` / `cds dispatch` runs in its own namespace with its
own address; all share one CDS_DATA_DIR on the local filesystem (the shared spool, the patient-key
secret and the audit trail), as hosts would share an NFS export.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.e2e_support import plugin_env
from conformance.peers.fhir_server import FhirServer
from conformance.peers.netns import Host, HostNetwork
from conformance.peers.orthanc import OrthancServer
from conformance.peers.postgres import PostgresServer
from conformance.peers.process import tail_log

REPO = Path(__file__).resolve().parents[3]
LISTEN_PORT = 11112  # inside each listener's own namespace: nothing else can hold it there
CDS_AET = "CDS"
LEASE_S = 5.0


@dataclass
class Proc:
    """One `cds` process on its host."""

    name: str
    host: Host
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 25) -> str:
        """The last lines of its log, without highdicom's per-attribute INFO lines (noise here)."""
        kept = [ln for ln in tail_log(self.log, 2000).splitlines() if " INFO highdicom." not in ln]
        return f"--- {self.name} on {self.host.address} (pid {self.popen.pid}, exit {self.popen.poll()}) ---\n" \
               + "\n".join(kept[-lines:])


@dataclass
class Deployment:
    net: HostNetwork
    pg: PostgresServer
    orthanc: OrthancServer
    fhir: FhirServer
    fhir_url: str  # on the gateway (as the hosts see it)
    db_url: str  # on the gateway (as the hosts see it)
    data_dir: Path
    work: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def env(self, host: Host, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        env.update(plugin_env("ORTHANC", self.net.gateway, self.orthanc.dicom_port, self.fhir_url,
                              CDS_DATABASE_URL=self.db_url, CDS_DATA_DIR=str(self.data_dir),
                              CDS_HOST=host.address, CDS_PORT=str(LISTEN_PORT), CDS_AE_TITLE=CDS_AET,
                              CDS_JOB_LEASE_S=str(LEASE_S), CDS_JOB_MAX_ATTEMPTS="6",
                              CDS_POLL_INTERVAL_S="0.2", CDS_CASE_WORKERS="1",
                              PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
        env.update(extra)
        return env

    def start(self, name: str, args: list[str], extra: dict[str, str]) -> Proc:
        host = self.net.add(name)
        log = self.work / f"{name}.log"
        popen = host.popen([sys.executable, "-m", "app.cli", *args], env=self.env(host, extra), log=log, cwd=REPO)
        proc = Proc(name, host, popen, log)
        self.procs[name] = proc
        return proc

    def logs(self, lines: int = 25) -> str:
        """The tail of every process's log and of PostgreSQL's, for a failure message."""
        parts = [p.tail(lines) for p in self.procs.values()]
        parts.append("--- postgresql ---\n" + self.pg.log_tail(15))
        return "\n".join(parts)

    def crashed_threads(self) -> list[str]:
        """Processes whose log shows a thread ended by an uncaught exception: a part of the process
        (the dispatcher loop, a worker) is gone while the process still looks alive."""
        return [p.name for p in self.procs.values()
                if p.log.exists() and "Exception in thread" in p.log.read_text(errors="replace")]

    def kill(self, proc: Proc) -> None:
        """SIGKILL, as a host losing power would (no handler runs, nothing is flushed)."""
        os.kill(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(10)


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str, diagnose: Callable[[], str]) -> Any:
    """Poll ``pred`` until truthy; the failure names what was awaited and shows ``diagnose()``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except AssertionError:  # the predicate found a failure that waiting cannot mend
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the store while PostgreSQL restarts: poll again
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})\n{diagnose()}")


def port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_started(dep: Deployment, proc: Proc, marker: str, timeout_s: float = 90) -> None:
    """Until the process logs ``marker`` (its parts running); fails at once if it exits."""
    def up() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode} during start-up\n{proc.tail(60)}")
        return marker in proc.log.read_text(errors="replace") if proc.log.exists() else False

    deadline = time.monotonic() + timeout_s
    while not up():
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} did not start within {timeout_s:.0f} s\n{dep.logs()}")
        time.sleep(0.2)


@contextlib.contextmanager
def deployment(work: Path) -> Iterator[Deployment]:
    """The peers on the services host and an empty network; the `cds` processes are the test's."""
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(HostNetwork())
        # Its own folder under /tmp (the postgres OS user cannot enter pytest's 0700 tmp_path).
        pg = stack.enter_context(PostgresServer(host=net.gateway, trust_cidrs=(f"10.77.{net.subnet}.0/24",)))
        db_url = pg.create_database("cds").replace("127.0.0.1", net.gateway)
        orthanc = stack.enter_context(OrthancServer(work / "orthanc", aet="ORTHANC", stable_age=1))
        fhir = stack.enter_context(FhirServer(workdir=work / "fhir", host=net.gateway, test_hooks=False))
        data_dir = work / "cds-data"
        data_dir.mkdir(mode=0o700)
        dep = Deployment(net, pg, orthanc, fhir, fhir.base_url, db_url, data_dir, work)
        try:
            yield dep
        finally:
            for p in dep.procs.values():
                if p.popen.poll() is None:
                    p.popen.send_signal(signal.SIGTERM)
            for p in dep.procs.values():
                try:
                    p.popen.wait(15)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
