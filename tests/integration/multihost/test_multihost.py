"""Issue 17, "tests across hosts": 2 listeners, 3 workers and 1 dispatcher, each in its own network
namespace (its own address), on one PostgreSQL and one shared spool, with three faults mid-run.

Proves, with the shipped mammography model, Orthanc as the PACS and the FHIR peer as the EHR:
- a worker SIGKILLed while it holds a study job: another host takes the job over after its lease
  (CDS_JOB_LEASE_S=5) and finishes it; its outputs are delivered once;
- a listener SIGKILLed mid-association, after two instances were acknowledged: the sender sends the
  whole study again through the other listener; the acknowledged instances are kept (indexed once,
  counted as duplicates), the study is analysed once;
- PostgreSQL restarted while jobs and deliveries are in flight: every process reconnects;
- at the end every acknowledged instance is indexed once with its spool file, every job done, every
  outbox row delivered, each output in Orthanc once per (study, output) and one RiskAssessment per
  result identifier on the FHIR peer.
A failure names the study and the counts, with the tail of every process's log.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from cds.audit.chain import verify
from cds.contracts.domain import PatientRef
from cds.store import Store, audit_outbox
from conformance.e2e_support import RESULT_SYSTEM, seed_fhir
from conformance.peers.netns import netns_missing_reason
from conformance.peers.process import fhir_missing_reason, orthanc_missing_reason
from tests.integration.multihost.deployment import (
    CDS_AET,
    LEASE_S,
    LISTEN_PORT,
    Deployment,
    Proc,
    deployment,
    port_open,
    wait_for,
    wait_started,
)
from tests.integration.multihost.sender import send, send_until_acked
from tests.peers import REQUIRED, missing, need_postgres

pytestmark = [pytest.mark.peers, pytest.mark.slow, pytest.mark.timeout(300)]

STUDIES = 6
SLOW_S = 30  # the first run of study 0 holds its job this long (it is killed well before)
ALL_DONE_TIMEOUT_S = 170  # an output claimed when PostgreSQL went away waits out the 120 s outbox lease
WORKER_ARGS = ["work", "--lane", "study", "--lane", "case"]


def _require_peers() -> None:
    reason = netns_missing_reason()  # not root, or no iproute2
    if reason is not None:
        if REQUIRED or os.environ.get("CI"):
            pytest.fail(f"the multi-host test cannot run: {reason} (CI must run it as root)", pytrace=False)
        pytest.skip(f"{reason} (CI runs this test as root)")
    for why in (orthanc_missing_reason(), fhir_missing_reason()):
        if why:
            missing(why)
    need_postgres()


def _exams(dep: Deployment) -> list[tuple[PatientRef, str, list[Path]]]:
    """One small 4-view MG exam per synthetic patient, each patient's clinical record on the FHIR peer."""
    from synthetic.phantoms.mammography import generate_exam

    run = uuid.uuid4().hex[:6].upper()
    out = []
    for i in range(STUDIES):
        patient = PatientRef(patient_id=f"MH{run}{i}", issuer="BREASTCDS", name=f"Phantom^Multihost{i}",
                             birth_date="19640312", sex="F")
        seed_fhir(dep.fhir.base_url, patient)
        truth = generate_exam(dep.work / "exams" / str(i), seed=300 + i, patient=patient)
        out.append((patient, truth.study_instance_uid, [img.path for img in truth.images]))
    return out


def _start_processes(dep: Deployment, slow_study: str) -> dict[str, Proc]:
    markers = dep.work / "markers"
    markers.mkdir()
    extra = {"CDS_DISABLED_MODELS": "mammography,slides,ultrasound",
             "CDS_EXTRA_MODEL_FACTORIES": "tests.integration.multihost.slow_mammography",
             "CDS_STABLE_AGE_S": "20",  # the fallback; complete-on-release should make it unneeded
             "MH_SLOW_STUDIES": slow_study, "MH_SLOW_MARKERS": str(markers), "MH_SLOW_S": str(SLOW_S)}
    procs = {name: dep.start(name, args, extra) for name, args in (
        ("l1", ["listen"]), ("l2", ["listen"]), ("w1", WORKER_ARGS), ("w2", WORKER_ARGS), ("w3", WORKER_ARGS),
        ("d", ["dispatch"]))}
    for name, proc in procs.items():
        wait_started(dep, proc, {"l": "running listen", "w": "running work", "d": "running dispatch"}[name[0]])
    for name in ("l1", "l2"):
        wait_for(lambda a=procs[name].host.address: port_open(a, LISTEN_PORT), 30,
                 f"listener {name} accepting on its own address", dep.logs)
    return procs


