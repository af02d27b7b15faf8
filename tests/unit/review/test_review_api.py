"""The review endpoints over the real app (TestClient): roles, 201/404/422 with a specific
detail, reviews listed newest first, and every listing an audit record."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cds.contracts.review import Role
from listeners.http.app import OPENAPI_PATH, create_app
from listeners.http.context import HttpContext
from listeners.http.tokens import create_token


@pytest.fixture
def api(reviewable, tmp_path):
    settings = reviewable.settings.model_copy(update={"http_api_tokens_file": tmp_path / "tokens",
                                                      "audit_enabled": True})
    tokens = {role: create_token(tmp_path / "tokens", [role], f"test-{role.value}") for role in Role}
    with TestClient(create_app(HttpContext(settings, reviewable.store, peer_probes={})),
                    base_url="http://127.0.0.1") as c:
        yield c, {role: {"Authorization": f"Bearer {t}"} for role, t in tokens.items()}, reviewable, settings


def test_post_and_list_reviews(api):
    c, auth, rv, settings = api
    url = f"/api/v1/results/{rv.result_id}/reviews"
    assert c.post(url, json={"outcome": "accepted"}).status_code == 401
    assert c.post(url, json={"outcome": "accepted"}, headers=auth[Role.viewer]).status_code == 403
    r = c.post(url, json={"outcome": "accepted"}, headers=auth[Role.clinician])
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["outcome"] == "accepted" and first["reviewer"] == "test-clinician" and first["sr_uid"]
    r = c.post(url, json={"outcome": "rejected", "reason": "motion artefact"}, headers=auth[Role.admin])
    assert r.status_code == 201, r.text

    listed = c.get(url, headers=auth[Role.viewer])
    assert listed.status_code == 200
    assert [x["outcome"] for x in listed.json()] == ["rejected", "accepted"]
    trail = [json.loads(line)["event"] for line in (settings.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    reads = [e for e in trail if any(x.get("what", {}).get("display") == f"reviews of result {rv.result_id}"
                                     for x in e["entity"])]
    assert len(reads) == 1 and any(x["what"].get("identifier", {}).get("value") == first["patient_key"]
                                   for x in reads[0]["entity"])
    created = [e for e in trail if any(x.get("what", {}).get("display", "").startswith("review/") for x in e["entity"])]
    assert len(created) == 2


@pytest.mark.parametrize(("result", "body", "status", "detail"), [
    (4242, {"outcome": "accepted"}, 404, "result 4242 does not exist"),
    (None, {"outcome": "rejected"}, 422, "needs a reason"),
    (None, {"outcome": "modified", "reason": "x", "removed_lesions": [50]}, 422, "[50] do not exist"),
])
def test_refusals_name_what_was_wrong(api, result, body, status, detail):
    c, auth, rv, _ = api
    r = c.post(f"/api/v1/results/{result or rv.result_id}/reviews", json=body, headers=auth[Role.clinician])
    assert r.status_code == status and detail in r.json()["detail"], r.text
    assert rv.store.reviews_of(rv.result_id) == []


def test_unknown_fields_and_outcomes_are_422(api):
    c, auth, rv, _ = api
    url = f"/api/v1/results/{rv.result_id}/reviews"
    for body in ({"outcome": "maybe"}, {"outcome": "accepted", "extra": 1}):
        r = c.post(url, json=body, headers=auth[Role.clinician])
        assert r.status_code == 422 and r.json()["detail"], body
    assert c.get("/api/v1/results/4242/reviews", headers=auth[Role.viewer]).status_code == 404


def test_openapi_declares_the_review_models(api):
    c, *_ = api
    spec = c.get(OPENAPI_PATH).json()
    post = spec["paths"]["/api/v1/results/{result_id}/reviews"]["post"]
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReviewRow")
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReviewRequest")
    assert {"404", "422"} <= set(post["responses"])
