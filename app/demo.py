"""`cds demo`: one synthetic patient end to end on embedded defaults.

Generates a 4-view mammography study, a small slide pyramid and (when the generator is built) an
ultrasound study with the patient's clinical record as an offline FHIR bundle, starts the full
service on loopback, sends the studies over C-STORE like a PACS would, waits for every job and
output, and returns what happened. Every image is a synthetic phantom; nothing here is patient
data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE
from rich.progress import Progress

from app.service import Service
from cds.contracts.domain import PatientRef
from cds.contracts.settings import Settings

log = logging.getLogger(__name__)

DEMO_PATIENT = PatientRef(patient_id="DEMO-0001", issuer="CDS-DEMO", name="Phantom^Demo",
                          birth_date="19650412", sex="F")


@dataclass
class DemoRun:
    studies_dir: Path
    files: list[Path]
    sent: int = 0
    failed_sends: list[str] = field(default_factory=list)
    seconds: float = 0.0
    http_url: str = ""  # where the HTTP API and pages were served while the demo ran


def generate_patient(out: Path, settings: Settings, seed: int = 7) -> tuple[list[Path], Path | None]:
    """Write the synthetic patient's studies and clinical record (FHIR Bundle) under ``out``."""
    from synthetic.phantoms.mammography import generate_exam
    from synthetic.phantoms.slides import generate_slide

    files: list[Path] = []
    exam = generate_exam(out / "mammography", seed, DEMO_PATIENT, force_label="invasive")
    files += [Path(p) for p in exam.paths]
    slide = generate_slide(out / "slide", seed + 1, DEMO_PATIENT, metastasis=True)
    files += [Path(p) for p in slide.level_paths]
    try:
        from synthetic.phantoms.ultrasound import generate_ultrasound
    except ImportError:
        log.info("ultrasound phantom not available in this build")
    else:
        from synthetic.phantoms.ultrasound import generate_lesion_sr

        us = generate_ultrasound(out / "ultrasound", seed + 2, DEMO_PATIENT, latent_risk=1.0)
        # the sonographer's region, as a TID 1500 SR in the same study: the model reads it
        files += [Path(us.path), generate_lesion_sr(us, out / "ultrasound")]
    fhir_dir = None
    try:
        from synthetic.phantoms.clinical import clinical_resources, write_bundle
    except ImportError:
        log.info("clinical FHIR bundle generator not available in this build")
    else:
        fhir_dir = out / "fhir"
        write_bundle(fhir_dir / "patient-bundle.json", clinical_resources(settings, DEMO_PATIENT))
    return files, fhir_dir


def send_files(files: list[Path], host: str, port: int, called_ae: str,
               calling_ae: str = "CDSDEMO") -> tuple[int, list[str]]:
    """C-STORE every file in one association (what a PACS auto-route does)."""
    datasets = [(f, dcmread(f, stop_before_pixels=True)) for f in files]
    ae = AE(ae_title=calling_ae)
    for sop_class, ts in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for _, d in datasets}:
        ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae}@{host}:{port} was not established")
    sent, failed = 0, []
    try:
        for f, _ in datasets:
            status = assoc.send_c_store(f)
            if status and status.Status == 0x0000:
                sent += 1
            else:
                failed.append(f"{f.name}: status {getattr(status, 'Status', 'none')}")
    finally:
        assoc.release()
    return sent, failed


def run_demo(settings: Settings, out: Path, *, timeout_s: float = 600.0, progress: bool = True) -> tuple[DemoRun, Service]:
    out.mkdir(parents=True, exist_ok=True)
    studies_dir = out / "studies"
    files, fhir_dir = generate_patient(studies_dir, settings)
    settings = settings.model_copy(update={
        "host": "127.0.0.1", "port": 0, "stable_age_s": min(settings.stable_age_s, 2.0),
        "stable_check_interval_s": 0.5, "fhir_offline_dir": settings.fhir_offline_dir or fhir_dir,
        "http_host": "127.0.0.1", "http_port": 0,  # never a fixed port: several demos and tests run at once
    })
    run = DemoRun(studies_dir=studies_dir, files=files)
    service = Service(settings, http=True)
    service.start()
    run.http_url = service.http.url if service.http is not None else ""
    if run.http_url and progress:
        print(f"HTTP API and pages on {run.http_url} (/api/v1/docs, /metrics) while the demo runs")
    t0 = time.monotonic()
    try:
        run.sent, run.failed_sends = send_files(files, "127.0.0.1", service.listener.port, settings.ae_title)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("waiting for stability, jobs and outputs", total=None)
            time.sleep(settings.stable_age_s)
            while service.store.pending_work() > 0:
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"demo work not finished after {timeout_s:.0f} s")
                bar.advance(task)
                time.sleep(0.5)
    finally:
        run.seconds = time.monotonic() - t0
        service.stop()
    return run, service
