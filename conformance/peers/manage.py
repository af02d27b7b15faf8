"""Start, wait for and stop the real peers (Orthanc, the FHIR R4 server, dcmtk storescp) on loopback.

WHY this module exists: the conformance suite, the end-to-end tests and bench/e2e.py all need the
same peers, each with its own data folder and free ports, ready before the first request and gone
after the last one (also when a test fails). Orthanc in particular must have fully exited before
another Orthanc opens the same index (SQLite "database is locked"), so stopping waits for the pid.

Plain Python (no pytest import) so that benchmarks and scripts can use it too. Traffic is only ever
sent to 127.0.0.1: Orthanc 1.10.1 listens on all interfaces and cannot be told otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
FHIR_PEER_DIR = Path(__file__).resolve().parent / "fhir"
ORTHANC_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = ORTHANC_PLUGIN_DIR / "libOrthancDicomWeb.so"
WSI_PLUGIN = ORTHANC_PLUGIN_DIR / "libOrthancWSI.so"
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


def _tail(path: Path, lines: int = 30) -> str:
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


class _ManagedProcess:
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
                f"log {self.log_path}:\n{_tail(self.log_path)}"
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
        return _tail(self.log_path, lines)


# --- FHIR R4 server ----------------------------------------------------------------------------


class FhirServer(_ManagedProcess):
    """The Medplum-based FHIR R4 peer (conformance/peers/fhir/server.mjs) on 127.0.0.1.

    ``test_hooks`` enables the /$test/ admin endpoints (fail-next, reset, requests) used by outage
    tests; they never exist unless asked for.
    """

    name = "fhir"

    def __init__(
        self,
        port: int = 0,
        workdir: Path | None = None,
        *,
        test_hooks: bool = True,
        ready_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(Path(workdir) if workdir else Path.cwd() / ".peers" / "fhir")
        self.requested_port = port
        self.port = 0
        self.test_hooks = test_hooks
        self.ready_timeout_s = ready_timeout_s

    @property
    def base_url(self) -> str:
        if not self.port:
            raise PeerFailed("FhirServer is not started")
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> FhirServer:
        reason = fhir_missing_reason()
        if reason:
            raise PeerUnavailable(reason)
        self.port = self.requested_port or free_port()
        argv = ["node", str(FHIR_PEER_DIR / "server.mjs"), "--port", str(self.port)]
        if self.test_hooks:
            argv.append("--test-hooks")
        self._spawn(argv, cwd=FHIR_PEER_DIR)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = httpx.get(f"{self.base_url}/metadata", timeout=2.0)
                if r.status_code == 200 and r.json().get("resourceType") == "CapabilityStatement":
                    logger.info("FHIR peer ready on port %d (pid %d)", self.port, self.proc.pid)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PeerFailed(f"FHIR peer not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def __enter__(self) -> FhirServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    # test hooks (only when started with test_hooks=True)
    def fail_next(self, count: int = 1, status: int = 503, methods: Sequence[str] | None = None) -> None:
        """Make the next ``count`` requests (optionally only of ``methods``) answer ``status``."""
        body: dict[str, Any] = {"count": count, "status": status}
        if methods:
            body["methods"] = list(methods)
        httpx.post(f"{self.base_url}/$test/fail-next", json=body, timeout=5).raise_for_status()

    def reset(self) -> None:
        """Empty the in-memory repository and the request log."""
        httpx.post(f"{self.base_url}/$test/reset", timeout=5).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """The server's request log: [{"method", "path", "status"}] in arrival order."""
        r = httpx.get(f"{self.base_url}/$test/requests", timeout=5)
        r.raise_for_status()
        return list(r.json())


# --- Orthanc -----------------------------------------------------------------------------------