def _kill_worker_holding(dep: Deployment, store: Store, study_uid: str, workers: list[Proc]) -> tuple[str, float]:
    """SIGKILL the worker process running ``study_uid``'s job; wait until another takes it over.
    Returns (the killed process's name, seconds from the kill to the takeover)."""
    def running():
        return next((j for j in store.jobs("running") if j.kind == "study" and j.study.study_uid == study_uid), None)

    job = wait_for(running, 90, f"the study job of {study_uid} to be running", dep.logs)
    pid = int((job.worker or "").split(":")[1])
    victim = next((w for w in workers if w.popen.pid == pid), None)
    assert victim is not None, f"job {job.id} runs under {job.worker}, not one of our workers " \
        f"{[(w.name, w.popen.pid) for w in workers]}\n{dep.logs()}"
    dep.kill(victim)
    killed_at = time.monotonic()
    taken = wait_for(lambda: (j := store.job(job.id)) and j.worker != job.worker and j, LEASE_S + 30,
                     f"job {job.id} (killed worker {job.worker}) to be taken over", dep.logs)
    delay = time.monotonic() - killed_at
    assert taken.attempts >= 2, f"job {job.id} was taken over without a new attempt: {taken}"
    assert delay >= LEASE_S / 3, f"job {job.id} was taken over {delay:.2f} s after the kill, before its lease " \
        f"({LEASE_S} s, renewed every {LEASE_S / 3:.1f} s) could have run out"
    return victim.name, delay


def _kill_listener_mid_association(dep: Deployment, victim: Proc, other: Proc,
                                   files: list[Path]) -> tuple[list[str], list[str]]:
    """Two instances acknowledged by ``victim``, then SIGKILL; the whole study again via ``other``.
    Returns (every acknowledged instance, the two acknowledged by the killed listener)."""
    acked = send(victim.host.address, LISTEN_PORT, files, CDS_AET,
                 after_ack=lambda n: dep.kill(victim) if n == 2 else None)
    assert victim.popen.poll() is not None, "the listener was not killed"
    assert len(acked) == 2, f"expected the association to break after 2 acknowledgements, got {len(acked)}"
    again = send_until_acked(other.host.address, LISTEN_PORT, files, CDS_AET)
    return sorted(set(acked) | set(again)), acked


def _quiescent(store: Store) -> str | None:
    """None when every job is done and every output delivered; else what is still open."""
    jobs = Counter(j.state for j in store.jobs(limit=1000))
    outs = Counter(o.state for o in store.outbox_items(limit=1000))
    dead = [f"job {j.id} {j.kind}: {j.last_error}" for j in store.jobs("dead")] + \
           [f"output {o.id} {o.key}: {o.last_error}" for o in store.outbox_items("dead")]
    if dead:
        raise AssertionError("dead-lettered: " + "; ".join(dead))
    if set(jobs) == {"done"} and set(outs) == {"delivered"}:
        return None
    return f"jobs {dict(jobs)}, outputs {dict(outs)}"


def _all_done(dep: Deployment, store: Store, studies: list[str]) -> bool:
    """Every study has its study job (completeness was detected) and nothing is open. Fails at
    once when a thread of a process died (it would never finish its part)."""
    crashed = dep.crashed_threads()
    assert not crashed, f"a thread died of an uncaught exception in {crashed}\n{dep.logs(60)}"
    seen = {j.study.study_uid for j in store.jobs(limit=1000) if j.kind == "study"}
    return set(studies) <= seen and _quiescent(store) is None


