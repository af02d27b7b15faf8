"""bench/e2e: latency from "study stored in Orthanc and stable" to "results in Orthanc and FHIR".

For a 4-view mammography study and for a slide, each run sends a fresh study into Orthanc with
dcmtk storescu; Orthanc's routing recipe (conformance/orthanc/) sends it to `cds serve` once the
study is stable; the plugin pulls FHIR context, runs the models and writes results back. The
latency of one run is

    t(results present in Orthanc AND in FHIR) - t(last instance stored in Orthanc) - StableAge

where the last instance is stored when storescu returns (C-STORE responses are sent after
Orthanc has written the instance), and StableAge is Orthanc's configured stable age (the wait a
site chooses, not work done by anyone). The plugin's own stable age (CDS_STABLE_AGE_S) is part of
the latency: it is set to --plugin-stable-age.

The peer measured in the same run is the routing alone: the same Orthanc and recipe sending the
same studies to dcmtk storescp (no analysis). The ratio plugin / routing-only says how much the
plugin adds on top of what Orthanc itself costs.

    .venv/bin/python bench/e2e.py --runs 10            # both kinds
    .venv/bin/python bench/e2e.py --kind mg --runs 20

Not part of the test run. Needs the peers (scripts/install_peers.sh) and trained models.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from conformance.e2e_support import (  # noqa: E402
    RESULT_SYSTEM,
    plugin_env,
    plugin_problem,
    seed_fhir,
)
from conformance.peers.cds_serve import CdsServe  # noqa: E402
from conformance.peers.dcmtk import StoreScp, storescu  # noqa: E402
from conformance.peers.fhir_server import FhirServer  # noqa: E402
from conformance.peers.orthanc import DICOMWEB_PLUGIN, OrthancServer  # noqa: E402
from conformance.peers.process import LOOPBACK  # noqa: E402

log = logging.getLogger("bench.e2e")

RECIPE = ROOT / "conformance" / "orthanc"
GOALS_P50_S = {("mg", "dicom"): 1.0, ("mg", "all"): 1.5, ("slide", "all"): 2.5}  # issue 17
GOAL_MG_DICOM_RATIO = 1.4  # SEG + SR at most 1.4x the routing-only time
POLL_S = 0.05


@dataclass
class Study:
    kind: str
    study_uid: str
    files: list[Path]
    sop_uids: set[str]
    patient: Any = None


@dataclass
class Series:
    """Latencies of one kind (seconds) for one target (plugin or routing-only peer)."""

    values: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        v = sorted(self.values)
        if not v:
            return float("nan")
        k = (len(v) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (k - lo)

    def summary(self) -> dict[str, float]:
        return {
            "n": len(self.values),
            "p50": self.pct(0.5),
            "p95": self.pct(0.95),
            "min": min(self.values) if self.values else float("nan"),
            "max": max(self.values) if self.values else float("nan"),
            "mean": statistics.fmean(self.values) if self.values else float("nan"),
        }


def make_studies(kind: str, n: int, folder: Path, slide_size: int) -> list[Study]:
    """n fresh studies of one kind, each for its own synthetic patient (new UIDs per run).

    One patient per run: every study of a patient re-evaluates the patient's case (recurrence
    model, PDF), so runs on one patient would measure a growing case, not one study.
    """
    from cds.contracts.domain import PatientRef
    from synthetic.phantoms.mammography import generate_exam
    from synthetic.phantoms.slides import generate_slide

    out = []
    for i in range(n):
        uid = f"2.25.{uuid.uuid4().int}"
        patient = PatientRef(patient_id=f"BENCH-{uuid.uuid4().hex[:8].upper()}", issuer="BREASTCDS",
                             name="Phantom^Bench", birth_date="19640312", sex="F")
        if kind == "mg":
            exam = generate_exam(folder / f"mg{i}", seed=100 + i, patient=patient, study_uid=uid,
                                 force_label="invasive")
            files = [Path(im.path) for im in exam.images]
            sops = {im.sop_instance_uid for im in exam.images}
        else:
            slide = generate_slide(folder / f"sm{i}", seed=200 + i, patient=patient, study_uid=uid,
                                   metastasis=True, size=slide_size)
            files = [Path(p) for p in slide.level_paths]
            from pydicom import dcmread

            sops = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
        out.append(Study(kind, uid, files, sops, patient))
    return out


def store_url(serve: CdsServe) -> str:
    """The plugin's store: PostgreSQL in the split deployment, else its SQLite file."""
    return serve.extra_env.get("CDS_DATABASE_URL") or f"sqlite:///{serve.data_dir / 'cds.sqlite3'}"


