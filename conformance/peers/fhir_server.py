"""The local FHIR R4 peer (Medplum-based, conformance/peers/fhir/server.mjs) as a managed process."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from conformance.peers.process import (
    FHIR_PEER_DIR,
    LOOPBACK,
    ManagedProcess,
    PeerFailed,
    PeerUnavailable,
    fhir_missing_reason,
    free_port,
)

logger = logging.getLogger(__name__)


class FhirServer(ManagedProcess):
    """The Medplum-based FHIR R4 peer (conformance/peers/fhir/server.mjs) on 127.0.0.1, or on
    ``host`` (a test network's bridge address, so that processes in other network namespaces
    reach it without a relay).

    ``test_hooks`` enables the /$test/ admin endpoints (fail-next, reset, requests) used by outage
    tests; they never exist unless asked for.
    """

    name = "fhir"

    def __init__(
        self,
        port: int = 0,
        workdir: Path | None = None,
        *,
        host: str = LOOPBACK,
        test_hooks: bool = True,
        ready_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(Path(workdir) if workdir else Path.cwd() / ".peers" / "fhir")
        self.host = host
        self.requested_port = port
        self.port = 0
        self.test_hooks = test_hooks
        self.ready_timeout_s = ready_timeout_s

    @property
    def base_url(self) -> str:
        if not self.port:
            raise PeerFailed("FhirServer is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> FhirServer:
        reason = fhir_missing_reason()
        if reason:
            raise PeerUnavailable(reason)
        self.port = self.requested_port or free_port()
        argv = ["node", str(FHIR_PEER_DIR / "server.mjs"), "--host", self.host, "--port", str(self.port)]
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