def _check_instances(store: Store, acked: dict[str, list[str]], resent: list[str]) -> list[str]:
    rows = store._query("SELECT sop_uid, study_uid, path, duplicates FROM instances")
    count = Counter(r["sop_uid"] for r in rows)
    info = {r["sop_uid"]: r for r in rows}
    problems = []
    for study, uids in acked.items():
        for uid in uids:
            if count[uid] != 1:
                problems.append(f"study {study}: acknowledged instance {uid} indexed {count[uid]} times")
            elif not Path(info[uid]["path"]).is_file():
                problems.append(f"study {study}: instance {uid} indexed but its spool file {info[uid]['path']} is gone")
            elif info[uid]["study_uid"] != study:
                problems.append(f"instance {uid} indexed under study {info[uid]['study_uid']}, sent in {study}")
    for uid in resent:
        if count[uid] == 1 and not info[uid]["duplicates"]:
            problems.append(f"instance {uid} was sent again through the other listener but no duplicate was counted")
    return problems


def _check_jobs(store: Store, studies: list[str]) -> list[str]:
    jobs = store.jobs(limit=1000)
    problems = [f"job {j.id} ({j.kind} {j.key}) is {j.state}: {j.last_error}" for j in jobs if j.state != "done"]
    per_study = Counter(j.study.study_uid for j in jobs if j.kind == "study")
    problems += [f"study {s}: {per_study[s]} study jobs (expected 1: analysed once)" for s in studies
                 if per_study[s] != 1]
    outs = store.outbox_items(limit=1000)
    problems += [f"output {o.id} {o.key} is {o.state}: {o.last_error}" for o in outs if o.state != "delivered"]
    keys = Counter(o.key for o in outs)
    problems += [f"output key {k} queued {n} times" for k, n in keys.items() if n > 1]
    return problems


def _orthanc_results(dep: Deployment, study: str) -> list[tuple[str, str]]:
    """(modality, SOP Instance UID) of every instance in the study in Orthanc (all are results)."""
    with dep.orthanc.client() as c:
        ids = [x["ID"] for x in c.post("/tools/lookup", content=study).json() if x["Type"] == "Study"]
        if not ids:
            return []
        out = []
        for series in c.get(f"/studies/{ids[0]}/series").json():
            for iid in series["Instances"]:
                tags = c.get(f"/instances/{iid}").json()["MainDicomTags"]
                out.append((series["MainDicomTags"].get("Modality", "?"), tags["SOPInstanceUID"]))
        return out


def _check_orthanc(dep: Deployment, store: Store, studies: list[str]) -> list[str]:
    """Each DICOM output (one outbox key) is in Orthanc exactly once, and nothing else is."""
    outs = [o for o in store.outbox_items(limit=1000) if o.kind == "dicom" and o.destination == "pacs"]
    problems = []
    for study in studies:
        expected = {o.key: str(dcmread(o.payload_path, stop_before_pixels=True).SOPInstanceUID)
                    for o in outs if o.key.startswith(study + "/")}
        found = _orthanc_results(dep, study)
        uids = Counter(u for _, u in found)
        by_type = Counter(m for m, _ in found)
        if not any(k.endswith("/sr") for k in expected):
            problems.append(f"study {study}: no SR was queued for the PACS (outputs {sorted(expected)})")
        if sorted(uids) != sorted(expected.values()) or len(found) != len(expected):
            problems.append(f"study {study}: Orthanc holds {len(found)} result instance(s) {dict(by_type)} for "
                            f"{len(expected)} output(s) {sorted(k.rsplit('/', 1)[-1] for k in expected)}; "
                            f"not queued: {sorted(set(uids) - set(expected.values()))}, "
                            f"missing: {sorted(set(expected.values()) - set(uids))}")
    return problems


def _fhir_all(base: str, rtype: str) -> list[dict]:
    out, url, params = [], f"{base}/{rtype}", {"_count": "1000"}
    while url:
        bundle = httpx.get(url, params=params, timeout=30).raise_for_status().json()
        out += [e["resource"] for e in bundle.get("entry", [])]
        url, params = next((lk["url"] for lk in bundle.get("link", []) if lk.get("relation") == "next"), ""), None
    return out


