"""An Orthanc peer with its own storage/index folder and JSON configuration, on loopback."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from conformance.peers.process import (
    LOOPBACK,
    ManagedProcess,
    PeerFailed,
    PeerUnavailable,
    free_port,
    orthanc_missing_reason,
    wait_port_open,
)

logger = logging.getLogger(__name__)

ORTHANC_PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = ORTHANC_PLUGIN_DIR / "libOrthancDicomWeb.so"
WSI_PLUGIN = ORTHANC_PLUGIN_DIR / "libOrthancWSI.so"


class OrthancServer(ManagedProcess):
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
