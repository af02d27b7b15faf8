"""A tamper-evident, hash-chained JSON-lines log.

Each line is ``{"seq": n, "prev": H(n-1), "recorded": ..., "event": {...}, "hash": H(n)}`` where
``H(n)`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the record without its
``hash``, and ``prev`` of the first record is 64 zeros. Altering, inserting or removing a record
breaks the chain at that record; :func:`verify` names the first bad one. Appends take an
exclusive ``flock`` (threads and processes), are fsynced, and the file is 0600 in a 0700 folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _last_line(f: Any) -> bytes:
    end = f.seek(0, os.SEEK_END)
    pos, chunk, buf = end, 65536, b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        lines = buf.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or pos == 0:
            return lines[-1]
    return b""


def append(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append ``event`` as the next record of the chain at ``path``; returns the record."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            last = _last_line(f)
            prev = json.loads(last) if last.strip() else None
            record = {"seq": (prev["seq"] + 1) if prev else 1, "prev": prev["hash"] if prev else GENESIS,
                      "recorded": time.time(), "event": event}
            record["hash"] = record_hash(record)
            f.write(canonical(record) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return record


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    bad_line: int = 0  # 1-based line of the first bad record; 0 when ok
    reason: str = ""


def verify(path: Path) -> Verdict:
    """Check every record's hash and its link to the one before."""
    prev, seq, n = GENESIS, 0, 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
                claimed = record["hash"]
            except (ValueError, KeyError, TypeError):
                return Verdict(False, n - 1, n, "not a JSON record with a hash")
            if record_hash(record) != claimed:
                return Verdict(False, n - 1, n, f"record seq {record.get('seq')} was altered (hash mismatch)")
            if record.get("prev") != prev:
                return Verdict(False, n - 1, n, f"record seq {record.get('seq')} does not follow the "
                                                "record before it (a record was removed or inserted)")
            if record.get("seq") != seq + 1:
                return Verdict(False, n - 1, n, f"sequence jumps from {seq} to {record.get('seq')}")
            prev, seq = claimed, record["seq"]
    return Verdict(True, n)