def _check_fhir(dep: Deployment, store: Store, studies: list[str]) -> list[str]:
    """One RiskAssessment per result identifier; each study's own and each queued one present."""
    import json

    on_server = Counter(i["value"] for r in _fhir_all(dep.fhir.base_url, "RiskAssessment")
                        for i in r.get("identifier", []) if i.get("system") == RESULT_SYSTEM)
    resources = [json.loads(bytes(r["payload"])) for r in store._query("SELECT payload FROM outbox WHERE kind='fhir'")]
    queued = {i["value"] for r in resources if r.get("resourceType") == "RiskAssessment"
              for i in r.get("identifier", []) if i.get("system") == RESULT_SYSTEM}
    problems = [f"RiskAssessment identifier {v}: {n} resources on the FHIR peer" for v, n in on_server.items() if n != 1]
    problems += [f"RiskAssessment {v} was delivered but is not on the FHIR peer" for v in sorted(queued - set(on_server))]
    for study in studies:
        own = [v for v in on_server if v.startswith(study + "/") and v.endswith("/fhir-riskassessment")]
        if len(own) != 1:
            problems.append(f"study {study}: {len(own)} study RiskAssessment identifier(s) on the FHIR peer {own}")
    return problems


def _check_audit(dep: Deployment, store: Store) -> list[str]:
    """The shared chain verifies, holds no record twice, and names every delivered output in a
    disclosure (staged with its delivered state, drained by whichever process came next); nothing
    is left staged once the dispatcher has drained after its last delivery."""
    import json

    wait_for(lambda: audit_outbox.backlog(store)[0] == 0, 30, "every staged audit record drained",
             lambda: f"{audit_outbox.backlog(store)} staged\n{dep.logs()}")
    path = dep.data_dir / "audit" / "audit.jsonl"
    verdict = verify(path)
    problems = [] if verdict.ok else [f"audit chain broken at line {verdict.bad_line}: {verdict.reason}"]
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    ids = Counter(e["id"] for e in events)
    problems += [f"audit record {i} is in the chain {n} times" for i, n in ids.items() if n > 1]
    disclosed = {e["entity"][-1]["what"]["display"] for e in events if e["type"]["code"] == "110106"}
    problems += [f"output {o.key} delivered without a disclosure record" for o in store.outbox_items(limit=1000)
                 if o.state == "delivered" and o.key not in disclosed]
    return problems


def test_listeners_workers_dispatcher_on_separate_hosts_survive_faults(tmp_path: Path) -> None:
    _require_peers()
    t0 = time.monotonic()
    with deployment(tmp_path) as dep:
        exams = _exams(dep)
        studies = [uid for _, uid, _ in exams]
        procs = _start_processes(dep, studies[0])
        started_s = time.monotonic() - t0
        store = Store(dep.pg.url("cds"))
        try:
            l1, l2 = procs["l1"], procs["l2"]

            def deliver(i: int, listener: Proc) -> None:
                acked[studies[i]] = send_until_acked(listener.host.address, LISTEN_PORT, exams[i][2], CDS_AET)

            acked: dict[str, list[str]] = {}
            deliver(0, l1)
            victim, takeover_s = _kill_worker_holding(dep, store, studies[0], [procs[w] for w in ("w1", "w2", "w3")])
            deliver(1, l2)
            deliver(2, l1)
            acked[studies[3]], resent = _kill_listener_mid_association(dep, l1, l2, exams[3][2])
            deliver(4, l2)
            wait_for(lambda: any(o.state == "delivered" for o in store.outbox_items(limit=1000)), 90,
                     "a first output delivered (the restart must come mid-run)", dep.logs)
            open_at_restart = _quiescent(store)
            t = time.monotonic()
            dep.pg.restart()  # cuts every connection of every host mid-run
            restart_s = time.monotonic() - t
            deliver(5, l2)
            wait_for(lambda: _all_done(dep, store, studies), ALL_DONE_TIMEOUT_S, "every job done and every output delivered",
                     lambda: f"{_quiescent(store)}\n{dep.logs()}")
            problems = [f"process {n} exited ({p.popen.returncode}) during the run" for n, p in procs.items()
                        if n not in ("l1", victim) and p.popen.poll() is not None]
            problems += _check_instances(store, acked, resent) + _check_jobs(store, studies)
            problems += _check_orthanc(dep, store, studies) + _check_fhir(dep, store, studies)
            problems += _check_audit(dep, store)
            assert not problems, "\n".join(problems) + "\n" + dep.logs()
            print(f"\nmulti-host: {STUDIES} studies, start-up {started_s:.1f} s, takeover {takeover_s:.1f} s after "
                  f"SIGKILL (lease {LEASE_S} s), PostgreSQL restart {restart_s:.1f} s with {open_at_restart or 'nothing'} "
                  f"open, all done {time.monotonic() - t0:.1f} s after the start")
        finally:
            store.close()