class OrthancServer(_ManagedProcess):
    """An Orthanc process with its own storage/index folder and JSON configuration.

    ``modalities`` maps a symbolic name to (AET, host, port), e.g. {"cds": ("CDS", "127.0.0.1",
    11112)}. ``config_template`` is a JSON file (conformance/orthanc/orthanc.json) whose keys are
    overridden by the arguments; ``extra_config`` overrides everything last.
    """

    name = "orthanc"

    def __init__(
        self,
        workdir: Path,
        http_port: int = 0,
        dicom_port: int = 0,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Sequence[Any]] | None = None,
        lua_scripts: Sequence[Path] = (),
        plugins: Sequence[Path] = (),
        stable_age: int = 2,
        *,
        username: str | None = None,
        password: str | None = None,
        config_template: Path | None = None,
        extra_config: Mapping[str, Any] | None = None,
        ready_timeout_s: float = 40.0,
    ) -> None:
        super().__init__(workdir)
        self.requested_http_port = http_port
        self.requested_dicom_port = dicom_port
        self.http_port = 0
        self.dicom_port = 0
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.lua_scripts = [Path(p).resolve() for p in lua_scripts]
        self.plugins = [Path(p) for p in plugins]
        self.stable_age = stable_age
        self.username = username
        self.password = password
        self.config_template = config_template
        self.extra_config = dict(extra_config or {})
        self.ready_timeout_s = ready_timeout_s
        self.config_path = self.workdir / "orthanc.json"

    @property
    def base_url(self) -> str:
        if not self.http_port:
            raise PeerFailed("OrthancServer is not started")
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        """An httpx client on the REST API (credentials included)."""
        return httpx.Client(base_url=self.base_url, auth=self.auth, timeout=timeout_s)

    def build_config(self) -> dict[str, Any]:
        """The configuration Orthanc is started with (template, then arguments, then extras)."""
        cfg: dict[str, Any] = {}
        if self.config_template is not None:
            cfg.update(json.loads(Path(self.config_template).read_text()))
        storage = self.workdir / "storage"
        cfg.update(
            {
                "Name": f"cds-conformance-{self.aet}",
                "StorageDirectory": str(storage),
                "IndexDirectory": str(storage),
                "HttpPort": self.http_port,
                "DicomPort": self.dicom_port,
                "DicomAet": self.aet,
                "StableAge": self.stable_age,
                "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
                "LuaScripts": [str(p) for p in self.lua_scripts],
                "Plugins": [str(p) for p in self.plugins],
                "RemoteAccessAllowed": True,
                "SaveJobs": False,
            }
        )
        if self.auth:
            cfg["AuthenticationEnabled"] = True
            cfg["RegisteredUsers"] = {self.username: self.password}
        else:
            cfg["AuthenticationEnabled"] = False
        if DICOMWEB_PLUGIN in self.plugins:
            cfg.setdefault("DicomWeb", {"Enable": True, "Root": "/dicom-web/"})
        cfg.update(self.extra_config)
        return cfg

    def start(self) -> OrthancServer:
        reason = orthanc_missing_reason(self.plugins)
        if reason:
            raise PeerUnavailable(reason)
        self.http_port = self.requested_http_port or free_port()
        self.dicom_port = self.requested_dicom_port or free_port()
        self.config_path.write_text(json.dumps(self.build_config(), indent=2))
        self._spawn(["Orthanc", str(self.config_path)])
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = httpx.get(f"{self.base_url}/system", auth=self.auth, timeout=2.0)
                if r.status_code == 200:
                    wait_port_open(self.dicom_port, timeout_s=max(1.0, deadline - time.monotonic()))
                    logger.info(
                        "Orthanc ready: http %d dicom %d (pid %d)",
                        self.http_port,
                        self.dicom_port,
                        self.proc.pid,
                    )
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PeerFailed(f"Orthanc not ready after {self.ready_timeout_s:.0f} s:\n{self.log_tail()}")

    def __enter__(self) -> OrthancServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def clear(self) -> None:
        """Delete every patient (and so every study and instance) from this Orthanc."""
        with self.client() as c:
            for pid in c.get("/patients").json():
                c.delete(f"/patients/{pid}").raise_for_status()


