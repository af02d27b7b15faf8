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


def _parse_record(line: bytes) -> dict[str, Any] | None:
    """``line`` as a chain record, or None when it is torn or not a record at all."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("seq"), int)
            or not isinstance(record.get("hash"), str)):
        return None
    return record


def _last_good(f: Any) -> tuple[dict[str, Any] | None, int, int]:
    """Scan the whole file: (last parseable record, its 1-based line, number of lines)."""
    f.seek(0)
    good, good_line, n = None, 0, 0
    for n, line in enumerate(f, start=1):
        record = _parse_record(line)
        if record is not None:
            good, good_line = record, n
    return good, good_line, n


def _write(f: Any, record: dict[str, Any]) -> dict[str, Any]:
    record["hash"] = record_hash(record)
    f.write(canonical(record) + b"\n")
    return record


def append(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append ``event`` as the next record of the chain at ``path``; returns the record.

    When the last line is torn (a crash or a full disk cut a write short), the chain is not left
    stuck: an explicit break record naming the torn line(s) is appended, linked to the last good
    record, and the event follows it. :func:`verify` still reports the break.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    f.write(b"\n")  # never glue a new record onto a cut-short line
            last = _last_line(f)
            prev = _parse_record(last) if last.strip() else None
            if last.strip() and prev is None:
                prev, good_line, lines = _last_good(f)
                prev = _write(f, {
                    "seq": (prev["seq"] + 1) if prev else 1, "prev": prev["hash"] if prev else GENESIS,
                    "recorded": time.time(),
                    "break": {"torn_line": good_line + 1, "torn_lines": lines - good_line,
                              "reason": "unparseable (torn) data after the last good record"}})
            record = _write(f, {"seq": (prev["seq"] + 1) if prev else 1,
                                "prev": prev["hash"] if prev else GENESIS,
                                "recorded": time.time(), "event": event})
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
    """Check every record's hash and its link to the one before.

    Torn lines followed by a break record that names them (see :func:`append`) do not stop the
    check: the rest of the chain is still verified, but the verdict is not ok and names the first
    torn line, so the loss is reported.
    """
    prev, seq, n, good = GENESIS, 0, 0, 0
    torn: list[int] = []  # unparseable lines not yet accounted for by a break record
    first_break: tuple[int, str] | None = None
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            record = _parse_record(line)
            if record is None:
                torn.append(n)
                continue
            claimed = record["hash"]
            if record_hash(record) != claimed:
                return Verdict(False, good, n, f"record seq {record.get('seq')} was altered (hash mismatch)")
            if torn:
                brk = record.get("break")
                if not (isinstance(brk, dict) and brk.get("torn_line") == torn[0]
                        and brk.get("torn_lines") == len(torn) and torn == list(range(torn[0], n))):
                    return Verdict(False, good, torn[0], "not a JSON record with a hash")
                if first_break is None:
                    first_break = (torn[0], f"chain break: torn data at line {torn[0]} "
                                   f"({len(torn)} line(s)), recorded by the break record at line {n}; "
                                   "records after it verify")
                torn = []
            elif "break" in record:
                return Verdict(False, good, n, f"record seq {record.get('seq')} claims a chain break "
                                               "but no torn data precedes it")
            if record.get("prev") != prev:
                return Verdict(False, good, n, f"record seq {record.get('seq')} does not follow the "
                                               "record before it (a record was removed or inserted)")
            if record.get("seq") != seq + 1:
                return Verdict(False, good, n, f"sequence jumps from {seq} to {record.get('seq')}")
            prev, seq, good = claimed, record["seq"], good + 1
    if torn:
        return Verdict(False, good, torn[0], "not a JSON record with a hash")
    if first_break is not None:
        return Verdict(False, good, first_break[0], first_break[1])
    return Verdict(True, n)
