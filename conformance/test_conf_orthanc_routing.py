"""Orthanc conformance and the routing recipe (conformance/orthanc/), with storescp as the plugin.

What the plugin depends on: storescu/C-STORE into Orthanc works; the recipe routes every stable MG
or SM study to the 'cds' modality exactly once per instance; results coming back from the plugin
(C-STORE from AE CDS, or STOW-RS through /dicom-web) are stored in the same study and never routed
back; other modalities are not routed; a failed C-STORE to the plugin is sent again on the next
stable event rather than lost.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from conformance import samples
from conformance.conftest import CDS_AET, CDS_MODALITY, OrthancPeer
from conformance.peers.dcmtk import storescu
from conformance.peers.process import free_port

pytestmark = pytest.mark.peers

ROUTE_TIMEOUT_S = 20.0


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last value: {last!r})")


def study_id(orthanc: OrthancPeer, study_uid: str) -> str | None:
    with orthanc.client() as c:
        r = c.post("/tools/lookup", content=study_uid)
        r.raise_for_status()
        ids = [x["ID"] for x in r.json() if x["Type"] == "Study"]
    return ids[0] if ids else None


def wait_stable(orthanc: OrthancPeer, sid: str, settle_s: float = 1.5) -> None:
    """Wait until Orthanc says the study is stable, then let the Lua callback run."""

    def stable() -> bool:
        with orthanc.client() as c:
            return bool(c.get(f"/studies/{sid}").json().get("IsStable"))

    wait_until(stable, ROUTE_TIMEOUT_S, f"study {sid} to become stable")
    time.sleep(settle_s)


def routed_marks(orthanc: OrthancPeer, sid: str) -> dict[str, str | None]:
    """SOP Instance UID -> CdsRoutedAt metadata (None when unmarked) for every instance of the study."""
    out: dict[str, str | None] = {}
    with orthanc.client() as c:
        for inst in c.get(f"/studies/{sid}/instances").json():
            meta = c.get(f"/instances/{inst['ID']}/metadata?expand").json()
            out[inst["MainDicomTags"]["SOPInstanceUID"]] = meta.get("CdsRoutedAt")
    return out


def delete_study(orthanc: OrthancPeer, study_uid: str) -> None:
    sid = study_id(orthanc, study_uid)
    if sid:
        with orthanc.client() as c:
            c.delete(f"/studies/{sid}")


@pytest.fixture
def mg_files(tmp_path: Path, orthanc_peer: OrthancPeer):
    files = samples.mg_study(tmp_path / "mg", patient_id=f"CONF-{uuid.uuid4().hex[:10]}")
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    yield files, study_uid
    delete_study(orthanc_peer, study_uid)


def _sop(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_system_and_dicomweb_answer(orthanc_peer):
    with orthanc_peer.client() as c:
        system = c.get("/system")
        assert system.status_code == 200, f"GET /system: {system.status_code} {system.text[:200]}"
        assert system.json()["DicomAet"] == orthanc_peer.aet
        qido = c.get("/dicom-web/studies", params={"limit": 1})
        assert qido.status_code == 200, (
            f"QIDO-RS /dicom-web/studies answered {qido.status_code}: the DICOMweb plugin is needed "
            "for the STOW-RS result path"
        )


def test_rest_api_requires_credentials_when_configured(orthanc_peer):
    if orthanc_peer.auth is None:
        pytest.skip("no credentials configured for this Orthanc (CONF_ORTHANC_USER unset)")
    r = httpx.get(f"{orthanc_peer.base_url}/system", timeout=10)
    assert r.status_code == 401, f"unauthenticated GET /system answered {r.status_code}, expected 401"


def test_storescu_into_orthanc(orthanc_peer, mg_files):
    files, study_uid = mg_files
    storescu(files, orthanc_peer.dicom_port, orthanc_peer.aet, calling_aet="MODALITY1", host=orthanc_peer.dicom_host)
    sid = study_id(orthanc_peer, study_uid)
    assert sid, f"study {study_uid} not found in Orthanc after storescu"
    with orthanc_peer.client() as c:
        instances = c.get(f"/studies/{sid}/instances").json()
        assert sorted(i["MainDicomTags"]["SOPInstanceUID"] for i in instances) == sorted(map(_sop, files))
        meta = c.get(f"/instances/{instances[0]['ID']}/metadata?expand").json()
    assert meta.get("RemoteAET") == "MODALITY1", f"RemoteAET metadata not recorded: {meta}"


def test_stable_mg_study_routed_exactly_once_and_results_not_rerouted(orthanc_peer, cds_standin, mg_files, tmp_path):
    files, study_uid = mg_files
    sources = sorted(map(_sop, files))
    storescu(files, orthanc_peer.dicom_port, orthanc_peer.aet, calling_aet="MODALITY1", host=orthanc_peer.dicom_host)

    got = wait_until(
        lambda: len(cds_standin.received_sop_uids(study_uid)) >= len(sources) and cds_standin.received_sop_uids(study_uid),
        ROUTE_TIMEOUT_S,
        "the 4 MG instances to reach the stand-in plugin",
    )
    assert sorted(got) == sources
    sid = study_id(orthanc_peer, study_uid)
    wait_until(
        lambda: all((m or "").startswith("sent") for m in routed_marks(orthanc_peer, sid).values()),
        ROUTE_TIMEOUT_S,
        "CdsRoutedAt marks to become final ('sent ...')",
    )

    # The plugin's results come back into the same study, three ways.
    sr = samples.result_sr(tmp_path / "results", files[0])
    mg_from_plugin = samples.mg_study(tmp_path / "plugin_mg", patient_id="IGNORED", study_uid=study_uid)[0]
    storescu([sr, mg_from_plugin], orthanc_peer.dicom_port, orthanc_peer.aet, calling_aet=CDS_AET, host=orthanc_peer.dicom_host)
    stow_sr = samples.result_sr(tmp_path / "results", files[0], name="stow_sr.dcm")
    body = b"".join(
        [
            b"--cdsboundary\r\nContent-Type: application/dicom\r\n\r\n",
            stow_sr.read_bytes(),
            b"\r\n--cdsboundary--\r\n",
        ]
    )
    with orthanc_peer.client() as c:
        r = c.post(
            "/dicom-web/studies",
            content=body,
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=cdsboundary'},
        )
    assert r.status_code == 200, f"STOW-RS into Orthanc: {r.status_code} {r.text[:300]}"

    wait_stable(orthanc_peer, sid)
    with orthanc_peer.client() as c:
        modalities = sorted(s["MainDicomTags"]["Modality"] for s in c.get(f"/studies/{sid}/series").json())
    assert modalities.count("SR") == 2, f"results not stored in the source study: series modalities {modalities}"

    counts = Counter(cds_standin.received_sop_uids(study_uid))
    assert sorted(counts) == sources, (
        f"results were routed back to the plugin: received {sorted(counts)} but only the sources {sources} may be"
    )
    assert set(counts.values()) == {1}, f"a source instance was routed more than once: {dict(counts)}"


def test_late_view_is_routed_once_more(orthanc_peer, cds_standin, mg_files, tmp_path):
    files, study_uid = mg_files
    storescu(files[:3], orthanc_peer.dicom_port, orthanc_peer.aet, host=orthanc_peer.dicom_host)
    wait_until(lambda: len(cds_standin.received_sop_uids(study_uid)) == 3, ROUTE_TIMEOUT_S, "first 3 views routed")
    storescu(files[3:], orthanc_peer.dicom_port, orthanc_peer.aet, host=orthanc_peer.dicom_host)
    wait_until(lambda: len(cds_standin.received_sop_uids(study_uid)) >= 4, ROUTE_TIMEOUT_S, "late 4th view routed")
    wait_stable(orthanc_peer, study_id(orthanc_peer, study_uid))
    counts = Counter(cds_standin.received_sop_uids(study_uid))
    assert sorted(counts) == sorted(map(_sop, files)) and set(counts.values()) == {1}, dict(counts)


def test_other_modalities_are_not_routed(orthanc_peer, cds_standin, tmp_path):
    ct = samples.ct_instance(tmp_path / "ct", patient_id=f"CONF-{uuid.uuid4().hex[:10]}")
    study_uid = str(dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
    try:
        storescu([ct], orthanc_peer.dicom_port, orthanc_peer.aet, host=orthanc_peer.dicom_host)
        sid = wait_until(lambda: study_id(orthanc_peer, study_uid), 10, "CT study in Orthanc")
        wait_stable(orthanc_peer, sid)
        assert cds_standin.received_sop_uids(study_uid) == [], "a CT study was routed to the plugin"
        assert routed_marks(orthanc_peer, sid) == {_sop(ct): None}
    finally:
        delete_study(orthanc_peer, study_uid)


def test_failed_send_is_retried_on_next_stable_event(orthanc_peer, cds_standin, mg_files):
    """The plugin is down when the study becomes stable: nothing is lost, the marks are removed."""
    files, study_uid = mg_files
    dead_port = free_port()
    orthanc_peer.point_cds_modality(CDS_AET, "127.0.0.1", dead_port)
    try:
        storescu(files[:2], orthanc_peer.dicom_port, orthanc_peer.aet, host=orthanc_peer.dicom_host)
        sid = wait_until(lambda: study_id(orthanc_peer, study_uid), 10, "study in Orthanc")
        wait_stable(orthanc_peer, sid, settle_s=2.5)
        marks = routed_marks(orthanc_peer, sid)
        assert all(m is None for m in marks.values()), (
            f"instances stayed marked as routed although the C-STORE to the plugin failed: {marks}"
        )
    finally:
        orthanc_peer.point_cds_modality(CDS_AET, "127.0.0.1", cds_standin.port)
    assert cds_standin.received_sop_uids(study_uid) == []
    storescu(files[2:], orthanc_peer.dicom_port, orthanc_peer.aet, host=orthanc_peer.dicom_host)
    wait_until(lambda: len(cds_standin.received_sop_uids(study_uid)) >= 4, ROUTE_TIMEOUT_S, "all 4 views routed after recovery")
    wait_stable(orthanc_peer, sid)
    counts = Counter(cds_standin.received_sop_uids(study_uid))
    assert sorted(counts) == sorted(map(_sop, files)) and set(counts.values()) == {1}, dict(counts)


def test_cds_modality_echo(orthanc_peer, cds_standin):
    with orthanc_peer.client() as c:
        r = c.post(f"/modalities/{CDS_MODALITY}/echo", json={})
    assert r.status_code == 200, f"C-ECHO from Orthanc to the plugin's AE failed: {r.status_code} {r.text[:200]}"


def test_ultrasound_and_sonographer_sr_are_routed(orthanc_peer, cds_standin, tmp_path):
    """The recurrence model reads the ultrasound image and the sonographer's lesion SR: both reach
    the plugin through the PACS (an SR sent by a device over DICOM is routed; the plugin's own SRs
    are not, as the test above shows)."""
    from cds.contracts.domain import PatientRef
    from synthetic.phantoms.ultrasound import generate_lesion_sr, generate_ultrasound

    patient = PatientRef(patient_id=f"CONF-{uuid.uuid4().hex[:10]}", name="Conf^Us")
    us = generate_ultrasound(tmp_path / "us", 3, patient, latent_risk=1.0)
    files = [Path(us.path), generate_lesion_sr(us, tmp_path / "us")]
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    try:
        storescu(files, orthanc_peer.dicom_port, orthanc_peer.aet, calling_aet="US_DEVICE",
                 host=orthanc_peer.dicom_host)
        got = wait_until(lambda: len(cds_standin.received_sop_uids(study_uid)) >= 2
                         and cds_standin.received_sop_uids(study_uid), ROUTE_TIMEOUT_S,
                         "the US image and the sonographer's SR to reach the stand-in plugin")
        assert sorted(got) == sorted(map(_sop, files))
    finally:
        delete_study(orthanc_peer, study_uid)