# --- dcmtk storescp: a DICOM sink standing in for the plugin ---------------------------------


class StoreScp(_ManagedProcess):
    """dcmtk ``storescp`` writing every received instance under ``workdir/received``.

    Stands in for the plugin's listener when the routing recipe is tested on its own.
    """

    name = "storescp"

    def __init__(self, workdir: Path, port: int = 0, aet: str = "CDS") -> None:
        super().__init__(workdir)
        self.requested_port = port
        self.port = 0
        self.aet = aet
        self.received_dir = self.workdir / "received"

    def start(self) -> StoreScp:
        reason = dcmtk_missing_reason(("storescp",))
        if reason:
            raise PeerUnavailable(reason)
        self.received_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.requested_port or free_port()
        # +xa: accept every transfer syntax Orthanc may propose; +uf: a new file per reception,
        # so that an instance received twice shows up twice ("exactly once" is checkable).
        self._spawn(
            ["storescp", "-aet", self.aet, "+xa", "+uf", "-od", str(self.received_dir), str(self.port)]
        )
        try:
            wait_port_open(self.port, timeout_s=10)
        except PeerFailed:
            self._check_alive()
            self.stop()
            raise
        return self

    def __enter__(self) -> StoreScp:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def received(self) -> list[Path]:
        """Files received so far, one per reception (duplicates included)."""
        return sorted(p for p in self.received_dir.iterdir() if p.is_file())

    def received_sop_uids(self, study_uid: str | None = None) -> list[str]:
        """SOP Instance UIDs received (one entry per reception), optionally of one study only."""
        from pydicom import dcmread
        from pydicom.errors import InvalidDicomError

        uids = []
        for path in self.received():
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, EOFError):
                continue  # still being written
            if study_uid is None or str(ds.get("StudyInstanceUID", "")) == study_uid:
                uids.append(str(ds.SOPInstanceUID))
        return uids


def run_tool(argv: Sequence[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool (storescu, dciodvfy, ...) and return its completed process."""
    env = dict(os.environ)
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )


# dcmtk storescu option proposing exactly one (compressed) transfer syntax.
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def storescu(
    files: Sequence[Path],
    port: int,
    called_aet: str,
    calling_aet: str = "STORESCU",
    host: str = LOOPBACK,
) -> list[subprocess.CompletedProcess[str]]:
    """Send files with dcmtk ``storescu``; raises with its output on failure.

    ``-R`` proposes exactly the SOP classes of the files (storescu's default list lacks e.g.
    Comprehensive 3D SR and Segmentation). storescu proposes one transfer-syntax family per run,
    so files are grouped by transfer syntax: one association per group (one in the usual case).
    """
    from pydicom import dcmread

    reason = dcmtk_missing_reason(("storescu",))
    if reason:
        raise PeerUnavailable(reason)
    groups: dict[str, list[Path]] = {}
    for f in files:
        ts = str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if ts not in STORESCU_TS_OPTION:
            raise ValueError(f"{f}: transfer syntax {ts} has no storescu option (see STORESCU_TS_OPTION)")
        groups.setdefault(ts, []).append(Path(f))
    runs = []
    for ts, group in groups.items():
        argv = [
            "storescu", "-R", STORESCU_TS_OPTION[ts], "-aet", calling_aet, "-aec", called_aet,
            host, str(port), *map(str, group),
        ]
        done = run_tool(argv)
        if done.returncode != 0:
            raise RuntimeError(
                f"storescu to {called_aet}@{host}:{port} failed (exit {done.returncode}, "
                f"transfer syntax {ts}):\n{done.stdout}\n{done.stderr}"
            )
        runs.append(done)
    return runs


# --- the plugin itself: `cds serve` --------------------------------------------------------------


class CdsServe(_ManagedProcess):
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
                "CDS_DATA_DIR": str(self.data_dir),
                "CDS_OUTPUT_DIR": str(self.output_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> CdsServe:
        self.port = self.requested_port or free_port()
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
