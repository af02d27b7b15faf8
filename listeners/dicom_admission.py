"""Why an association was rejected, in words, and recording it without flooding the store.

pynetdicom decides the rejection (calling AE not allowed, called AE not ours, too many
associations) and leaves the A-ASSOCIATE-RJ it sent on ``assoc.acceptor.primitive``; the reason is
read from there, so "no allow-list configured" is never reported as "not in allow-list".
Rejections are recorded at most once per peer address and reason per interval; the rest are
counted and the count is carried by the next record.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

# (source, diagnostic) of an A-ASSOCIATE-RJ, PS3.8 9.3.4
_REASONS = {
    (1, 1): "rejected by the service user, no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "rejected by the ACSE provider, no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded (too many concurrent associations)",
}


def printable_ae(value: object) -> str:
    """An AE title as received, made safe to log: 16 printable characters at most."""
    text = str(value or "").strip()
    return "".join(c if c.isprintable() else "?" for c in text[:16])


def rejection_reason(assoc: Any, our_ae: str, allowed: list[str]) -> tuple[int, str]:
    """The (diagnostic, reason) of the A-ASSOCIATE-RJ pynetdicom just sent for ``assoc``."""
    rj = getattr(assoc.acceptor, "primitive", None)
    source, diagnostic = getattr(rj, "result_source", 0) or 0, getattr(rj, "diagnostic", 0) or 0
    text = _REASONS.get((source, diagnostic), f"source {source}, diagnostic {diagnostic}")
    rq = getattr(assoc.requestor, "primitive", None)
    calling = printable_ae(getattr(rq, "calling_ae_title", ""))
    called = printable_ae(getattr(rq, "called_ae_title", ""))
    if (source, diagnostic) == (1, 3):
        detail = (f"calling AE {calling!r} is not in the allow-list" if allowed
                  else f"calling AE {calling!r} refused (no allow-list is configured)")
    elif (source, diagnostic) == (1, 7):
        detail = f"called AE {called!r} is not ours ({our_ae!r})"
    else:
        detail = f"calling AE {calling!r}"
    return diagnostic, f"association rejected: {text}: {detail}"


class RejectionLog:
    """Records association-level refusals, at most one row per (peer, reason) per interval."""

    def __init__(self, store: Any, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def record(self, peer: str, calling_ae: str, reason: str, status: int = 0) -> bool:
        """Record now unless the same peer got the same reason within the interval."""
        key, now = (peer, reason), time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            skipped = self._suppressed.pop(key, 0)
            if len(self._last) > 10000:  # bounded memory under a flood of distinct peers
                self._last = {k: v for k, v in self._last.items() if now - v < self.interval_s}
        text = f"{reason} (peer {peer})" + (f"; {skipped} more since the last record" if skipped else "")
        log.warning("%s", text)
        try:
            self.store.record_rejection(calling_ae, "", status, text)
        except Exception:  # a full store must not break the listener
            log.exception("could not record an association rejection")
        return True
