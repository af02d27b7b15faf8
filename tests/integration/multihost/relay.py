"""A TCP relay from an address on the test bridge to a peer that binds loopback only.

WHY: the FHIR peer (conformance/peers/fhir/server.mjs) binds 127.0.0.1 and has no option to bind
another address, so processes in other network namespaces cannot reach it. This relay listens on
the bridge's gateway address in the root namespace and copies bytes both ways to the loopback
port, as a reverse proxy in front of an EHR would; HTTP is untouched (the Host header the plugin
sends passes through, so the server's absolute URLs name the relay).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class TcpRelay:
    """Listen on ``host`` (a free port) and forward each connection to 127.0.0.1:``target_port``."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host, self.target_port = host, target_port
        self._server = socket.create_server((host, 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="relay-accept", daemon=True)

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()  # the peer is down: the client sees a reset, as without a relay
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(5)
