"""Completeness without waiting: a mammography study with its four standard views, sent in one
association, is complete when the sender releases it; a released association missing a view, or
an aborted one, leaves its study to the stable age."""

from __future__ import annotations

import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from cds.store import Store
from tests.integration.service.spine_support import MG_FOR_PRESENTATION, ServeProcess, mg_dataset

VIEWS = [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]


def _send(port: int, study_uid: str, n: int, *, release: bool) -> None:
    ae = AE(ae_title="RELEASETEST")
    ae.add_requested_context(MG_FOR_PRESENTATION, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="CDS")
    assert assoc.is_established
    for i in range(n):
        ds = mg_dataset(study_uid, seed=i)
        ds.ImageLaterality, ds.ViewPosition = VIEWS[i]
        status = assoc.send_c_store(ds)
        assert status.Status == 0
    assoc.release() if release else assoc.abort()


def _state(data_dir, study_uid: str) -> tuple[str, int]:
    store = Store(f"sqlite:///{data_dir / 'cds.sqlite3'}")
    try:
        study = next(s for s in store.recent_studies(100) if s.study_uid == study_uid)
        jobs = [j for j in store.jobs(limit=100) if getattr(j.payload, "study_uid", "") == study_uid]
        return study.state, len(jobs)
    finally:
        store.close()


@pytest.mark.parametrize("enabled", [True, False])
def test_release_completes_the_study_abort_does_not(tmp_path, enabled: bool) -> None:
    env = {"CDS_STABLE_AGE_S": "3600", "CDS_DISABLED_MODELS": "mammography,slides,ultrasound,recurrence",
           "CDS_COMPLETE_ON_RELEASE": "true" if enabled else "false"}
    with ServeProcess(tmp_path / "data", **env) as srv:
        released, partial, aborted = generate_uid(), generate_uid(), generate_uid()
        _send(srv.port, released, 4, release=True)
        _send(srv.port, partial, 3, release=True)
        _send(srv.port, aborted, 4, release=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _state(srv.data_dir, released)[0] != "stable":
            time.sleep(0.2)
        state, jobs = _state(srv.data_dir, released)
        if enabled:
            assert (state, jobs) == ("stable", 1), "a released association's study must be complete at once"
        else:
            assert state == "receiving" and jobs == 0
        assert _state(srv.data_dir, aborted) == ("receiving", 0), "an aborted association proves nothing"
        assert _state(srv.data_dir, partial) == ("receiving", 0), "three views are not a complete exam"
