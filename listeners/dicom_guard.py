"""Network limits pynetdicom does not enforce by itself, applied to its transport.

pynetdicom reads a PDU as ``recv(6)`` (type and length) then ``recv(length)`` into one growing
buffer, on a socket without a timeout: a peer that sends one byte, trickles a PDU, or announces a
256 MiB PDU holds a thread (and that much memory) for as long as it likes. Here:

- :class:`GuardedSocket` (pynetdicom's ``AssociationSocket`` with another ``recv``) checks the PDU
  length in the header against a limit per PDU type *before* reading the body, gives every read a
  timeout (``dicom_read_timeout_s``) and every PDU a deadline from its first byte
  (``dicom_pdu_deadline_s``); a peer past either is sent an A-ABORT and disconnected.
- :func:`install_guard` puts it into a server and limits open connections per peer address
  (``dicom_max_associations_per_peer``): one more gets an A-ASSOCIATE-RJ (transient, local limit
  exceeded) and is closed at once, so one host cannot take every slot.

Refusals go to one callback ``(peer_address, reason)``; the reason never holds data received.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.transport import AssociationSocket, RequestHandler

log = logging.getLogger(__name__)

Refusal = Callable[[str, str], None]

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
SMALL_PDU_LIMIT = 1024  # release and abort PDUs are 10 bytes
# A-ABORT: service provider (2), reason 6 "invalid PDU parameter value" / 0 not specified
_ABORT_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])
_ABORT_TIMEOUT = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 0])
# A-ASSOCIATE-RJ: transient (2), service provider presentation (3), local limit exceeded (2)
_REJECT_LIMIT = bytes([0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2])


@dataclass(frozen=True)
class NetLimits:
    read_timeout_s: float
    pdu_deadline_s: float
    max_associate_rq: int
    max_pdata: int
    max_per_peer: int

    @classmethod
    def from_settings(cls, settings: Any) -> NetLimits:
        pdata = settings.dicom_max_pdata_bytes or settings.max_pdu or (16 << 20)
        return cls(settings.dicom_read_timeout_s, settings.dicom_pdu_deadline_s,
                   settings.dicom_max_associate_rq_bytes, pdata,
                   settings.dicom_max_associations_per_peer)

    def limit_for(self, pdu_type: int) -> int:
        if pdu_type == A_ASSOCIATE_RQ:
            return self.max_associate_rq
        if pdu_type == P_DATA_TF:
            return self.max_pdata
        return SMALL_PDU_LIMIT


class PeerCutOff(TimeoutError):
    """A peer broke a read limit; pynetdicom treats it as the transport closing."""


class GuardedSocket(AssociationSocket):
    """An ``AssociationSocket`` whose reads are bounded in time and size."""

    _limits: NetLimits
    _on_refusal: Refusal
    _peer: str
    _expect_header: bool
    _deny_body: bool
    _deadline: float

    def guard(self, limits: NetLimits, on_refusal: Refusal, peer: str) -> None:
        self._limits, self._on_refusal, self._peer = limits, on_refusal, peer
        self._expect_header, self._deny_body, self._deadline = True, False, 0.0

    def recv(self, nr_bytes: int) -> bytearray:
        if not self._expect_header or nr_bytes != 6:
            self._expect_header = True
            if self._deny_body:
                self._deny_body = False
                return bytearray()  # pynetdicom sees a short PDU: transport closed
            return self._read(nr_bytes, self._deadline)
        self._deadline = time.monotonic() + self._limits.pdu_deadline_s
        header = self._read(6, self._deadline)
        if len(header) == 6:
            pdu_type, _, length = struct.unpack(">BBL", header)
            limit = self._limits.limit_for(pdu_type)
            self._expect_header = False
            if length > limit:
                self._cut(f"PDU type 0x{pdu_type:02X} declares {length} bytes, over the limit of "
                          f"{limit}", _ABORT_PDU)
                self._deny_body = True
        return header

    def _read(self, nr_bytes: int, deadline: float) -> bytearray:
        sock = self.socket
        data = bytearray()
        while sock is not None and len(data) < nr_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                self._cut(f"a PDU took longer than {self._limits.pdu_deadline_s:g} s to arrive",
                          _ABORT_TIMEOUT)
                raise PeerCutOff("PDU deadline passed")
            sock.settimeout(min(self._limits.read_timeout_s, left))
            try:
                chunk = sock.recv(min(nr_bytes - len(data), 65536))
            except TimeoutError:
                if time.monotonic() < deadline:
                    self._cut(f"no data for {self._limits.read_timeout_s:g} s within a PDU",
                              _ABORT_TIMEOUT)
                    raise PeerCutOff("read timeout") from None
                continue  # the deadline check above reports it
            if not chunk:
                break
            data.extend(chunk)
        return data

    def _cut(self, reason: str, pdu: bytes) -> None:
        self.cut = True
        log.warning("DICOM peer %s cut off: %s", self._peer, reason)
        try:
            self._on_refusal(self._peer, reason)
        except Exception:  # recording must never keep the connection open
            log.exception("could not record a refusal")
        sock = self.socket
        if sock is None:
            return
        try:
            sock.settimeout(1.0)
            sock.sendall(pdu)
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler with a :class:`GuardedSocket` under the association."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        sock.__class__ = GuardedSocket
        guard: tuple[NetLimits, Refusal] = self.server.cds_guard  # type: ignore[attr-defined]
        sock.guard(guard[0], guard[1], str(self.client_address[0]))
        return assoc


def open_connections(server: Any, peer: str) -> int:
    """Associations (established or still negotiating) whose peer is ``peer``."""
    def live(a: Any) -> bool:
        sock = getattr(a.dul, "socket", None)
        return (not (a.is_rejected or a.is_aborted or a.is_released)
                and getattr(sock, "socket", None) is not None and not getattr(sock, "cut", False))

    return sum(1 for a in server.active_associations
               if str(getattr(a.requestor, "address", "")) == peer and live(a))


def install_guard(server: Any, limits: NetLimits, on_refusal: Refusal) -> None:
    """Bound the reads of every future connection of ``server`` and its connections per peer."""
    server.cds_guard = (limits, on_refusal)
    server.RequestHandlerClass = GuardedRequestHandler

    def verify_request(request: Any, client_address: Any) -> bool:
        peer = str(client_address[0])
        if open_connections(server, peer) < limits.max_per_peer:
            return True
        on_refusal(peer, f"association rejected: more than {limits.max_per_peer} concurrent "
                         "connections from this address (local limit exceeded)")
        try:
            request.settimeout(0.5)
            request.sendall(_REJECT_LIMIT)
        except OSError:
            pass
        return False

    server.verify_request = verify_request
