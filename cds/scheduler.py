"""Periodic checks: which studies went quiet long enough to be stable.

A study is stable when no instance arrived for ``stable_age_s``; promoting it enqueues one job
per study and modality in the same transaction. apscheduler runs the check; the state it acts on
is all in the store, so a restart loses nothing.
"""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler

from cds.settings import Settings
from cds.store import Store

log = logging.getLogger(__name__)


def check_stable(settings: Settings, store: Store) -> list[str]:
    promoted = store.promote_stable_studies(settings.stable_age_s, settings.job_max_attempts)
    for uid in promoted:
        log.info("study %s stable: jobs queued", uid)
    return promoted


class StabilityScheduler:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._scheduler = BackgroundScheduler(daemon=True)

    def start(self) -> None:
        self._scheduler.add_job(
            check_stable,
            "interval",
            args=(self.settings, self.store),
            seconds=self.settings.stable_check_interval_s,
            id="stable-studies",
            max_instances=1,
            coalesce=True,
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
