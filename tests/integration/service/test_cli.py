"""The `cds` command as a site would run it: analyze (offline), status, serve + SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.integration.service.spine_support import REPO, ServeProcess, mg_dataset, write

NO_MODELS = {"CDS_DISABLED_MODELS": "mammography,slides,ultrasound,recurrence"}


def cds(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_analyze_folder_then_status(tmp_path):
    study = tmp_path / "study"
    for i in range(3):
        write(mg_dataset(study_uid="1.2.826.0.1.3680043.8.498.1", seed=i), study / f"{i}.dcm")
    (study / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    r = cds("analyze", str(study), "--out", str(out), env=NO_MODELS)
    # the stray file is refused, visibly, and the rest goes on; a refused input outranks "no model"
    assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-2000:]
    assert "refused:" in r.stdout and "not a DICOM file" in r.stdout
    assert "incomplete: study 1.2.826.0.1.3680043.8.498.1 (MG): no model registered" in r.stdout
    st = cds("status", env={"CDS_DATA_DIR": str(out / ".cds-data")})
    assert st.returncode == 0, st.stderr
    assert "1.2.826.0.1.3680043.8.498.1" in st.stdout and "stable" in st.stdout


def test_analyze_without_a_model_for_the_study_exits_6(tmp_path):
    study = tmp_path / "study"
    write(mg_dataset(study_uid="1.2.826.0.1.3680043.8.498.2", seed=5), study / "0.dcm")
    r = cds("analyze", str(study), "--out", str(tmp_path / "out"), env=NO_MODELS)
    assert r.returncode == 6, r.stdout[-3000:] + r.stderr[-2000:]
    assert "incomplete run: exit code 6" in r.stdout


def test_a_model_that_cannot_load_stops_start_up_with_its_name(tmp_path):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    study = tmp_path / "study"
    write(mg_dataset(study_uid="1.2.826.0.1.3680043.8.498.3", seed=6), study / "0.dcm")
    env = {"CDS_MODELS_DIR": str(empty), "CDS_DISABLED_MODELS": "slides,ultrasound,recurrence"}
    r = cds("analyze", str(study), "--out", str(tmp_path / "out"), env=env)
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-2000:]
    assert "cannot start" in r.stdout and "models.mammography.runtime" in r.stdout
    assert "card.json" in r.stdout and "CDS_DISABLED_MODELS=mammography" in r.stdout
    assert not (tmp_path / "out" / ".cds-data" / "cds.sqlite3").exists()  # refused before any intake
    srv = subprocess.run([sys.executable, "-m", "app.cli", "serve"], capture_output=True, text=True,
                         cwd=REPO, timeout=120, env={**os.environ, "COLUMNS": "200", **env,
                                                     "CDS_DATA_DIR": str(tmp_path / "serve"),
                                                     "CDS_PORT": "0"})
    assert srv.returncode == 3 and "models.mammography.runtime" in srv.stdout, srv.stdout + srv.stderr


def test_status_lists_every_model_with_version_or_reason(tmp_path):
    r = cds("status", env={"CDS_DATA_DIR": str(tmp_path / "none"), "CDS_DISABLED_MODELS": "slides"})
    assert "mammography-phantom-cnn" in r.stdout and "loaded" in r.stdout
    assert "models.slides.runtime" in r.stdout and "disabled in settings" in r.stdout


def test_status_without_store_says_so(tmp_path):
    r = cds("status", env={"CDS_DATA_DIR": str(tmp_path / "none")})
    assert r.returncode == 1 and "no store" in r.stdout


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    srv = ServeProcess(tmp_path / "data", **NO_MODELS).start()
    t0 = time.monotonic()
    assert srv.stop(timeout=20) == 0
    assert time.monotonic() - t0 < 20
    assert "service stopped" in srv.log.read_text()


def test_demo_runs_end_to_end_on_embedded_defaults(tmp_path):
    """The README's demo: synthetic patient over C-STORE, every job done, outputs delivered."""
    r = cds("demo", "--out", str(tmp_path / "demo"), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "sent 10/10 instances" in r.stdout  # 4 MG, 4 slide levels, 1 US image and the sonographer's SR
    results = tmp_path / "demo" / "results"
    assert len(list((results / "dicom").glob("*seg*.dcm"))) >= 2  # mammography and slide SEG
    assert len(list((results / "dicom").glob("*sr.dcm"))) >= 2
    assert list((results / "fhir").glob("*riskassessment.json")) and list((results / "pdf").glob("*.pdf"))
    st = cds("status", env={"CDS_DATA_DIR": str(tmp_path / "demo" / "cds-data")})
    assert "dead" not in st.stdout.split("Failures")[0], st.stdout
    from cds.store import Store

    store = Store(f"sqlite:///{tmp_path / 'demo' / 'cds-data' / 'cds.sqlite3'}")
    try:
        us = [r.summary for r in store.results(kind="study_analysis") if r.modality == "US"]
    finally:
        store.close()
    assert us and "box from sr" in us[0], f"the ultrasound model did not use the sonographer's SR region: {us}"
