"""uvicorn in a thread of the service: started after the store, stopped before it closes.

WHY a thread and not a process: the HTTP handlers read the same store object and registry as
the workers, and the service decides the start and stop order in one place (app/service.py).
Port 0 binds any free port; :attr:`HttpServer.port` is the one actually bound.
"""

from __future__ import annotations

import logging
import threading
import time

import uvicorn

from listeners.http.app import create_app
from listeners.http.context import HttpContext

log = logging.getLogger(__name__)


class HttpServer:
    """One uvicorn server on ``settings.http_host:http_port`` serving :func:`create_app`."""

    def __init__(self, ctx: HttpContext) -> None:
        s = ctx.settings
        config = uvicorn.Config(create_app(ctx), host=s.http_host, port=s.http_port, log_level="warning",
                                access_log=False, lifespan="off", server_header=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self._server.config.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        """Serve in a daemon thread; returns once the socket is bound (RuntimeError if it cannot)."""
        self._thread = threading.Thread(target=self._server.run, name="cds-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"HTTP server could not bind {self._server.config.host}:{self._server.config.port} "
                    "(port in use? set CDS_HTTP_PORT, 0 = any free port, or CDS_HTTP_ENABLED=false)")
            time.sleep(0.02)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        log.info("HTTP API, pages and metrics on %s", self.url)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
