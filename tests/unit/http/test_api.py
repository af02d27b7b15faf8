"""The read API and the operator actions over a store with known rows: paging, filters, the
audit record of every patient-linked read, 404/409 details, model switches reaching the pipeline."""

from __future__ import annotations

from cds.contracts.handoffs import StudyJobPayload
from cds.contracts.review import Role
from cds.pipeline.handlers import Pipeline
from cds.pipeline.registry import ModelRegistry
from synthetic.fixture_model import FixtureMammoModel, FixtureRecurrenceModel
from tests.unit.http.support import PATIENT, audited, auth, patient_keys, requestor


def test_listings_page_filter_and_audit(env) -> None:
    c, viewer = env.client, auth(env.tokens[Role.viewer])
    studies = c.get("/api/v1/studies", headers=viewer).json()
    assert [s["study_uid"] for s in studies["items"]] == ["2.25.900"] and studies["items"][0]["n_instances"] == 2
    (read,) = audited(env.settings, "api:studies")
    assert requestor(read) == "test-viewer" and patient_keys(read) == [PATIENT.key]
    assert c.get("/api/v1/studies", params={"state": "stable"}, headers=viewer).json()["items"] == []
    dead = c.get("/api/v1/jobs", params={"state": "dead"}, headers=viewer).json()["items"]
    assert [j["id"] for j in dead] == [env.ids["dead_job"]] and dead[0]["last_error"] == "model failed"
    page1 = c.get("/api/v1/jobs", params={"limit": 1}, headers=viewer).json()
    assert [j["id"] for j in page1["items"]] == [env.ids["done_job"]] and page1["next_cursor"] == str(env.ids["done_job"])
    page2 = c.get("/api/v1/jobs", params={"limit": 1, "cursor": page1["next_cursor"]}, headers=viewer).json()
    assert [j["id"] for j in page2["items"]] == [env.ids["dead_job"]]
    by_offset = c.get("/api/v1/jobs", params={"limit": 1, "offset": 1}, headers=viewer).json()
    assert by_offset["items"] == page2["items"]
    assert c.get("/api/v1/jobs", params={"limit": 501}, headers=viewer).status_code == 422
    bad = c.get("/api/v1/jobs", params={"cursor": "abc"}, headers=viewer)
    assert bad.status_code == 400 and "cursor" in bad.json()["detail"]
    results = c.get("/api/v1/results", params={"model": "m1"}, headers=viewer).json()["items"]
    assert results[0]["summary"] == "low risk" and results[0]["seconds"] == 0.3
    assert c.get("/api/v1/results", params={"model": "other"}, headers=viewer).json()["items"] == []
    outbox = c.get("/api/v1/outbox", params={"destination": "fhir"}, headers=viewer)
    assert outbox.json()["items"][0]["state"] == "dead"
    assert PATIENT.name not in outbox.text and "payload" not in outbox.json()["items"][0]  # never the blob
    refusals = c.get("/api/v1/refusals", headers=viewer).json()["items"]
    assert refusals[0]["status"] == 0xC000 and refusals[0]["reason"] == "cannot parse the dataset"
    assert c.get(f"/api/v1/jobs/{env.ids['dead_job']}", headers=viewer).json()["state"] == "dead"
    missing = c.get("/api/v1/jobs/999", headers=viewer)
    assert missing.status_code == 404 and "999" in missing.json()["detail"]


def test_requeue_actions_answer_404_409_200_and_audit(env) -> None:
    c, op = env.client, auth(env.tokens[Role.operator])
    assert c.post("/api/v1/jobs/999/requeue", headers=op).status_code == 404
    done = c.post(f"/api/v1/jobs/{env.ids['done_job']}/requeue", headers=op)
    assert done.status_code == 409 and "done, not dead" in done.json()["detail"]
    ok = c.post(f"/api/v1/jobs/{env.ids['dead_job']}/requeue", headers=op)
    assert ok.status_code == 200 and ok.json()["state"] == "queued" and ok.json()["attempts"] == 0
    assert env.store.job(env.ids["dead_job"]).state == "queued"  # type: ignore[union-attr]
    assert requestor(audited(env.settings, f"job:{env.ids['dead_job']}")[0]) == "test-operator"
    again = c.post(f"/api/v1/jobs/{env.ids['dead_job']}/requeue", headers=op)
    assert again.status_code == 409 and "queued" in again.json()["detail"]
    out = c.post(f"/api/v1/outbox/{env.ids['dead_output']}/requeue", headers=op)
    assert out.status_code == 200 and out.json()["state"] == "pending"
    assert c.post("/api/v1/outbox/999/requeue", headers=op).status_code == 404


