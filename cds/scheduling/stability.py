"""Periodic checks: which studies went quiet long enough to be stable; which cases to re-check.

A study is stable when no instance arrived for ``stable_age_s``; promoting it enqueues one job
per study and modality in the same transaction. apscheduler runs the check; the state it acts on
is all in the store, so a restart loses nothing.
"""

from __future__ import annotations

import logging
import time

from apscheduler.schedulers.background import BackgroundScheduler

from cds.contracts.handoffs import CaseJobPayload
from cds.contracts.settings import Settings
from cds.scheduling.retention import clean
from cds.store import Store

log = logging.getLogger(__name__)


def check_stable(settings: Settings, store: Store) -> list[str]:
    promoted = store.promote_stable_studies(settings.stable_age_s, settings.job_max_attempts)
    for uid in promoted:
        log.info("study %s stable: jobs queued", uid)
    return promoted


def refresh_cases(settings: Settings, store: Store) -> int:
    """Queue a case re-check for recently active patients (one job per patient per interval).

    Clinical inputs change in the EHR without any DICOM arriving (a new Ki-67, a new report):
    the case job compares its input fingerprint and re-runs the models only when it changed.
    """
    now = time.time()
    bucket = int(now // max(settings.case_refresh_interval_s, 1.0))
    patients = store.active_patients(now - settings.case_refresh_window_days * 86400)
    for key in patients:
        store.enqueue("case", f"case:{key}:refresh:{bucket}", CaseJobPayload(patient_key=key),
                      settings.job_max_attempts)
    return len(patients)


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
        if self.settings.case_refresh_interval_s > 0 and (
                self.settings.fhir_base_url or self.settings.fhir_offline_dir):
            self._scheduler.add_job(
                refresh_cases, "interval", args=(self.settings, self.store),
                seconds=self.settings.case_refresh_interval_s, id="refresh-cases",
                max_instances=1, coalesce=True,
            )
        if self.settings.retention_interval_s > 0:  # incoming/, rejected/, work/, spool (retention.py)
            self._scheduler.add_job(clean, "interval", args=(self.settings, self.store),
                                    seconds=self.settings.retention_interval_s, id="retention",
                                    max_instances=1, coalesce=True)
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=True)
