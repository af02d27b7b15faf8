"""`cds analyze`: the whole pipeline on files or folders, with no network at all.

It runs the same intake, jobs and writers as the service, on a private store inside the output
folder, so what an engineer sees here is what the service would have produced. Outputs are
written to the output folder (never sent anywhere).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from rich.progress import Progress

from app.service import Service
from cds.contracts.settings import Settings
from cds.intake.spool import IntakeOutcome, refuse, spool_instance
from cds.scheduling.stability import check_stable

log = logging.getLogger(__name__)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def offline_settings(base: Settings, out_dir: Path, fhir_dir: Path | None) -> Settings:
    """The caller's settings with every network destination removed and folders under out_dir."""
    return base.model_copy(update={
        "data_dir": out_dir / ".cds-data", "output_dir": out_dir, "stable_age_s": 0.0,
        "pacs_host": "", "pacs_ae_title": "", "dicomweb_url": "", "fhir_base_url": "",
        "fhir_offline_dir": fhir_dir or base.fhir_offline_dir,
    })


def ingest_file(service: Service, path: Path) -> IntakeOutcome:
    """Copy one file into the incoming folder and accept it like a received instance."""
    settings, store = service.settings, service.store
    try:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        sop_class = str(meta.get("SOPClassUID", "") or meta.file_meta.get("MediaStorageSOPClassUID", ""))
        sop_uid = str(meta.get("SOPInstanceUID", "") or "")
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        status = refuse(settings, store, "ANALYZE", "", 0xC000, f"{path}: not a DICOM file: {exc}", None)
        return IntakeOutcome(status, f"not a DICOM file: {exc}")
    fd, tmp = tempfile.mkstemp(suffix=".dcm", dir=settings.incoming_dir)
    with open(fd, "wb") as dst, open(path, "rb") as src:
        shutil.copyfileobj(src, dst, 4 << 20)
    return spool_instance(settings, store, Path(tmp), "ANALYZE",
                          command_sop_class=sop_class, command_sop_instance=sop_uid)


def run_analyze(settings: Settings, paths: list[Path], out_dir: Path, *,
                fhir_dir: Path | None = None, progress: bool = True) -> Service:
    """Ingest, analyze and write outputs; returns the (stopped) service for reporting."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = expand_paths(paths)
    service = Service(offline_settings(settings, out_dir, fhir_dir), listen=False)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("reading DICOM", total=len(files))
        for f in files:
            outcome = ingest_file(service, f)
            if not outcome.ok:
                log.warning("%s refused: %s", f.name, outcome.reason)
            bar.advance(task)
    check_stable(service.settings, service.store)
    # Study jobs queue case jobs; outputs need the dispatcher: loop until all are settled.
    for _ in range(20):
        ran = service.workers.drain()
        sent = service.dispatcher.run_once()
        if not ran and not sent:
            break
    return service
