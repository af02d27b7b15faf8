"""Retention: remove what is no longer needed from ``incoming/``, ``rejected/``, ``work/`` and
the spool, never what still is.

- incoming: partial receives never acknowledged, older than ``retention_incoming_s`` (set well
  above the receive timeout, so a transfer still streaming is never touched);
- rejected: refused instances kept for inspection, after ``retention_rejected_days``;
- work: the folder of a finished (done or dead) job after ``retention_work_days`` and after the
  case-refresh window (a case re-run reads its studies' arrays), once none of the job's outputs
  is still waiting for delivery (payloads live in the work folder);
- spool: a study's instances after ``retention_spool_days`` (0 = never), only when the study is
  no longer receiving, every job of the study finished and every output of those jobs settled.

apscheduler runs :func:`clean` beside the stability check; every decision reads the store.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from cds.contracts.settings import Settings
from cds.store import Store

log = logging.getLogger(__name__)

FINISHED = ("done", "dead")
SETTLED = ("delivered", "dead")
_DAY = 86400.0


def _old_files(folder: Path, cutoff: float, *, deep: bool = False) -> list[Path]:
    """Files of ``folder`` (``deep``: and of its sub-folders) last written before ``cutoff``."""
    if not folder.is_dir():
        return []
    out = []
    for p in (folder.rglob("*") if deep else folder.iterdir()):
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                out.append(p)
        except OSError:
            continue
    return out


def _unlink_all(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        try:
            p.unlink()
            n += 1
        except OSError as exc:
            log.warning("retention: %s not removed: %s", p.name, exc.strerror)
    return n


def _finished_jobs(store: Store) -> dict[int, tuple[str, float, str]]:
    """job id -> (state, last update, study uid or '') of every finished job."""
    out = {}
    for state in FINISHED:
        for job in store.jobs(state, limit=1_000_000):
            out[job.id] = (job.state, job.updated_at or 0.0, getattr(job.payload, "study_uid", ""))
    return out


def _settled(store: Store, job_id: int) -> bool:
    return all(item.state in SETTLED for item in store.outbox_of_job(job_id))


def clean_work(settings: Settings, store: Store, now: float) -> int:
    keep_s = max(settings.retention_work_days, settings.case_refresh_window_days) * _DAY
    finished = _finished_jobs(store)
    n = 0
    for d in sorted(settings.work_dir.glob("job-*")):
        try:
            job_id = int(d.name.removeprefix("job-"))
        except ValueError:
            continue
        info = finished.get(job_id)
        if info is None or info[1] > now - keep_s or not _settled(store, job_id):
            continue
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n


def clean_spool(settings: Settings, store: Store, now: float) -> int:
    if settings.retention_spool_days <= 0:
        return 0
    cutoff = now - settings.retention_spool_days * _DAY
    by_study: dict[str, list[int]] = {}
    for job_id, (_, _, study_uid) in _finished_jobs(store).items():
        if study_uid:
            by_study.setdefault(study_uid, []).append(job_id)
    unfinished = {getattr(j.payload, "study_uid", "") for state in ("queued", "pending", "running", "waiting")
                  for j in store.jobs(state, limit=1_000_000)}
    n = 0
    for d in sorted(p for p in settings.spool_dir.iterdir() if p.is_dir()) if settings.spool_dir.is_dir() else []:
        study = store.study(d.name)
        if (study is None or study.state == "receiving" or (study.last_received or now) > cutoff
                or d.name in unfinished or not by_study.get(d.name)
                or not all(_settled(store, j) for j in by_study[d.name])):
            continue
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n


def clean(settings: Settings, store: Store, now: float | None = None) -> dict[str, int]:
    """One retention pass; returns how many files or folders each area lost."""
    now = time.time() if now is None else now
    removed = {
        "incoming": _unlink_all(_old_files(settings.incoming_dir, now - settings.retention_incoming_s, deep=True)),
        "rejected": _unlink_all(_old_files(settings.data_dir / "rejected",
                                           now - settings.retention_rejected_days * _DAY)),
        "work": clean_work(settings, store, now),
        "spool": clean_spool(settings, store, now),
    }
    if any(removed.values()):
        log.info("retention removed %s", ", ".join(f"{v} from {k}" for k, v in removed.items() if v))
    return removed
