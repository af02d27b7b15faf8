"""The plugin itself, ``cds serve``, as a separate process configured through ``CDS_*`` variables."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from conformance.peers.process import LOOPBACK, ManagedProcess, PeerFailed, free_port

logger = logging.getLogger(__name__)


class CdsServe(ManagedProcess):
    """``cds serve`` as a separate process configured only through ``CDS_*`` environment variables.

    WHY a process and not the Service object: the end-to-end tests check the deployment as a site
    runs it (CLI, environment, signals), and a crash must not take the test runner down with it.
    """

    name = "cds-serve"

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        *,
        port: int = 0,
        ae_title: str = "CDS",
        python: str | None = None,
        command: Sequence[str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        """``command`` replaces ``python -c 'from app.cli import main; main()' serve`` (e.g. to run
        the service with a different model registry in a diagnostic script)."""
        super().__init__(workdir)
        self.extra_env = dict(env)
        self.command = list(command) if command else None
        self.requested_port = port
        self.port = 0
        self.http_port = 0  # a free port chosen at start (never 8080: several instances run at once)
        self.ae_title = ae_title
        self.python = python or _venv_python()
        self.ready_timeout_s = ready_timeout_s
        self.data_dir = self.workdir / "data"
        self.output_dir = self.workdir / "output"

    def environment(self) -> dict[str, str]:
        """The process environment: inherited, minus any CDS_* of the caller, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        env.update(
            {
                "CDS_AE_TITLE": self.ae_title,
                "CDS_HOST": LOOPBACK,
                "CDS_PORT": str(self.port),
                "CDS_HTTP_HOST": LOOPBACK,
                "CDS_HTTP_PORT": str(self.http_port),
                "CDS_DATA_DIR": str(self.data_dir),
                "CDS_OUTPUT_DIR": str(self.output_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> CdsServe:
        self.port = self.requested_port or free_port()
        self.http_port = free_port()
        self._spawn(
            self.command or [self.python, "-c", "from app.cli import main; main()", "serve"],
            cwd=Path(__file__).resolve().parents[2],
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    logger.info("cds serve ready on port %d (pid %d)", self.port, self.proc.pid)
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise PeerFailed(f"cds serve not listening after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def _spawn(self, argv: list[str], cwd: Path | None = None) -> None:
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd or self.workdir),
            env=self.environment(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def __enter__(self) -> CdsServe:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def status_text(self, timeout_s: float = 60.0) -> str:
        """The output of ``cds status`` for this instance's data folder (wide, no wrapping)."""
        env = self.environment()
        env["COLUMNS"] = "400"
        done = subprocess.run(
            [self.python, "-c", "from app.cli import main; main()", "status", "--limit", "200"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
            check=False,
        )
        return done.stdout + done.stderr


def _venv_python() -> str:
    """The project's interpreter (.venv), else the one running this code."""
    import sys

    candidate = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable
