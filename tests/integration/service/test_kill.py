"""SIGKILL the service mid-transfer and mid-job: nothing acknowledged is lost, the job finishes."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from pydicom import dcmread

from cds.store import Store
from tests.integration.service.spine_support import REPO, ServeProcess, mg_dataset, need, write

ALL_MODELS_OFF = "mammography,slides,ultrasound,recurrence"


def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_kill_during_storescu_keeps_every_acknowledged_instance(tmp_path):
    need("storescu")
    files = [write(mg_dataset(seed=i, rows=1024, cols=1024, patient_id="KILL"), tmp_path / "in" / f"{i:02d}.dcm")
             for i in range(50)]  # 2 MB each
    srv = ServeProcess(tmp_path / "data", CDS_STABLE_AGE_S="3600", CDS_DISABLED_MODELS=ALL_MODELS_OFF).start()
    scu = subprocess.Popen(["storescu", "-v", "-aec", "CDS", "127.0.0.1", str(srv.port), *map(str, files)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")
    wait_for(lambda: db.counts()["instances"]["total"] >= 5, 60, "the first instances to arrive")
    srv.kill()
    out, _ = scu.communicate(timeout=60)
    acked = len(re.findall(r"Received Store Response \(Success\)", out))
    assert 5 <= acked < 50, f"kill did not land mid-transfer (acknowledged {acked} of 50)\n{out[-2000:]}"

    srv2 = ServeProcess(tmp_path / "data", port=srv.port, CDS_STABLE_AGE_S="3600",
                        CDS_DISABLED_MODELS=ALL_MODELS_OFF).start()
    try:
        store = Store(f"sqlite:///{srv2.data_dir / 'cds.sqlite3'}")
        for f in files[:acked]:  # storescu sends in order: the first `acked` got Success
            uid = dcmread(f, stop_before_pixels=True).SOPInstanceUID
            path = store.instance_path(uid)
            assert path, f"acknowledged instance {uid} is missing after restart"
            assert dcmread(path).PixelData == dcmread(f).PixelData
        assert not list((srv2.data_dir / "incoming").rglob("*.dcm")), "partial files left after restart"
    finally:
        srv2.stop()


def test_kill_during_job_reruns_it_after_restart(tmp_path):
    need("storescu")
    env = dict(CDS_STABLE_AGE_S="1", CDS_DISABLED_MODELS=ALL_MODELS_OFF,
               CDS_EXTRA_MODEL_FACTORIES="slow_model",
               PYTHONPATH=f"{REPO}:{Path(__file__).parent}")
    f = write(mg_dataset(seed=1, patient_id="KILLJOB"), tmp_path / "one.dcm")
    srv = ServeProcess(tmp_path / "data", **env).start()
    subprocess.run(["storescu", "-aec", "CDS", "127.0.0.1", str(srv.port), str(f)], check=True, timeout=60)
    db = Store(f"sqlite:///{srv.data_dir / 'cds.sqlite3'}")
    job = wait_for(lambda: next(iter(db.jobs("running")), None), 60, "the study job to start")
    srv.kill()
    assert db.job(job.id).state == "running"  # killed mid-run

    srv2 = ServeProcess(tmp_path / "data", port=srv.port, **env).start()
    try:
        done = wait_for(lambda: (j := db.job(job.id)) and j.state == "done" and j, 60, "the job to finish")
        assert done.attempts == 2
        results = db.results(study_uid=dcmread(f).StudyInstanceUID)
        assert any(r.model == "test-slow-model" and r.status == "ok" for r in results)
    finally:
        srv2.stop()