def wait_idle(serve: CdsServe, timeout_s: float) -> None:
    """Wait until the plugin has no job queued or running and nothing left to deliver."""
    from cds.store import Store

    store = Store(store_url(serve))
    try:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            c = store.counts()
            busy_jobs = {k: v for k, v in c.get("jobs", {}).items() if k not in ("done", "dead")}
            busy_out = {k: v for k, v in c.get("outbox", {}).items() if k not in ("delivered", "dead")}
            if not busy_jobs and not busy_out:
                return
            time.sleep(0.2)
        raise TimeoutError(f"plugin still busy after {timeout_s:.0f} s: {store.counts()}")
    finally:
        store.close()


def orthanc_study_id(client: httpx.Client, study_uid: str) -> str | None:
    ids = [x["ID"] for x in client.post("/tools/lookup", content=study_uid).json() if x["Type"] == "Study"]
    return ids[0] if ids else None


def result_modalities(client: httpx.Client, study_uid: str) -> set[str]:
    sid = orthanc_study_id(client, study_uid)
    if not sid:
        return set()
    return {s["MainDicomTags"].get("Modality") for s in client.get(f"/studies/{sid}/series").json()}


def fhir_has_result(fhir: httpx.Client, study_uid: str) -> bool:
    """A RiskAssessment by the plugin whose basis names this study."""
    # Not filtered by subject: a study-level RiskAssessment may carry a logical (identifier)
    # subject rather than Patient/<id>; the bench measures arrival, the tests check the subject.
    r = fhir.get("/RiskAssessment", params={"_count": "1000"})
    for e in r.json().get("entry", []):
        res = e["resource"]
        if not any(i.get("system") == RESULT_SYSTEM for i in res.get("identifier", [])):
            continue
        if study_uid in json.dumps(res.get("basis", [])):
            return True
    return False


def plugin_idle(serve: CdsServe) -> bool:
    """No job queued or running and nothing left to deliver: everything is out."""
    from cds.store import Store

    store = Store(store_url(serve))
    try:
        c = store.counts()
    finally:
        store.close()
    busy_jobs = [k for k in c.get("jobs", {}) if k not in ("done", "dead")]
    busy_out = [k for k in c.get("outbox", {}) if k not in ("delivered", "dead")]
    return not busy_jobs and not busy_out


def time_plugin_run(study: Study, orthanc: OrthancServer, fhir_url: str,
                    serve: CdsServe, need: set[str], timeout_s: float) -> tuple[float, float]:
    """(SEG and SR back in Orthanc, everything delivered) in seconds after the study was stable.

    Everything: the study's RiskAssessment in FHIR and the plugin idle again, i.e. the case job
    (recurrence, PDF in its DiagnosticReport, Provenance) run and all of its outputs delivered.
    """
    storescu(study.files, orthanc.dicom_port, orthanc.aet, calling_aet="MODALITY1")
    t_stored = time.perf_counter()
    in_orthanc = in_fhir = None
    last_check = 0.0
    with orthanc.client() as oc, httpx.Client(base_url=fhir_url, timeout=30) as fc:
        while time.perf_counter() - t_stored < timeout_s:
            now = time.perf_counter()
            if in_orthanc is None and need <= result_modalities(oc, study.study_uid):
                in_orthanc = time.perf_counter()
            if in_fhir is None and fhir_has_result(fc, study.study_uid):
                in_fhir = time.perf_counter()
            if in_orthanc is not None and in_fhir is not None and plugin_idle(serve):
                done = time.perf_counter()
                return in_orthanc - t_stored - orthanc.stable_age, done - t_stored - orthanc.stable_age
            if now - last_check > 2.0:
                last_check = now
                problem = plugin_problem(serve, dead_outputs=False)
                if problem:
                    raise RuntimeError(f"{study.kind} study {study.study_uid}: {problem}")
            time.sleep(POLL_S)
    raise TimeoutError(
        f"{study.kind} study {study.study_uid}: results not complete after {timeout_s:.0f} s "
        f"(Orthanc {'yes' if in_orthanc else 'no'}, FHIR {'yes' if in_fhir else 'no'}); "
        f"plugin log: {serve.log_path}"
    )


