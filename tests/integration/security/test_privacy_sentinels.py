"""No patient data outside the store: the whole flow with sentinel PHI, every log line (DEBUG,
third-party loggers included), every non-DICOM file in the data folder and every error string.

The service runs on loopback with the shipped models; a synthetic mammography exam whose patient
carries sentinel name, ID, birth date and accession is sent over C-STORE, the clinical record
comes from an offline FHIR bundle carrying the same identifiers, and one malformed instance
whose broken element holds the sentinel bytes is refused. The SQLite store may hold them (it is
the store); DICOM files (spool, outputs) carry them by design.
"""

from __future__ import annotations

import io
import logging
import stat
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cds.contracts.domain import PatientRef
from cds.contracts.settings import Settings
from cds.security.privacy import install_log_privacy

SENTINELS = ("ZQXSENTINELNAME", "ZQXSENTINELID", "ZQXSENTINELACC", "ZQXSENTINELDOB", "18990317",
             "1899-03-17")
PATIENT = PatientRef(patient_id="ZQXSENTINELID", name="ZQXSENTINELNAME^Given", birth_date="18990317", sex="F")


def malformed_instance(path: Path) -> Path:
    """A Secondary Capture whose DS element holds the sentinel bytes (cannot be decoded)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT.name, PATIENT.patient_id, "ZQXSENTINELACC"
    ds.PatientWeight = "12345678901234"  # DS, replaced below by the 14 sentinel bytes
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "OT", 8, 8, 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelData = 8, 8, 7, bytes(64)
    ds.save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes().replace(b"12345678901234", b"ZQXSENTINELDOB"))
    return path


def is_dicom(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


@pytest.mark.slow
def test_no_sentinel_outside_the_store(tmp_path):
    from app.demo import send_files
    from app.service import Service
    from synthetic.phantoms.clinical import clinical_resources, write_bundle
    from synthetic.phantoms.mammography import generate_exam

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    install_log_privacy()  # what `cds serve` does to its handlers (this one included)
    try:
        base = Settings(data_dir=tmp_path / "data", output_dir=tmp_path / "out", host="127.0.0.1", port=0,
                        stable_age_s=1.0, stable_check_interval_s=0.5, fhir_offline_dir=tmp_path / "fhir")
        write_bundle(tmp_path / "fhir" / "bundle.json", clinical_resources(base, PATIENT))
        exam = generate_exam(tmp_path / "studies", 3, PATIENT, force_label="invasive")
        files = [Path(p) for p in exam.paths]
        for f in files:
            ds = dcmread(f)
            ds.AccessionNumber = "ZQXSENTINELACC"
            ds.save_as(f)
        bad = malformed_instance(tmp_path / "bad.dcm")
        service = Service(base)
        service.start()
        try:
            sent, failed = send_files([*files, bad], "127.0.0.1", service.listener.port, base.ae_title)
            assert sent >= len(files), failed  # the malformed one: refused or accepted, either way
            deadline = time.monotonic() + 300
            time.sleep(base.stable_age_s)
            while service.store.pending_work() > 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            store = service.store
            errors = [j.last_error or "" for j in store.jobs(limit=1000)]
            errors += [o.last_error or "" for o in store.outbox_items(limit=1000)]
            errors += [r.reason for r in store.recent_rejections(100)]
            delivered = [o for o in store.outbox_items(limit=1000) if o.state == "delivered"]
            # FHIR resources and the PDF name the patient by design: they wait in the store (the
            # outbox), not as files; DICOM outputs are DICOM files like the received instances.
            # (listings never read payloads: ask the table which rows hold one)
            in_store = store._query("SELECT id FROM outbox WHERE payload IS NOT NULL")
        finally:
            service.stop()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    assert delivered, "the flow delivered nothing: the test would prove nothing"
    lines = buf.getvalue().splitlines()
    assert len(lines) > 20
    leaks = [(i, line) for i, line in enumerate(lines) if any(s in line for s in SENTINELS)]
    assert not leaks, leaks[:5]
    assert not [e for e in errors if any(s in e for s in SENTINELS)]
    data = base.data_dir
    checked = []
    for p in sorted(data.rglob("*")):
        if p.is_dir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
            continue
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p  # owner only
        if p.name.startswith("cds.sqlite3") or is_dicom(p):
            continue
        blob = p.read_bytes()
        checked.append(p.relative_to(data))
        assert not [s for s in SENTINELS if s.encode() in blob], p
    assert any(str(c).startswith("audit") for c in checked)
    assert in_store, "no FHIR or PDF output was made: the check of non-DICOM files proves little"
    print(f"sentinel check: {len(lines)} log lines, {len(checked)} non-DICOM files "
          f"({len(in_store)} FHIR/PDF outputs held in the store), {len(errors)} error strings")
