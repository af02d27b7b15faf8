"""Process plumbing shared by the real peers (Orthanc, the FHIR R4 server, dcmtk, ``cds serve``).

WHY this package exists: the conformance suite, the end-to-end tests and bench/e2e.py all need the
same peers, each with its own data folder and free ports, ready before the first request and gone
after the last one (also when a test fails). Orthanc in particular must have fully exited before
another Orthanc opens the same index (SQLite "database is locked"), so stopping waits for the pid.

This module holds what every peer shares: loopback ports, the errors, the missing-tool checks and
the managed-process base class. Plain Python (no pytest import) so that benchmarks and scripts can
use it too. Traffic is only ever sent to 127.0.0.1: Orthanc 1.10.1 listens on all interfaces and
cannot be told otherwise.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
FHIR_PEER_DIR = Path(__file__).resolve().parent / "fhir"
INSTALL_HINT = "run scripts/install_peers.sh (as root) to install it"


class PeerUnavailable(RuntimeError):
    """A peer binary or package is missing; the message says which and how to install it."""


class PeerFailed(RuntimeError):
    """A peer was started but did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it; a small race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_port_open(port: int, timeout_s: float = 10.0, host: str = LOOPBACK) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise PeerFailed(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


# --- availability checks (used by the skip-with-reason helpers) ----------------------------------


def missing_tools(tools: Iterable[str]) -> list[str]:
    """Names of executables from ``tools`` that are not on PATH."""
    return [t for t in tools if shutil.which(t) is None]


def orthanc_missing_reason(plugins: Sequence[Path] = ()) -> str | None:
    """Why Orthanc (and the listed plugins) cannot be started here, or None when it can."""
    if shutil.which("Orthanc") is None:
        return f"Orthanc is not installed (Debian package orthanc); {INSTALL_HINT}"
    absent = [str(p) for p in plugins if not Path(p).is_file()]
    if absent:
        return f"Orthanc plugin(s) missing: {', '.join(absent)}; {INSTALL_HINT}"
    return None


def fhir_missing_reason() -> str | None:
    """Why the local FHIR peer cannot be started here, or None when it can."""
    if shutil.which("node") is None:
        return f"node is not installed; {INSTALL_HINT}"
    if not (FHIR_PEER_DIR / "node_modules" / "@medplum" / "fhir-router" / "package.json").is_file():
        return f"the FHIR peer's npm packages are missing in {FHIR_PEER_DIR}/node_modules; {INSTALL_HINT}"
    return None


def dcmtk_missing_reason(tools: Iterable[str] = ("storescu", "storescp", "echoscu")) -> str | None:
    """Why the dcmtk command-line tools cannot be used, or None when they can."""
    absent = missing_tools(tools)
    if absent:
        return f"dcmtk tool(s) missing: {', '.join(absent)} (Debian package dcmtk); {INSTALL_HINT}"
    return None


# --- process helpers ---------------------------------------------------------------------------


def tail_log(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or "(no log)" when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[Any] | None, timeout_s: float = 20.0) -> None:
    """SIGTERM the process, wait for it to exit, SIGKILL it if it does not within ``timeout_s``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("pid %s did not exit %.0f s after SIGTERM; killing it", proc.pid, timeout_s)
        proc.kill()
        proc.wait(timeout=10)


class ManagedProcess:
    """Shared start/stop plumbing: one child process, a log file, idempotent stop."""

    name = "peer"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[Any] | None = None
        self._log_file: Any = None

    def _spawn(self, argv: list[str], cwd: Path | None = None) -> None:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd or self.workdir),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerFailed(
                f"{self.name} exited with status {self.proc.returncode} during start-up; "
                f"log {self.log_path}:\n{tail_log(self.log_path)}"
            )

    def stop(self) -> None:
        """Stop the process and wait until its pid is gone (idempotent)."""
        stop_process(self.proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return tail_log(self.log_path, lines)