def time_routing_run(study: Study, orthanc: OrthancServer, scp: StoreScp, timeout_s: float) -> float:
    storescu(study.files, orthanc.dicom_port, orthanc.aet, calling_aet="MODALITY1")
    t_stored = time.perf_counter()
    while time.perf_counter() - t_stored < timeout_s:
        if len(scp.received_sop_uids(study.study_uid)) >= len(study.sop_uids):
            return time.perf_counter() - t_stored - orthanc.stable_age
        time.sleep(POLL_S)
    raise TimeoutError(f"routing-only: {study.study_uid} not received by storescp after {timeout_s:.0f} s")


def point_cds(orthanc: OrthancServer, port: int) -> None:
    with orthanc.client() as c:
        c.put("/modalities/cds", json={"AET": "CDS", "Host": LOOPBACK, "Port": port}).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per kind (>= 10 for p95)")
    ap.add_argument("--kind", choices=("mg", "slide", "both"), default="both")
    ap.add_argument("--orthanc-stable-age", type=int, default=1, help="Orthanc StableAge (s, integer)")
    ap.add_argument("--plugin-stable-age", type=float, default=0.5, help="CDS_STABLE_AGE_S")
    ap.add_argument("--slide-size", type=int, default=4096, help="slide phantom base level size (px)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-run limit (s)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "e2e.json")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--split", action="store_true",
                    help="run the plugin as `cds listen`, `cds work` and `cds dispatch` processes on "
                         "PostgreSQL (conformance/peers/postgres.py) instead of one `cds serve`")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    kinds = ["mg", "slide"] if args.kind == "both" else [args.kind]
    # SR is always written; the MG phantoms are forced invasive, so their lesions give a SEG too;
    # a slide's SEG (attention map) is always written.
    need = {"mg": {"SR", "SEG"}, "slide": {"SR", "SEG"}}
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cds-bench-e2e-"))
    print(f"bench/e2e: {args.runs} run(s) per kind {kinds}; Orthanc StableAge {args.orthanc_stable_age} s "
          f"(subtracted), CDS_STABLE_AGE_S {args.plugin_stable_age} s (included); work {work}")
    studies = {k: make_studies(k, args.runs * 2, work / "studies", args.slide_size) for k in kinds}

    plugin_times = {k: Series() for k in kinds}  # everything delivered
    dicom_times = {k: Series() for k in kinds}  # SEG and SR back in Orthanc
    routing_times = {k: Series() for k in kinds}
    try:
        run_all(args, kinds, need, work, studies, (dicom_times, plugin_times), routing_times)
    except (RuntimeError, TimeoutError) as exc:
        print(f"bench/e2e: FAILED: {exc}", file=sys.stderr)
        return 1
    return report(args, kinds, dicom_times, plugin_times, routing_times)


def run_all(args, kinds, need, work, studies, plugin_series, routing_times) -> None:
    """Start the peers, measure routing-only then the plugin, stop everything."""
    with FhirServer(workdir=work / "fhir", test_hooks=False) as fhir, \
            StoreScp(work / "storescp", aet="CDS") as scp, \
            OrthancServer(work / "orthanc", modalities={"cds": ("CDS", LOOPBACK, scp.port)},
                          lua_scripts=[RECIPE / "route_to_cds.lua"], plugins=[DICOMWEB_PLUGIN],
                          stable_age=args.orthanc_stable_age, config_template=RECIPE / "orthanc.json") as orthanc:
        for k in kinds:
            for st in studies[k][args.runs:]:
                seed_fhir(fhir.base_url, st.patient)
        # Peer: routing alone (Orthanc -> storescp), on the first half of the studies.
        for k in kinds:
            for st in studies[k][: args.runs]:
                routing_times[k].values.append(time_routing_run(st, orthanc, scp, args.timeout))
        env = plugin_env("ORTHANC", LOOPBACK, orthanc.dicom_port, fhir.base_url,
                         CDS_STABLE_AGE_S=str(args.plugin_stable_age),
                         CDS_STABLE_CHECK_INTERVAL_S="0.1", CDS_LOG_LEVEL="WARNING",
                         # a model a site switched off stays off here (e.g. crossmodal)
                         **{k: v for k, v in os.environ.items() if k == "CDS_DISABLED_MODELS"})
        with contextlib.ExitStack() as stack:
            serve = plugin(stack, args.split, work, env)
            point_cds(orthanc, serve.port)
            for k in kinds:
                for i, st in enumerate(studies[k][args.runs:], start=1):
                    wait_idle(serve, args.timeout)  # each run starts on an idle plugin
                    dicom, everything = time_plugin_run(st, orthanc, fhir.base_url, serve, need[k], args.timeout)
                    plugin_series[0][k].values.append(dicom)
                    plugin_series[1][k].values.append(everything)
                    print(f"  {k} run {i:2d}: SEG+SR {dicom:6.2f} s, everything {everything:6.2f} s", flush=True)
            dead = serve.status_text().count("output dead")
            if dead:
                print(f"WARNING: {dead} output(s) dead-lettered during the runs (see `cds status` in {serve.data_dir})")


