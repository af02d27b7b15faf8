"""The HTTP surface of a real Service on a free port: STOW-RS from independent clients
(dicomweb-client, and Orthanc's DICOMweb plugin pushing to us), and a dead job requeued through
the API that then completes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from app.service import Service
from cds.contracts.domain import ModelIdentity, StudyAnalysis, StudyInput
from cds.contracts.errors import PermanentError
from cds.contracts.review import Role
from cds.pipeline.registry import ModelRegistry
from synthetic.fixture_model import write_mammogram
from tests.peers import missing
from tests.unit.http.support import PATIENT, make_settings, tokens


class FailsOnceModel:
    """Fails its first study (a permanent error: the job is dead at once), then succeeds."""

    identity = ModelIdentity(name="test-fails-once", version="0", device_uid="2.25.7", synthetic_trained=True)
    modalities = frozenset({"MG"})

    def __init__(self) -> None:
        self.calls = 0

    def analyze(self, study: StudyInput, work_dir: Path) -> StudyAnalysis:
        self.calls += 1
        if self.calls == 1:
            raise PermanentError("deliberate first failure")
        work_dir.mkdir(parents=True, exist_ok=True)
        return StudyAnalysis(study_instance_uid=study.study_instance_uid, modality=study.modality,
                             patient=study.patient, model=self.identity, work_dir=work_dir)


@dataclass
class Live:
    service: Service
    url: str
    tokens: dict[Role, str]
    tmp: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("live")
    settings = make_settings(tmp, http_port=0, port=0, host="127.0.0.1", stable_age_s=1.0,
                             stable_check_interval_s=0.3, job_max_attempts=1, audit_enabled=False)
    toks = tokens(settings)
    service = Service(settings, registry=ModelRegistry(study_models=[FailsOnceModel()]), http=True)
    service.start()
    try:
        assert service.http_port and service.http_port != 8080
        yield Live(service, f"http://127.0.0.1:{service.http_port}", toks, tmp)
    finally:
        service.stop()


def _wait(pred, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_dicomweb_client_stow_and_a_requeued_job_completes(live: Live) -> None:
    from dicomweb_client.api import DICOMwebClient

    study = "2.25.777001"
    files = [write_mammogram(live.tmp / f"dw{i}.dcm", PATIENT, study, seed=i, rows=64, columns=48,
                             view=("CC", "MLO")[i]) for i in range(2)]
    client = DICOMwebClient(url=f"{live.url}/dicomweb", headers={"Authorization": f"Bearer {live.tokens[Role.sender]}"})
    stray = dcmread(write_mammogram(live.tmp / "stray.dcm", PATIENT, "2.25.777999", seed=9, rows=64, columns=48))
    result = client.store_instances([dcmread(f) for f in files] + [stray], study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 2  # the good ones stored ...
    (failed,) = result.FailedSOPSequence  # ... the one of another study failed on its own
    assert failed.ReferencedSOPInstanceUID == stray.SOPInstanceUID and failed.FailureReason == 0xC409
    assert not live.service.store.instance_exists(stray.SOPInstanceUID)
    store = live.service.store
    assert {i.sop_instance_uid for i in store.study_instances(study, "MG")} == {dcmread(f).SOPInstanceUID for f in files}
    h = {"Authorization": f"Bearer {live.tokens[Role.operator]}"}

    def study_job(state: str):
        jobs = httpx.get(f"{live.url}/api/v1/jobs", params={"kind": "study", "state": state}, headers=h).json()["items"]
        return jobs[0] if jobs else None

    _wait(lambda: study_job("dead") is not None, what="the study job to die")
    dead = study_job("dead")
    assert "deliberate first failure" in dead["last_error"]
    r = httpx.post(f"{live.url}/api/v1/jobs/{dead['id']}/requeue", headers=h)
    assert r.status_code == 200 and r.json()["state"] in ("queued", "running", "done")
    _wait(lambda: store.job(dead["id"]).state == "done", what="the requeued job to finish")  # type: ignore[union-attr]
    (row,) = [r for r in store.results(study_uid=study) if r.model == "test-fails-once"]
    assert row.status == "ok" and row.seconds is not None
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'cds_model_inference_seconds_count{model="test-fails-once"} 1.0' in metrics


def test_orthanc_pushes_over_stow_rs(live: Live) -> None:
    from conformance.peers.orthanc import DICOMWEB_PLUGIN, OrthancServer
    from conformance.peers.process import PeerUnavailable

    study = "2.25.777002"
    good = write_mammogram(live.tmp / "orthanc-good.dcm", PATIENT, study, seed=5, rows=64, columns=48)
    try:
        orthanc = OrthancServer(live.tmp / "orthanc", plugins=[DICOMWEB_PLUGIN]).start()
    except PeerUnavailable as exc:
        missing(f"Orthanc with its DICOMweb plugin: {exc}")
    try:
        with orthanc.client() as oc:
            oc.post("/instances", content=good.read_bytes()).raise_for_status()
            oc.put("/dicom-web/servers/cds", json={
                "Url": f"{live.url}/dicomweb/", "HttpHeaders": {"Authorization": f"Bearer {live.tokens[Role.sender]}"},
            }).raise_for_status()
            (orthanc_study,) = oc.get("/studies").json()
            r = oc.post("/dicom-web/servers/cds/stow", json={"Resources": [orthanc_study]}, timeout=60)
            assert r.status_code == 200, r.text
    finally:
        orthanc.stop()
    (stored,) = live.service.store.study_instances(study, "MG")
    assert stored.sop_instance_uid == dcmread(good).SOPInstanceUID and stored.path.exists()
    assert stored.calling_ae == "STOW:test-sender"
