"""End to end through the lead's service (offline, as `cds analyze` runs it) with the fixture
models: files in, SEG/SR/Encapsulated PDF + FHIR JSON + the PDF out in the output folder."""

from __future__ import annotations

import json
import shutil
import subprocess

from app.analyze import check_stable, ingest_file, offline_settings
from app.service import Service
from cds.contracts.settings import Settings
from cds.pipeline.registry import ModelRegistry
from synthetic.fixture_model import (
    FixtureMammoModel,
    FixtureRecurrenceModel,
    FixtureSlideModel,
    write_mammogram,
    write_slide,
)
from synthetic.phantoms.clinical import synthetic_patient, write_ndjson


def test_offline_service_writes_every_output_once(tmp_path):
    patient = synthetic_patient()
    files = [write_mammogram(tmp_path / "in" / "mg.dcm", patient, "2.25.77", seed=1),
             write_slide(tmp_path / "in" / "sm.dcm", patient, "2.25.78", seed=2)]
    write_ndjson(tmp_path / "fhir")
    registry = ModelRegistry(study_models=[FixtureMammoModel(), FixtureSlideModel()],
                             case_models=[FixtureRecurrenceModel()])
    settings = offline_settings(Settings(encapsulated_pdf=True), tmp_path / "out", tmp_path / "fhir")
    service = Service(settings, registry=registry, listen=False)
    for f in files:
        assert ingest_file(service, f).ok
    check_stable(service.settings, service.store)
    for _ in range(10):
        ran, sent = service.workers.drain(), service.dispatcher.run_once()
        if not ran and not sent:
            break
    states = {o.state for o in service.store.outbox_items(limit=100)}
    assert states == {"delivered"}
    out = tmp_path / "out"
    dicom = sorted((out / "dicom").glob("*.dcm"))
    fhir = sorted((out / "fhir").glob("*.json"))
    pdfs = sorted((out / "pdf").glob("*.pdf"))
    assert len(dicom) == 6  # 2 SEG, 2 SR, recurrence SR, Encapsulated PDF
    assert sorted(json.loads(f.read_text())["resourceType"] for f in fhir) == [
        "DiagnosticReport", "Provenance", "RiskAssessment", "RiskAssessment", "RiskAssessment"]
    assert len(pdfs) == 1 and pdfs[0].read_bytes().startswith(b"%PDF")
    rec = next(json.loads(f.read_text()) for f in fhir if "fhir-recurrence" in f.name)
    assert rec["subject"]["reference"] == "Patient/syn-patient-1"  # context came from the NDJSON
    if shutil.which("dciodvfy"):
        for f in dicom:
            res = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
            assert not [x for x in (res.stdout + res.stderr).splitlines() if x.startswith("Error")], f.name
    # a second pass finds nothing to do and writes nothing new
    assert service.workers.drain() == 0 and service.dispatcher.run_once() == 0
    assert len(list((out / "dicom").glob("*.dcm"))) == 6
