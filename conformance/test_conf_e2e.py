"""End to end: Orthanc routes a synthetic patient's studies to `cds serve`, which pulls FHIR
context, runs the models and writes SEG/SR into the same Orthanc study and RiskAssessment /
DiagnosticReport / Provenance into the FHIR server. Plus the negative cases: allow-list refusal,
Orthanc refusing the plugin's C-STORE, and the FHIR server answering 4xx, each ending visibly in
`cds status`.

These tests fail (they do not skip) when a part of the plugin is missing, and the message says
which part. Slow: real model inference on 2 cores, real peers.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from conformance.conftest import CDS_AET, FhirPeer, OrthancPeer, unavailable
from conformance.e2e_support import (
    RESULT_SYSTEM,
    SeedError,
    dead_ids,
    plugin_env,
    plugin_problem,
    seed_fhir,
)
from conformance.peers.cds_serve import CdsServe
from conformance.peers.dcmtk import StoreScp, run_tool, storescu
from conformance.peers.orthanc import OrthancServer
from conformance.peers.process import LOOPBACK, missing_tools

pytestmark = [pytest.mark.peers, pytest.mark.slow]

RESULT_TIMEOUT_S = float(os.environ.get("CONF_RESULT_TIMEOUT_S", "240"))
SOURCE_AET = "MODALITY1"
def seed(fhir: FhirPeer, patient) -> str:
    try:
        return seed_fhir(fhir.base_url, patient)
    except SeedError as exc:
        pytest.fail(str(exc), pytrace=False)


def wait_for(predicate, timeout_s: float, what: str, diagnose=None, interval_s: float = 1.0, fail_fast=None):
    """Poll ``predicate`` until truthy; ``fail_fast()`` returning a message ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        if fail_fast is not None:
            problem = fail_fast()
            if problem:
                extra = f"\n{diagnose()}" if diagnose else ""
                pytest.fail(f"while waiting for {what}: {problem}{extra}", pytrace=False)
        time.sleep(interval_s)
    extra = f"\n{diagnose()}" if diagnose else ""
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r}){extra}", pytrace=False)


