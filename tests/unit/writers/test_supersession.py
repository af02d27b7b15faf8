"""The upsert's decision: same evaluation, an older one arriving late, or a newer one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cds.fhir.upsert import amended_status, decide
from cds.writers.supersession import stamp


def _ra(when: datetime, p: float) -> dict:
    return stamp({"resourceType": "RiskAssessment", "status": "final", "prediction": [{"probabilityDecimal": p}]},
                 when)


def test_decide_by_evaluation_stamp():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    old, new = _ra(t, 0.38), _ra(t + timedelta(seconds=1), 0.61)
    assert decide(old, new) == "update"
    assert decide(new, old) == "stale"  # an older evaluation delivered late never overwrites
    assert decide(new, {**new, "id": "x", "status": "amended"}) == "same"


def test_decide_unstamped_by_content_and_status():
    a = {"resourceType": "RiskAssessment", "status": "final", "prediction": [{"probabilityDecimal": 0.1}]}
    assert decide({**a, "id": "1", "meta": {"versionId": "1"}}, a) == "same"
    assert decide(a, {**a, "prediction": [{"probabilityDecimal": 0.2}]}) == "update"
    assert amended_status("RiskAssessment", "final", "final") == "amended"
    assert amended_status("DiagnosticReport", "preliminary", "preliminary") == "preliminary"