def plugin(stack: contextlib.ExitStack, split: bool, work: Path, env: dict[str, str]) -> CdsServe:
    """`cds serve`, or (``split``) `cds listen` with `cds work` (study and slide lanes; case lane)
    and `cds dispatch` beside it on one
    PostgreSQL store and one data folder, as deploy/k8s runs them; all stopped with ``stack``."""
    if not split:
        return stack.enter_context(CdsServe(work / "cds", env, ae_title="CDS"))
    from conformance.peers.postgres import PostgresServer

    pg = stack.enter_context(PostgresServer())
    env = {**env, "CDS_DATABASE_URL": pg.create_database("e2e")}
    main = [sys.executable, "-c", "from app.cli import main; main()"]
    serve = stack.enter_context(CdsServe(work / "cds", env, ae_title="CDS", command=[*main, "listen"]))
    for part in (["work", "--lane", "study", "--lane", "slide"], ["work", "--lane", "case"], ["dispatch"]):
        log = stack.enter_context(open(work / f"cds-{'-'.join(part)}.log", "ab"))  # noqa: SIM115 - closed by the stack
        proc = subprocess.Popen([*main, *part], env=serve.environment(), cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(_stop, proc)
    return serve


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def report(args, kinds, dicom_times, plugin_times, routing_times) -> int:
    """Print the table (plugin vs routing-only peer, ratios, goals) and write the JSON."""
    print()
    print(f"{'kind':6} {'target':40} {'n':>3} {'p50 s':>7} {'p95 s':>7} {'min s':>7} {'max s':>7}")
    report: dict[str, Any] = {"runs": args.runs, "orthanc_stable_age_s": args.orthanc_stable_age,
                              "plugin_stable_age_s": args.plugin_stable_age, "kinds": {}, "goals": {}}
    for k in kinds:
        d, p, r = dicom_times[k].summary(), plugin_times[k].summary(), routing_times[k].summary()
        for name, s in (("cds: SEG + SR back in Orthanc", d), ("cds: everything delivered (FHIR, PDF)", p),
                        ("routing only (Orthanc->storescp)", r)):
            print(f"{k:6} {name:40} {s['n']:3d} {s['p50']:7.2f} {s['p95']:7.2f} {s['min']:7.2f} {s['max']:7.2f}")
        ratio_d = d["p50"] / r["p50"] if r["p50"] > 0 else float("inf")
        ratio = p["p50"] / r["p50"] if r["p50"] > 0 else float("inf")
        print(f"{k:6} ratio p50 / routing-only: SEG+SR {ratio_d:.2f}x, everything {ratio:.2f}x")
        report["kinds"][k] = {"seg_sr": d, "everything": p, "routing_only": r, "ratio_p50_seg_sr": ratio_d,
                              "ratio_p50": ratio, "seg_sr_values": dicom_times[k].values,
                              "plugin_values": plugin_times[k].values, "routing_values": routing_times[k].values}
        for (kind, what), goal in GOALS_P50_S.items():
            if kind == k:
                got = (d if what == "dicom" else p)["p50"]
                met = got <= goal
                report["goals"][f"{kind}_{what}_p50_le_{goal}"] = met
                print(f"goal: {kind} {'SEG+SR' if what == 'dicom' else 'everything'} p50 <= {goal:.1f} s: "
                      f"{got:.2f} s, {'met' if met else 'NOT met'}")
        if k == "mg":
            met = ratio_d <= GOAL_MG_DICOM_RATIO
            report["goals"]["mg_seg_sr_ratio"] = met
            print(f"goal: mg SEG+SR <= {GOAL_MG_DICOM_RATIO}x routing-only: {'met' if met else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
