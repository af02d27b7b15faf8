"""Shared builders for the HTTP tests: a store with known rows, an app, API tokens per role."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from cds.contracts.domain import InstanceRecord, PatientRef
from cds.contracts.handoffs import CaseJobPayload, NewOutput, NewResult
from cds.contracts.review import Role
from cds.contracts.settings import Settings
from cds.store import Store
from listeners.http.app import create_app
from listeners.http.context import HttpContext
from listeners.http.tokens import create_token

PATIENT = PatientRef(patient_id="HTTP-TEST-1", issuer="TEST", name="Test^Person", birth_date="19700101", sex="F")


def make_settings(tmp: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp / "data", output_dir=tmp / "out", http_api_tokens_file=tmp / "tokens",
                    **extra)  # type: ignore[arg-type]


def tokens(settings: Settings) -> dict[Role, str]:
    """One API token per role, written to the settings' tokens file."""
    assert settings.http_api_tokens_file is not None
    return {role: create_token(settings.http_api_tokens_file, [role], f"test-{role.value}") for role in Role}


def client(ctx: HttpContext) -> TestClient:
    return TestClient(create_app(ctx), base_url="http://127.0.0.1")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fill(store: Store, tmp: Path) -> dict[str, int]:
    """Known rows: 2 instances (1 duplicate), 1 refusal, a dead and a done job, a dead output, results."""
    for i, size in ((1, 1000), (2, 500)):
        store.record_instance(InstanceRecord(
            sop_instance_uid=f"2.25.90{i}", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2", study_instance_uid="2.25.900",
            series_instance_uid="2.25.9000", modality="MG", path=tmp / f"i{i}.dcm", size_bytes=size), PATIENT)
    store.record_instance(InstanceRecord(
        sop_instance_uid="2.25.901", sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2", study_instance_uid="2.25.900",
        series_instance_uid="2.25.9000", modality="MG", path=tmp / "i1.dcm", size_bytes=1000), PATIENT)
    store.record_rejection("MODALITY", "2.25.999", 0xC000, "cannot parse the dataset")
    store.set_case(PATIENT.key, "fp", None)
    dead = store.enqueue("case", "case:dead", CaseJobPayload(patient_key=PATIENT.key), max_attempts=1)
    claimed = store.claim_job("w", 60)
    assert claimed is not None and claimed.id == dead
    store.fail_job(dead, "model failed", retry_delay_s=None)
    done = store.enqueue("case", "case:done", CaseJobPayload(patient_key=PATIENT.key), max_attempts=1)
    store.claim_job("w", 60)
    store.finish_job(done)
    store.replace_results(done, [NewResult(kind="recurrence", patient_key=PATIENT.key, status="ok", model="m1",
                                           model_version="1", summary="low risk", seconds=0.3)])
    out = store.outbox_add(NewOutput(kind="fhir", destination="fhir", key="o1", payload_path=tmp / "o1.json",
                                     payload=json.dumps({"secret": PATIENT.name}).encode()))
    store.outbox_claim("w", 60)
    store.outbox_dead(out, "refused by the server")
    return {"dead_job": dead, "done_job": done, "dead_output": out}


def audit_events(settings: Settings) -> list[dict]:
    """The AuditEvents of the trail, oldest first."""
    path = settings.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line)["event"] for line in path.read_text().splitlines()] if path.exists() else []


def audited(settings: Settings, what: str) -> list[dict]:
    """AuditEvents whose object entity is ``what`` (e.g. 'api:results', 'job:3')."""
    return [e for e in audit_events(settings) if any(x.get("what", {}).get("display") == what for x in e["entity"])]


def requestor(event: dict) -> str:
    return next(a["who"]["display"] for a in event["agent"] if a.get("requestor"))


def patient_keys(event: dict) -> list[str]:
    return [x["what"]["identifier"]["value"] for x in event["entity"] if "identifier" in x.get("what", {})]
