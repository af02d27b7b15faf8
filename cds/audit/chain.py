"""A tamper-evident, hash-chained JSON-lines log.

Each line is ``{"seq": n, "prev": H(n-1), "recorded": ..., "event": {...}, "hash": H(n)}`` where
``H(n)`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the record without its
``hash``, and ``prev`` of the first record is 64 zeros. Altering, inserting or removing a record
breaks the chain at that record; :func:`verify` names the first bad one. Appends take an
exclusive ``flock`` (threads and processes), are fsynced, and the file is 0600 in a 0700 folder;
:func:`locked` holds that lock over several appends and a look at the tail (the audit drainer).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
            return bytes(lines[-1])
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


class ChainWriter:
    """The chain file opened and exclusively locked (:func:`locked`): append records, look at its tail.

    WHY a handle: the audit drainer (:mod:`cds.audit.drain`) must re-read what is pending, check
    the tail for records already appended and append the rest under one lock, so that two
    drainers never append the same record twice.
    """

    def __init__(self, f: Any) -> None:
        self._f = f
        self._prev: dict[str, Any] | None = None
        self._read = False

    def _last(self) -> dict[str, Any] | None:
        """The last record, repairing a torn last line first (see :func:`append`)."""
        if self._read:
            return self._prev
        f = self._f
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
        self._prev, self._read = prev, True
        return prev

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append ``event`` as the next record (written through, fsynced when the lock is released)."""
        prev = self._last()
        record = _write(self._f, {"seq": (prev["seq"] + 1) if prev else 1,
                                  "prev": prev["hash"] if prev else GENESIS,
                                  "recorded": time.time(), "event": event})
        self._prev = record
        return record

    def sync(self) -> None:
        """Flush and fsync what was appended: before the drainer deletes the staged rows."""
        self._f.flush()
        os.fsync(self._f.fileno())

    def event_ids_since(self, since: float) -> set[str]:
        """Event ids of the records at the end of the file recorded at or after ``since`` (read
        backwards, stopping at the first older record): what a drain that crashed appended."""
        ids: set[str] = set()
        f = self._f
        pos, buf = f.seek(0, os.SEEK_END), b""
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            lines = buf.split(b"\n")
            buf = lines.pop(0) if pos > 0 else b""  # the first piece may be part of a line
            for line in reversed(lines):
                record = _parse_record(line) if line.strip() else None
                if record is None:
                    continue
                if float(record.get("recorded") or 0.0) < since:
                    return ids
                event = record.get("event")
                if isinstance(event, dict) and isinstance(event.get("id"), str):
                    ids.add(event["id"])
        return ids


@contextmanager
def locked(path: Path) -> Iterator[ChainWriter]:
    """The chain at ``path`` under an exclusive ``flock`` (threads and processes); what was
    appended is flushed and fsynced before the lock is released."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            writer = ChainWriter(f)
            yield writer
            if writer._read:
                writer.sync()
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append(path: Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append ``event`` as the next record of the chain at ``path``; returns the record.

    When the last line is torn (a crash or a full disk cut a write short), the chain is not left
    stuck: an explicit break record naming the torn line(s) is appended, linked to the last good
    record, and the event follows it. :func:`verify` still reports the break.
    """
    with locked(path) as chain:
        return chain.append(event)


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
