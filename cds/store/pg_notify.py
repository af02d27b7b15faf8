"""Cross-process wake-ups on PostgreSQL: LISTEN/NOTIFY beside the polls.

In one process, :mod:`cds.store.wakeup` wakes idle workers the moment a job or output commits.
Split into `cds listen`, `cds work` and `cds dispatch` processes, each would otherwise find new
work only at its next poll (0.1 s per hop by default). A writer announces in its transaction
(``pg_notify``, delivered by the server at commit, dropped on rollback); every process that works
or delivers keeps one connection listening and relays each notification to its local wake-ups.
A lost listening connection is reopened with backoff; meanwhile the polls still find everything,
so a notification is an optimisation, never the only way work is found.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from cds.store.wakeup import Wakeup

log = logging.getLogger(__name__)

JOBS_CHANNEL = "cds_jobs"
OUTPUTS_CHANNEL = "cds_outputs"


def announce(con: Any, channel: str) -> None:
    """Queue a notification on ``channel`` in the caller's open PostgreSQL transaction."""
    con.execute("SELECT pg_notify(?, '')", (channel,))


class NotifyRelay:
    """A thread listening on both channels and waking this process's waiters."""

    def __init__(self, url: str, wakeups: dict[str, Wakeup]) -> None:
        self.url = url
        self.wakeups = wakeups
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> NotifyRelay:
        self._thread = threading.Thread(target=self._run, name="cds-pg-notify", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                     application_name="cds-notify") as con:
                    for channel in self.wakeups:
                        con.execute(f"LISTEN {channel}")
                    delay = 0.5
                    for wakeup in self.wakeups.values():  # anything committed while not listening
                        wakeup.notify()
                    while not self._stop.is_set():
                        for note in con.notifies(timeout=1.0):
                            wakeup = self.wakeups.get(note.channel)
                            if wakeup is not None:
                                wakeup.notify()
            except psycopg.Error as exc:
                log.warning("store notifications unavailable (%s); polling only, retrying in %.1f s",
                            type(exc).__name__, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
