"""Mammograms as archives hold them, through the real listener: storescu sends a Secondary Capture
MG image in RLE Lossless with laterality and view only in free text, and a tomosynthesis-only
study; `cds serve` analyses the first (SR says where laterality came from, dciodvfy finds no
error) and reports the second as not analysed with its reason, without a dead letter."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from cds.store import Store
from synthetic.phantoms.mammography import synthesize_exam
from tests.integration.service.spine_support import ServeProcess, need
from tests.unit.models.mammography.archive_fixtures import burn_label, sc_mammogram

TOMO = "1.2.840.10008.5.1.4.1.1.13.1.3"


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_archive_mammogram_and_tomosynthesis_over_c_store(tmp_path: Path) -> None:
    need("storescu")
    dciodvfy = need("dciodvfy")
    exam = synthesize_exam(11, 512, 416, force_label="invasive")
    view = next(v for v in exam.views if (v.laterality, v.view) == ("L", "CC"))
    sc = sc_mammogram(tmp_path / "send" / "sc.dcm", burn_label(view.pixels, False))
    tomo = sc_mammogram(tmp_path / "send" / "tomo.dcm", view.pixels, sop_class=TOMO, rle=False,
                        patient_id="TOMO-1")
    out = tmp_path / "out"
    srv = ServeProcess(tmp_path / "data", CDS_STABLE_AGE_S="1", CDS_OUTPUT_DIR=str(out),
                       CDS_DISABLED_MODELS="slides,ultrasound,recurrence").start()
    try:
        # -xr: propose RLE Lossless, as an archive sending its RLE files would; the tomosynthesis
        # file goes in a second association; -R: propose only the SOP classes of the files sent
        for args in (["-xr", "-R", str(sc)], ["-R", str(tomo)]):
            sent = subprocess.run(["storescu", "-aec", "CDS", "127.0.0.1", str(srv.port), *args],
                                  capture_output=True, text=True, timeout=120)
            assert sent.returncode == 0, sent.stdout + sent.stderr
        store = Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")
        sc_uid = str(pydicom.dcmread(sc, stop_before_pixels=True).StudyInstanceUID)
        tomo_uid = str(pydicom.dcmread(tomo, stop_before_pixels=True).StudyInstanceUID)

        def results():
            rows = {r.study_uid: r for r in store.results(kind="study_analysis") if r.modality == "MG"}
            return rows if {sc_uid, tomo_uid} <= rows.keys() else None

        rows = _wait(results, 180, "both MG studies to be analysed")
        assert rows[sc_uid].status == "ok", rows[sc_uid].summary
        assert rows[tomo_uid].status == "not_analysed" and "tomosynthesis" in (rows[tomo_uid].summary or "")
        assert not store.jobs("dead"), [j.last_error for j in store.jobs("dead")]
        srs = _wait(lambda: [p for p in (out / "dicom").glob("*sr.dcm") if sc_uid in p.name], 120,
                    "the SR of the archive mammogram")
    finally:
        srv.stop()
    sr = pydicom.dcmread(srs[0])
    coded = {}

    def walk(items):
        for item in items:
            if item.ValueType == "CODE":
                coded.setdefault(item.ConceptNameCodeSequence[0].CodeValue, []).append(
                    item.ConceptCodeSequence[0].CodeValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert coded.get("LATSRC") == ["SRC-TEXT"] and coded.get("VIEWSRC") == ["SRC-TEXT"], coded
    assert coded.get("CONTRALAT") == ["CONTRA-NONE"], coded  # one image: read on its own
    check = subprocess.run([dciodvfy, str(srs[0])], capture_output=True, text=True)
    errors = [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
