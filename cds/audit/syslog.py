"""RFC 5424 syslog toward an ATNA audit record repository (RFC 5426 UDP, RFC 6587 TCP framing).

PRI 85 = facility 10 (security/authorization) * 8 + severity 5 (notice), as IHE ATNA uses;
APP-NAME ``breast-cds``, MSGID ``IHE+FHIR``, the AuditEvent JSON as MSG.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from typing import Any

from cds.contracts.settings import Settings


def syslog_message(event: dict[str, Any], hostname: str | None = None) -> bytes:
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = (hostname or socket.gethostname() or "-")[:255]
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"<85>1 {ts} {host} breast-cds {os.getpid()} IHE+FHIR - {body}".encode()


def send_syslog(settings: Settings, event: dict[str, Any]) -> None:
    msg = syslog_message(event)
    addr = (settings.audit_syslog_host, settings.audit_syslog_port)
    if settings.audit_syslog_protocol == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(msg, addr)
        return
    with socket.create_connection(addr, timeout=3.0) as s:
        s.sendall(str(len(msg)).encode() + b" " + msg)
