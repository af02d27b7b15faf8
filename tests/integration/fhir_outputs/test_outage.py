"""The FHIR server down for longer than the old retry budget (job_max_attempts with the
backoff), then back: nothing goes dead, and the case completes within a probe interval of the
server's return, not at the end of its backoff nor at the periodic refresh."""

from __future__ import annotations

import shutil
import time

from app.analyze import check_stable
from conformance.peers.fhir_server import FhirServer
from conformance.peers.process import PeerUnavailable
from tests.integration.fhir_outputs.support import ingest, load_clinical, make_service, ours, run, study_files
from tests.peers import missing


def _case_attempts(service) -> int:
    return max([j.attempts for j in service.store.jobs(limit=100) if j.kind == "case"] or [0])


def _spin_until_past_old_budget(service, timeout_s: float = 40.0) -> None:
    """Run the service while the server is down until the case job has failed more times than
    job_max_attempts allowed (the old semantics would have made it dead by then)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and _case_attempts(service) <= service.settings.job_max_attempts:
        service.workers.drain()
        service.dispatcher.run_once()
        time.sleep(0.05)
    time.sleep(1.0)  # and stay down a little longer, the case job now in a multi-second backoff


def test_outage_longer_than_old_budget_then_prompt_recovery(tmp_path):
    if shutil.which("node") is None:
        missing("node not installed: no FHIR peer")
    try:
        server = FhirServer(workdir=tmp_path / "peer").start()
    except PeerUnavailable as exc:
        missing(str(exc))
    port = server.port
    try:
        # Old semantics: 2 attempts, then dead. Backoff 2, 4, 8 s: after the third failure the
        # case job waits 8 s; the refresh interval stays at its default (an hour).
        service = make_service(tmp_path, server.base_url, job_max_attempts=2, outbox_max_attempts=2,
                               job_backoff_base_s=2.0, job_backoff_max_s=60.0)
        load_clinical(server.base_url, service.settings)
        server.stop()
        ingest(service, study_files(tmp_path)["MG"])
        check_stable(service.settings, service.store)
        _spin_until_past_old_budget(service)
        jobs = service.store.jobs(limit=100)
        case = [j for j in jobs if j.kind == "case"]
        assert case and all(j.state == "queued" for j in case), [(j.state, j.last_error) for j in jobs]
        assert max(j.attempts for j in case) > service.settings.job_max_attempts
        assert "[peer:fhir]" in (case[0].last_error or "")
        assert not [o for o in service.store.outbox_items(limit=100) if o.state == "dead"]
        assert service.store.waiting_on("fhir") >= 1

        job_id = case[0].id
        due = service.store.job(job_id).next_run_at  # when its backoff alone would run it again
        server = FhirServer(port=port, workdir=tmp_path / "peer2").start()
        load_clinical(server.base_url, service.settings)
        back = time.time()
        assert due - back > 2.0, "the backoff left too little to tell a wake-up from it"
        run(service, timeout_s=60.0)
        # the last claim set lease_until = start + job_lease_s (finishing leaves it)
        lease = service.store._query("SELECT lease_until FROM jobs WHERE id=?", (job_id,))[0]["lease_until"]
        started = lease - service.settings.job_lease_s
        assert started - back < 1.5, f"the case started {started - back:.1f} s after the server came back"
        assert started < due
        assert {j.state for j in service.store.jobs(limit=100)} == {"done"}
        assert len(ours(server.base_url, "DiagnosticReport")) == 1
        assert len([r for r in ours(server.base_url, "RiskAssessment")
                    if r["identifier"][0]["value"].endswith("/recurrence")]) == 1
    finally:
        server.stop()
