"""The write-back of a reviewed resource: a conditional update by identifier, never undoing a
later review (the FHIR server faked at the client boundary; the real one is in the integration test)."""

from __future__ import annotations

import httpx
import pytest

from cds.contracts.errors import PermanentError
from cds.fhir.writeback import write_back
from cds.writers.fhir_resources import RESULT_SYSTEM, review_tag


class FakeClient:
    def __init__(self, found: list[dict]) -> None:
        self.found, self.calls = found, []

    def search(self, rtype, params):
        self.calls.append(("search", rtype, params))
        return self.found

    def request(self, method, path, *, params=None, json=None, headers=None):
        self.calls.append((method, path, params))
        return httpx.Response(200, json={**json, "id": "ra1"})

    def create(self, resource, if_none_exist=None):  # the path a reviewed resource must not take
        raise AssertionError("a reviewed resource was created conditionally instead of updated")


def _ra(review_id: int | None, status: str = "final") -> dict:
    ra = {"resourceType": "RiskAssessment", "status": status,
          "identifier": [{"system": RESULT_SYSTEM, "value": "2.25.1/m/1/fhir-riskassessment"}]}
    if review_id is not None:
        ra["meta"] = {"tag": [review_tag(review_id)]}
    return ra


def test_reviewed_resource_is_put_by_identifier():
    client = FakeClient([{**_ra(None, "preliminary"), "id": "ra1"}])
    status, rid, done = write_back(client, _ra(3))
    assert (status, rid, done) == (200, "RiskAssessment/ra1", "status set to final")
    assert client.calls[-1] == ("PUT", "RiskAssessment",
                                {"identifier": f"{RESULT_SYSTEM}|2.25.1/m/1/fhir-riskassessment"})


def test_an_earlier_review_never_overwrites_a_later_one():
    client = FakeClient([{**_ra(12, "entered-in-error"), "id": "ra1"}])
    assert write_back(client, _ra(9)) == (200, "RiskAssessment/ra1", "a later review is present")
    assert [c[0] for c in client.calls] == ["search"]


def test_a_reviewed_resource_without_result_identifier_is_refused():
    ra = _ra(3)
    ra["identifier"] = []
    with pytest.raises(PermanentError, match="needs a urn:breast-cds:result identifier"):
        write_back(FakeClient([]), ra)


def test_the_ai_resource_arriving_after_its_review_does_not_undo_it():
    from datetime import UTC, datetime

    from cds.writers.fhir_resources import reviewed_risk_assessment, validate

    ai = validate({**_ra(None, "preliminary"), "subject": {"reference": "Patient/p"},
                   "prediction": [{"probabilityDecimal": 0.7, "rationale": "p 0.7"}], "note": [{"text": "synthetic"}]})
    reviewed = reviewed_risk_assessment(ai, review_id=4, outcome="modified", reviewer="Jane Smith", reason="x",
                                        decision="benign", removed=[], when=datetime.now(UTC))
    client = FakeClient([{**reviewed, "id": "ra1"}])
    assert write_back(client, ai) == (200, "RiskAssessment/ra1", "already present and reviewed")
    assert [c[0] for c in client.calls] == ["search"]
    # a different AI evaluation under the same identifier is written over the reviewed one
    newer = {**ai, "prediction": [{"probabilityDecimal": 0.2, "rationale": "p 0.2"}]}
    client = FakeClient([{**reviewed, "id": "ra1"}])
    status, rid, done = write_back(client, newer)
    assert (status, rid) == (200, "RiskAssessment/ra1") and done.startswith("superseded")
    assert client.calls[-1][:2] == ("PUT", "RiskAssessment/ra1")


def test_a_review_of_a_superseded_evaluation_is_not_applied():
    from cds.writers.supersession import EVALUATION_SYSTEM

    def stamped(ra, code):
        ra.setdefault("meta", {}).setdefault("tag", []).append({"system": EVALUATION_SYSTEM, "code": code})
        return ra

    client = FakeClient([{**stamped(_ra(None, "preliminary"), "2026-02-01T00:00:00.000000Z"), "id": "ra1"}])
    outcome = write_back(client, stamped(_ra(5), "2026-01-01T00:00:00.000000Z"))
    assert outcome == (200, "RiskAssessment/ra1", "a newer evaluation is present; review not applied")
    assert [c[0] for c in client.calls] == ["search"]