def dicom_refs(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in the dataset (SR evidence, SEG source images)."""
    found: set[str] = set()

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.keyword == "ReferencedSOPInstanceUID":
                found.add(str(elem.value))
            elif elem.VR == "SQ":
                for item in elem.value:
                    walk(item)

    walk(ds)
    return found


@dataclass
class Plugin:
    serve: CdsServe
    orthanc: OrthancPeer
    fhir: FhirPeer
    patient_id: str
    fhir_patient_id: str
    files_dir: Path
    earlier_dead: set = field(default_factory=set)

    def problem(self, kinds: tuple[str, ...] = ("study",)) -> str | None:
        """Why results cannot come any more, ignoring what earlier tests left dead."""
        return plugin_problem(self.serve, kinds, ignore=self.earlier_dead)

    def diagnose(self) -> str:
        return (
            f"--- cds status ---\n{self.serve.status_text()[-4000:]}\n"
            f"--- cds serve log ---\n{self.serve.log_tail(60)}"
        )


@pytest.fixture(scope="module")
def plugin(
    conf_config, fhir_peer: FhirPeer, orthanc_peer: OrthancPeer, cds_standin: StoreScp, tmp_path_factory
) -> Iterator[Plugin]:
    from cds.contracts.domain import PatientRef

    work = tmp_path_factory.mktemp("e2e")
    patient = PatientRef(
        patient_id=f"E2E-{uuid.uuid4().hex[:8].upper()}",
        issuer="BREASTCDS",
        name="Phantom^Endtoend",
        birth_date="19640312",
        sex="F",
    )
    fhir_patient_id = seed(fhir_peer, patient)
    env = plugin_env(
        orthanc_peer.aet, orthanc_peer.dicom_host, orthanc_peer.dicom_port, fhir_peer.base_url,
        CDS_ALLOWED_AES=orthanc_peer.aet,
    )
    serve = CdsServe(work / "cds", env, ae_title=CDS_AET)
    serve.start()
    try:
        orthanc_peer.point_cds_modality(CDS_AET, conf_config.standin_host, serve.port)
        yield Plugin(serve, orthanc_peer, fhir_peer, patient.patient_id, fhir_patient_id, work)
    finally:
        try:
            orthanc_peer.point_cds_modality(CDS_AET, conf_config.standin_host, cds_standin.port)
        finally:
            serve.stop()


def _patient_ref(plugin: Plugin):
    from cds.contracts.domain import PatientRef

    return PatientRef(
        patient_id=plugin.patient_id, issuer="BREASTCDS", name="Phantom^Endtoend", birth_date="19640312", sex="F"
    )


def _orthanc_study(orthanc: OrthancPeer, study_uid: str) -> str | None:
    with orthanc.client() as c:
        ids = [x["ID"] for x in c.post("/tools/lookup", content=study_uid).json() if x["Type"] == "Study"]
    return ids[0] if ids else None


def _series(orthanc: OrthancPeer, sid: str) -> list[dict[str, Any]]:
    with orthanc.client() as c:
        return c.get(f"/studies/{sid}/series").json()


def _instances_from(orthanc: OrthancPeer, sid: str, remote_aet: str | None) -> list[dict[str, Any]]:
    """Instances of the study whose RemoteAET is ``remote_aet`` (None: not received by C-STORE)."""
    out = []
    with orthanc.client() as c:
        for inst in c.get(f"/studies/{sid}/instances").json():
            meta = c.get(f"/instances/{inst['ID']}/metadata?expand").json()
            if meta.get("RemoteAET") == remote_aet or (remote_aet is None and meta.get("Origin") != "DicomProtocol"):
                inst["_meta"] = meta
                out.append(inst)
    return out


def _routing_jobs(orthanc: OrthancPeer) -> list[dict[str, Any]]:
    with orthanc.client() as c:
        jobs = c.get("/jobs", params={"expand": ""}).json()
    return [
        j
        for j in jobs
        if j.get("Type") == "DicomModalityStore" and (j.get("Content") or {}).get("RemoteAet") == CDS_AET
    ]


def _validate_dicom(path: Path) -> str:
    """dciodvfy errors (empty when none), and dcsrdump output check for SRs."""
    if missing_tools(["dciodvfy", "dcsrdump"]):
        pytest.fail("dicom3tools (dciodvfy, dcsrdump) missing: run scripts/install_peers.sh", pytrace=False)
    done = run_tool(["dciodvfy", str(path)])
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
    problems = []
    if done.returncode != 0 or errors:
        problems.append(f"dciodvfy {path.name} (exit {done.returncode}):\n    " + "\n    ".join(errors[:20]))
    ds = dcmread(path, stop_before_pixels=True)
    if ds.Modality == "SR":
        sr = run_tool(["dcsrdump", str(path)])
        dump = sr.stdout + sr.stderr  # dcsrdump writes the tree to stderr
        if sr.returncode != 0 or "CONTAINER" not in dump or "Error" in dump:
            problems.append(f"dcsrdump {path.name} (exit {sr.returncode}): {dump[:600]}")
    return "\n".join(problems)


def _check_results_in_orthanc(plugin: Plugin, study_uid: str, sources: set[str], need: set[str], tmp: Path):
    orthanc = plugin.orthanc
    sid = wait_for(lambda: _orthanc_study(orthanc, study_uid), 30, f"study {study_uid} in Orthanc")

    def result_modalities() -> set[str] | None:
        mods = {s["MainDicomTags"].get("Modality") for s in _series(orthanc, sid)}
        return mods if need <= mods else None

    wait_for(
        result_modalities,
        RESULT_TIMEOUT_S,
        f"result series {sorted(need)} in the source study {study_uid} in Orthanc",
        plugin.diagnose,
        fail_fast=lambda: plugin.problem(),
    )
    results = _instances_from(orthanc, sid, CDS_AET) + _instances_from(orthanc, sid, None)
    assert results, "results are in the study but none came from the plugin's AE or STOW-RS"
    problems = []
    with orthanc.client() as c:
        for inst in results:
            path = tmp / f"{inst['ID']}.dcm"
            path.write_bytes(c.get(f"/instances/{inst['ID']}/file").content)
            ds = dcmread(path)
            assert ds.StudyInstanceUID == study_uid
            if ds.Modality in ("SEG", "SR"):
                refs = dicom_refs(ds)
                assert refs & sources, (
                    f"{ds.Modality} {ds.SOPInstanceUID} references none of the source instances "
                    f"(references {sorted(refs)[:5]})"
                )
            problems.append(_validate_dicom(path))
    problems = [p for p in problems if p]
    assert not problems, "plugin output fails DICOM validation:\n" + "\n".join(problems)
    return sid, results


def _check_exactly_once(plugin: Plugin, sid: str, sources: set[str], results: list[dict[str, Any]]) -> None:
    orthanc = plugin.orthanc
    # After the results arrived the study is stable again: let the Lua callback run, then count.
    wait_for(
        lambda: orthanc.client().get(f"/studies/{sid}").json().get("IsStable"), 30, "study stable after results"
    )
    time.sleep(2.0)
    sent = Counter()
    with orthanc.client() as c:
        orthanc_ids = {i["ID"]: i["MainDicomTags"]["SOPInstanceUID"] for i in c.get(f"/studies/{sid}/instances").json()}
    for job in _routing_jobs(orthanc):
        if job.get("State") != "Success":
            continue
        for rid in job["Content"].get("ParentResources", []):
            if rid in orthanc_ids:
                sent[orthanc_ids[rid]] += 1
    result_uids = {r["MainDicomTags"]["SOPInstanceUID"] for r in results}
    assert not (set(sent) & result_uids), f"results were routed back to the plugin: {sorted(set(sent) & result_uids)}"
    assert set(sent) == sources and set(sent.values()) == {1}, (
        f"each source instance must be routed exactly once; routed counts {dict(sent)}"
    )


def _fhir_search(plugin: Plugin, rtype: str, params: dict[str, str]) -> list[dict[str, Any]]:
    with plugin.fhir.client() as c:
        r = c.get(f"/{rtype}", params=params)
        assert r.status_code == 200, f"GET {rtype}?{params}: {r.status_code} {r.text[:300]}"
        return [e["resource"] for e in r.json().get("entry", [])]


def _check_fhir(plugin: Plugin, need_diagnostic_report: bool, study_uid: str | None = None) -> list[dict[str, Any]]:
    subject = {"subject": f"Patient/{plugin.fhir_patient_id}"}
    risks = wait_for(
        lambda: [
            r
            for r in _fhir_search(plugin, "RiskAssessment", subject)
            if any(i.get("system") == RESULT_SYSTEM for i in r.get("identifier", []))
        ],
        RESULT_TIMEOUT_S,
        f"RiskAssessment?subject=Patient/{plugin.fhir_patient_id} written by the plugin",
        plugin.diagnose,
        fail_fast=lambda: plugin.problem(),
    )
    if study_uid:
        def for_study(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rs if study_uid in json.dumps(r.get("basis", []))]

        deadline = time.monotonic() + 30
        while not for_study(_fhir_search(plugin, "RiskAssessment", subject)):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        else:
            deadline = None
        if deadline is not None:
            elsewhere = for_study(_fhir_search(plugin, "RiskAssessment", {"_count": "1000"}))
            where = (
                f"it exists with subject {elsewhere[0].get('subject')} (a logical reference: "
                "RiskAssessment?subject=Patient/<id> cannot find it)" if elsewhere else "it is not on the server"
            )
            pytest.fail(
                f"no RiskAssessment for study {study_uid} under RiskAssessment?subject=Patient/{plugin.fhir_patient_id}: "
                f"{where}",
                pytrace=False,
            )
    for r in risks:
        assert r.get("method"), f"RiskAssessment {r['id']} lacks method (model and version)"
        assert r.get("basis"), f"RiskAssessment {r['id']} lacks basis (inputs used)"
        for p in r.get("prediction", []):
            if "probabilityDecimal" in p:
                assert 0.0 <= p["probabilityDecimal"] <= 1.0, p
    idents = {(i["system"], i["value"]) for r in risks for i in r["identifier"]}
    assert len(idents) == len(risks), "two RiskAssessments share an identifier: conditional create failed"
    if need_diagnostic_report:
        reports = wait_for(
            lambda: [
                r
                for r in _fhir_search(plugin, "DiagnosticReport", subject)
                if any(i.get("system") == RESULT_SYSTEM for i in r.get("identifier", []))
            ],
            RESULT_TIMEOUT_S,
            "DiagnosticReport (clinician PDF) written by the plugin",
            plugin.diagnose,
            fail_fast=lambda: plugin.problem(("study", "case")),
        )
        assert any(
            f.get("contentType") == "application/pdf" for r in reports for f in r.get("presentedForm", [])
        ), "the plugin's DiagnosticReport carries no PDF presentedForm"
        target_keys = {("RiskAssessment", v) for s, v in idents} | {
            ("DiagnosticReport", i["value"]) for r in reports for i in r["identifier"] if i["system"] == RESULT_SYSTEM
        }

        def provenances() -> list[dict[str, Any]]:
            out = []
            for p in _fhir_search(plugin, "Provenance", {"_count": "500"}):
                for t in p.get("target", []):
                    ident = t.get("identifier", {}).get("value")
                    ref = t.get("reference", "")
                    if (t.get("type"), ident) in target_keys or any(ref.endswith(f"/{r['id']}") for r in risks + reports):
                        out.append(p)
                        break
            return out

        wait_for(provenances, 60, "a Provenance targeting the plugin's RiskAssessment/DiagnosticReport", plugin.diagnose)
    return risks


def _no_dead_letters(plugin: Plugin) -> None:
    new = dead_ids(plugin.serve) - plugin.earlier_dead
    assert not new, f"dead letters {sorted(new)} in cds status:\n{plugin.serve.status_text()[-3000:]}"


@pytest.fixture
def fresh(plugin: Plugin) -> Plugin:
    """The module's plugin, with what earlier tests dead-lettered set aside."""
    plugin.earlier_dead = dead_ids(plugin.serve)
    return plugin


def test_mammography_study_end_to_end(fresh: Plugin, tmp_path: Path):
    plugin = fresh
    from synthetic.phantoms.mammography import generate_exam

    exam = generate_exam(tmp_path / "mg", seed=11, patient=_patient_ref(plugin), force_label="invasive")
    files = [Path(i.path) for i in exam.images]
    sources = {i.sop_instance_uid for i in exam.images}
    assert len(files) == 4
    storescu(files, plugin.orthanc.dicom_port, plugin.orthanc.aet, calling_aet=SOURCE_AET, host=plugin.orthanc.dicom_host)

    sid, results = _check_results_in_orthanc(plugin, exam.study_instance_uid, sources, {"SEG", "SR"}, tmp_path)
    _check_fhir(plugin, need_diagnostic_report=True, study_uid=exam.study_instance_uid)
    _check_exactly_once(plugin, sid, sources, results)
    _no_dead_letters(plugin)


def test_slide_study_end_to_end(fresh: Plugin, tmp_path: Path):
    plugin = fresh
    from synthetic.phantoms.slides import generate_slide

    slide = generate_slide(tmp_path / "sm", seed=12, patient=_patient_ref(plugin), metastasis=True, size=2048)
    files = [Path(p) for p in slide.level_paths]
    sources = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    study_uid = slide.study_instance_uid
    storescu(files, plugin.orthanc.dicom_port, plugin.orthanc.aet, calling_aet=SOURCE_AET, host=plugin.orthanc.dicom_host)
    sid, results = _check_results_in_orthanc(plugin, study_uid, sources, {"SR"}, tmp_path)
    _check_fhir(plugin, need_diagnostic_report=False, study_uid=study_uid)
    _check_exactly_once(plugin, sid, sources, results)
    _no_dead_letters(plugin)


def test_allow_list_refuses_unknown_calling_ae(plugin: Plugin):
    if missing_tools(["echoscu"]):
        pytest.fail("dcmtk echoscu missing: run scripts/install_peers.sh", pytrace=False)
    ok = run_tool(["echoscu", "-aet", plugin.orthanc.aet, "-aec", CDS_AET, LOOPBACK, str(plugin.serve.port)])
    assert ok.returncode == 0, f"C-ECHO from the allowed AE {plugin.orthanc.aet} failed: {ok.stdout} {ok.stderr}"
    bad = run_tool(["echoscu", "-aet", "INTRUDER", "-aec", CDS_AET, LOOPBACK, str(plugin.serve.port)])
    assert bad.returncode != 0, "an association from AE INTRUDER (not on CDS_ALLOWED_AES) was accepted"
    assert "reject" in (bad.stdout + bad.stderr).lower(), f"expected an association rejection: {bad.stderr}"
    text = plugin.serve.status_text()
    assert "INTRUDER" in text, f"the refused association is not visible in cds status:\n{text[-3000:]}"


def _dead_outputs(serve: CdsServe) -> list[Any]:
    from cds.store import Store

    db = serve.data_dir / "cds.sqlite3"
    if not db.exists():
        return []
    store = Store(f"sqlite:///{db}")
    try:
        return store.outbox_items("dead")
    finally:
        store.close()


def _send_mg_direct(serve: CdsServe, tmp: Path, patient, seed: int) -> set[str]:
    from synthetic.phantoms.mammography import generate_exam

    exam = generate_exam(tmp, seed=seed, patient=patient, force_label="invasive")
    storescu([Path(i.path) for i in exam.images], serve.port, serve.ae_title, calling_aet=SOURCE_AET)
    return {i.sop_instance_uid for i in exam.images}


# How to make Orthanc 1.10.1 *answer* a C-STORE with a failure status (not just drop it):
# - a Lua ReceivedInstanceFilter returning false discards the instance but answers Success;
# - an unknown AE with DicomAlwaysAllowStore=false, or a storage error, aborts the association
#   (the plugin rightly treats an abort as transient and retries);
# - a full store that cannot recycle answers 0xA700 "Refused: Out of Resources": one protected
#   patient already stored and MaximumPatientCount=1. That is the refusal used here.
STRICT_ORTHANC = {"MaximumPatientCount": 1}


def _fill_orthanc_with_protected_patient(orthanc: OrthancServer, tmp: Path) -> None:
    from conformance import samples

    other = samples.mg_study(tmp / "occupant", patient_id=f"OCCUPANT-{uuid.uuid4().hex[:6]}")[:1]
    storescu(other, orthanc.dicom_port, orthanc.aet)
    with orthanc.client() as c:
        (pid,) = c.get("/patients").json()
        c.put(f"/patients/{pid}/protected", content="1").raise_for_status()


MAX_ATTEMPTS = 3  # CDS_JOB_MAX_ATTEMPTS / CDS_OUTBOX_MAX_ATTEMPTS given to the plugin below


def _retrying_forever(serve: CdsServe) -> str | None:
    from cds.store import Store

    db = serve.data_dir / "cds.sqlite3"
    if not db.exists():
        return None
    store = Store(f"sqlite:///{db}")
    try:
        for o in store.outbox_items(limit=50):
            if o.kind == "dicom" and o.state != "dead" and o.attempts > MAX_ATTEMPTS + 2:
                return (
                    f"outbox {o.id} (dicom -> {o.destination}) is still {o.state!r} after {o.attempts} attempts "
                    f"(last error: {o.last_error}); the dispatcher does not dead-letter a C-STORE that the "
                    f"PACS keeps refusing, although max attempts is {MAX_ATTEMPTS}"
                )
    finally:
        store.close()
    return None


def test_orthanc_refusing_results_ends_in_dead_letter(conf_config, tmp_path: Path):
    from cds.contracts.domain import PatientRef

    strict = OrthancServer(tmp_path / "orthanc-strict", aet="STRICTPACS", stable_age=60, extra_config=STRICT_ORTHANC)
    try:
        strict.start()
    except Exception as exc:  # noqa: BLE001 - PeerUnavailable or start failure, reported as such
        unavailable(conf_config, f"cannot start a second Orthanc for the refusal test: {exc}")
    try:
        _fill_orthanc_with_protected_patient(strict, tmp_path)
        peer = OrthancPeer(strict.base_url, None, strict.aet, LOOPBACK, strict.dicom_port, strict)
        env = plugin_env(
            peer.aet, peer.dicom_host, peer.dicom_port, None,
            CDS_JOB_MAX_ATTEMPTS=str(MAX_ATTEMPTS), CDS_OUTBOX_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        )
        with CdsServe(tmp_path / "cds", env, ae_title=CDS_AET) as serve:
            patient = PatientRef(patient_id=f"E2E-{uuid.uuid4().hex[:8].upper()}", issuer="BREASTCDS", sex="F")
            _send_mg_direct(serve, tmp_path / "mg", patient, seed=21)
            dead = wait_for(
                lambda: [o for o in _dead_outputs(serve) if o.kind == "dicom"],
                RESULT_TIMEOUT_S,
                "a dead-lettered DICOM output after Orthanc refused the C-STORE",
                lambda: serve.status_text()[-4000:] + "\n" + serve.log_tail(40),
                fail_fast=lambda: plugin_problem(serve) or _retrying_forever(serve),
            )
            assert all(o.last_error for o in dead), f"dead outputs without a reason: {dead}"
            text = serve.status_text()
            assert "output dead" in text, f"dead output not shown by cds status:\n{text[-3000:]}"
            reason = dead[0].last_error
            assert reason.split()[0] in text, f"the reason {reason!r} is not visible in cds status"
        with strict.client() as c:
            assert not any(
                s["MainDicomTags"].get("Modality") in ("SEG", "SR") for s in c.get("/series", params={"expand": ""}).json()
            ), "Orthanc stored results although its filter refused them"
    finally:
        strict.stop()


def test_fhir_4xx_ends_in_dead_letter(conf_config, fhir_peer: FhirPeer, orthanc_peer: OrthancPeer, tmp_path: Path):
    if fhir_peer.local is None:
        pytest.skip(
            "forcing 4xx on writes needs the local FHIR peer's test hook (/$test/fail-next); "
            "an external server cannot be made to refuse valid resources"
        )
    from cds.contracts.domain import PatientRef

    patient = PatientRef(patient_id=f"E2E-{uuid.uuid4().hex[:8].upper()}", issuer="BREASTCDS",
                         name="Phantom^Fourxx", birth_date="19640312", sex="F")
    seed(fhir_peer, patient)
    env = plugin_env(orthanc_peer.aet, "", orthanc_peer.dicom_port, fhir_peer.base_url, CDS_PACS_AE_TITLE="")
    with CdsServe(tmp_path / "cds", env, ae_title=CDS_AET) as serve:
        fhir_peer.local.fail_next(count=10_000, status=422, methods=["POST", "PUT"])
        try:
            _send_mg_direct(serve, tmp_path / "mg", patient, seed=31)
            dead = wait_for(
                lambda: [o for o in _dead_outputs(serve) if o.kind == "fhir"],
                RESULT_TIMEOUT_S,
                "a dead-lettered FHIR output after the server answered 422",
                lambda: serve.status_text()[-4000:] + "\n" + serve.log_tail(40),
                fail_fast=lambda: plugin_problem(serve),
            )
        finally:
            fhir_peer.local.fail_next(count=0)
        assert any("422" in (o.last_error or "") for o in dead), (
            f"the dead letter does not name the 422: {[o.last_error for o in dead]}"
        )
        text = serve.status_text()
        assert "output dead" in text and "422" in text, f"FHIR dead letter not visible in cds status:\n{text[-3000:]}"
        statuses = [r["status"] for r in fhir_peer.local.requests() if r["method"] == "POST"]
        assert 422 in statuses