def test_reevaluate_makes_a_new_case_job_each_time(env) -> None:
    pipeline = Pipeline(env.settings, env.store, ModelRegistry())
    env.ctx.enqueue_case = lambda key: pipeline.enqueue_case(key, force=True)
    c, op = env.client, auth(env.tokens[Role.operator])
    first = c.post(f"/api/v1/cases/{PATIENT.key}/reevaluate", headers=op).json()["job"]
    second = c.post(f"/api/v1/cases/{PATIENT.key}/reevaluate", headers=op).json()["job"]
    assert first["id"] != second["id"] and first["state"] == second["state"] == "queued"
    assert pipeline.enqueue_case(PATIENT.key) == pipeline.enqueue_case(PATIENT.key)  # unforced stays keyed
    assert env.store.job(second["id"]).case.force  # type: ignore[union-attr]
    unknown = c.post("/api/v1/cases/nobody/reevaluate", headers=op)
    assert unknown.status_code == 404 and "patient key" in unknown.json()["detail"]
    assert patient_keys(audited(env.settings, f"case-job:{first['id']}")[0]) == [PATIENT.key]


def test_model_switch_is_persisted_and_the_pipeline_records_disabled(env) -> None:
    mammo, rec = FixtureMammoModel(), FixtureRecurrenceModel()
    env.ctx.registry = ModelRegistry(study_models=[mammo], case_models=[rec],
                                     unavailable={"models.slides.runtime": "missing dependency: openslide"})
    c, op = env.client, auth(env.tokens[Role.operator])
    listed = {m["name"]: m for m in c.get("/api/v1/models", headers=op).json()}
    assert listed["fixture-mammo"]["state"] == "loaded" and listed["fixture-mammo"]["enabled"]
    assert listed["models.slides.runtime"]["state"] == "failed" and "openslide" in listed["models.slides.runtime"]["why"]
    assert listed["fixture-mammo"]["activity"]["n_results"] == 0
    unknown = c.put("/api/v1/models/nope/switch", json={"enabled": False}, headers=op)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    assert c.put("/api/v1/models/fixture-mammo/switch", json={"enabled": False, "reason": "drift"},
                 headers=auth(env.tokens[Role.viewer])).status_code == 403
    for name in ("fixture-mammo", rec.identity.name):
        r = c.put(f"/api/v1/models/{name}/switch", json={"enabled": False, "reason": "drift"}, headers=op)
        assert r.status_code == 200 and r.json()["enabled"] is False
    assert env.store.model_switches() == {"fixture-mammo": False, rec.identity.name: False}
    assert not {m["name"]: m for m in c.get("/api/v1/models", headers=op).json()}["fixture-mammo"]["enabled"]
    pipeline = Pipeline(env.settings, env.store, env.ctx.registry)
    job = env.store.enqueue("study", "study:x", StudyJobPayload(study_uid="2.25.900", modality="MG",
                                                               patient_key=PATIENT.key, generation=0))
    claimed = env.store.claim_job("w", 60, only=["study"])
    assert claimed is not None and claimed.id == job
    pipeline.run_study_job(claimed)  # the fixture model would fail on these path-less instances if it ran
    (row,) = env.store.results(study_uid="2.25.900")
    assert row.status == "disabled" and "disabled by an operator" in (row.summary or "")
    case_rows = pipeline._run_case_models(_case())[1]
    assert [r.status for r in case_rows] == ["disabled"]
    c.put("/api/v1/models/fixture-mammo/switch", json={"enabled": True}, headers=op)
    assert env.store.model_switches()["fixture-mammo"] is True


def _case():
    from pathlib import Path

    from cds.contracts.domain import CaseInput, ClinicalContext

    return CaseInput(patient=PATIENT, clinical=ClinicalContext(), work_dir=Path("/nonexistent"))
