"""Helpers shared by the end-to-end tests and bench/e2e.py (no pytest import).

WHY separate: the benchmark drives the same deployment as the end-to-end tests (Orthanc routing to
`cds serve`, FHIR seeded with the synthetic patient) and must detect the same "cannot produce
results" conditions instead of waiting for a timeout.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx

from conformance.peers.cds_serve import CdsServe

RESULT_SYSTEM = "urn:breast-cds:result"

MODEL_NOT_LOADED = re.compile(r"model (\S+) not loaded: (.*)")


def dead_ids(serve: CdsServe) -> set[tuple[str, int]]:
    """("job"|"output", id) of everything dead-lettered so far (to ignore earlier tests' failures)."""
    from cds.store import Store

    db = serve.data_dir / "cds.sqlite3"
    if not db.exists():
        return set()
    store = Store(f"sqlite:///{db}")
    try:
        return {("job", j.id) for j in store.jobs("dead", limit=1000)} | {
            ("output", o.id) for o in store.outbox_items("dead", limit=1000)
        }
    finally:
        store.close()


def plugin_problem(
    serve: CdsServe,
    kinds: tuple[str, ...] = ("study",),
    dead_outputs: bool = True,
    ignore: set[tuple[str, int]] = frozenset(),
) -> str | None:
    """A reason the plugin cannot produce results any more: a dead job or output, or no model."""
    from cds.store import Store

    db = serve.data_dir / "cds.sqlite3"
    if not db.exists():
        return None
    store = Store(f"sqlite:///{db}")
    try:
        dead = [j for j in store.jobs("dead", limit=20) if ("job", j.id) not in ignore]
        if dead:
            return "dead job(s) in the plugin: " + "; ".join(f"job {j.id} {j.kind}: {j.last_error}" for j in dead)
        dead_out = (
            [o for o in store.outbox_items("dead", limit=20) if ("output", o.id) not in ignore]
            if dead_outputs
            else []
        )
        if dead_out:
            return "dead-lettered output(s) in the plugin: " + "; ".join(
                f"output {o.id} {o.kind} -> {o.destination} ({o.payload_path.name}): {o.last_error}" for o in dead_out
            )
        for r in store.results(limit=50):
            if r.status in ("no_model", "error", "failed") and r.kind in kinds:
                not_loaded = "; ".join(
                    f"{m.group(1)}: {m.group(2)}" for m in MODEL_NOT_LOADED.finditer(serve.log_tail(400))
                )
                return f"{r.kind} {r.study_uid or r.patient_key} {r.modality or ''}: {r.status}: {r.summary} (models not loaded: {not_loaded or 'none'})"
    finally:
        store.close()
    return None


class SeedError(RuntimeError):
    """The FHIR server did not accept the synthetic patient's record."""


def seed_fhir(fhir_base_url: str, patient: Any) -> str:
    """Load the synthetic patient's Patient, Observations and US report; return the Patient id.

    Ids get a random suffix (PUT in one transaction) so that runs against a shared server do not
    overwrite each other's resources.
    """
    from cds.contracts.settings import Settings
    from synthetic.phantoms.clinical import clinical_resources

    resources = clinical_resources(Settings(), patient=patient)
    suffix = uuid.uuid4().hex[:8]
    ids = {}
    for r in resources:
        ids[f"{r['resourceType']}/{r['id']}"] = f"{r['resourceType']}/{r['id']}-{suffix}"
    text = json.dumps(resources)
    for old, new in ids.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    resources = json.loads(text)
    for r in resources:
        r["id"] = f"{r['id']}-{suffix}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in resources
        ],
    }
    resp = httpx.post(
        fhir_base_url, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=60
    )
    if resp.status_code != 200:
        raise SeedError(f"seeding FHIR at {fhir_base_url} with the synthetic patient: "
                        f"{resp.status_code} {resp.text[:500]}")
    return next(r["id"] for r in resources if r["resourceType"] == "Patient")


def plugin_env(
    pacs_aet: str, pacs_host: str, pacs_port: int, fhir_url: str | None, **extra: str
) -> dict[str, str]:
    """CDS_* settings for a fast test/bench deployment (short stable age, quick dead-lettering)."""
    env = {
        "CDS_STABLE_AGE_S": "1",
        "CDS_STABLE_CHECK_INTERVAL_S": "0.5",
        "CDS_JOB_MAX_ATTEMPTS": "2",
        "CDS_JOB_BACKOFF_BASE_S": "0.5",
        "CDS_JOB_BACKOFF_MAX_S": "2",
        "CDS_WORKERS": "1",
        "CDS_LOG_LEVEL": "INFO",
        "CDS_PACS_AE_TITLE": pacs_aet,
        "CDS_PACS_HOST": pacs_host,
        "CDS_PACS_PORT": str(pacs_port),
        "CDS_FHIR_BASE_URL": fhir_url or "",
        "OMP_NUM_THREADS": "2",
    }
    env.update(extra)
    return env
