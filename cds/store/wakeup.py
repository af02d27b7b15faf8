"""Wake idle workers and deliverers of this process the moment work is committed.

Polling alone bounds each stage's added latency by the poll interval (0.1 s by default, paid at
every hop: study ready -> job, job -> output, output -> delivery). A committed job or output
notifies the waiters of the same process at once; other processes (PostgreSQL deployments) still
find it at their next poll. A generation counter, not a flag, so a notification between a waiter's
empty claim and its wait is never missed.
"""

from __future__ import annotations

import threading


class Wakeup:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> bool:
        """Wait until something was committed after generation ``seen``, or ``timeout``; True if it was."""
        with self._cond:
            return self._cond.wait_for(lambda: self._generation != seen, timeout)
