"""The worklist's state of a case and its paging, from the store's rows (no browser, no peers).

The store is faked at its boundary: these are the rules of listeners.http.page_views.worklist,
one case per state, so that a change in the precedence (failed > receiving > analysing >
awaiting review > reviewed > results delivered) shows here.
"""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from cds.contracts.domain import PatientRef
from cds.contracts.handoffs import CaseJobPayload, ResultRow
from cds.contracts.review import ReviewOutcome, ReviewRow
from cds.store.rows import CaseOverviewRow, StudyRow
from listeners.http.page_views import reviewable, worklist


def _result(rid: int, key: str, model: str = "m", status: str = "ok") -> ResultRow:
    return ResultRow(id=rid, job_id=1, created_at=0.0, kind="study_analysis", patient_key=key, status=status,
                     study_uid=f"2.25.{rid}", model=model, body={"x": 1} if status == "ok" else None)


class FakeStore:
    def __init__(self) -> None:
        self.cases = {k: i for i, k in enumerate(["failed", "receiving", "analysing", "awaiting", "reviewed",
                                                  "delivered"])}
        self.rows = {"awaiting": [_result(1, "awaiting"), _result(2, "awaiting", "n")],
                     "reviewed": [_result(3, "reviewed")], "failed": [_result(4, "failed")],
                     "delivered": [_result(5, "delivered", status="no_model")]}
        self.reviews = {1: "accepted", 3: "rejected"}

    def case_overview(self, limit: int) -> list[CaseOverviewRow]:
        return [CaseOverviewRow(patient_key=k, updated_at=100.0 - i, n_studies=1) for k, i in self.cases.items()]

    def jobs(self, state: str | None = None, limit: int = 200) -> list:
        key = {"dead": "failed", "queued": "analysing"}.get(state or "")
        return [NS(id=10, payload=CaseJobPayload(patient_key=key))] if key else []

    def outbox_items(self, state: str | None = None, limit: int = 100) -> list:
        return [NS(meta=NS(job_id=10))] if state == "pending" else []

    def job(self, job_id: int):
        return None

    def recent_studies(self, limit: int) -> list[StudyRow]:
        return [StudyRow(study_uid="2.25.9", patient_key="receiving", state="receiving", generation=0, n_instances=1),
                StudyRow(study_uid="2.25.8", patient_key="awaiting", state="stable", generation=0, n_instances=1)]

    def results(self, *, patient_key: str | None = None, **_: object) -> list[ResultRow]:
        return self.rows.get(patient_key or "", [])

    def latest_reviews(self, ids) -> dict[int, ReviewRow]:
        return {i: ReviewRow(id=i, result_id=i, outcome=ReviewOutcome(self.reviews[i]), reviewer="r", created_at=0)
                for i in ids if i in self.reviews}

    def patient(self, key: str) -> PatientRef:
        return PatientRef(patient_id=key, name=f"Name^{key}")


def test_each_case_gets_its_state_newest_first():
    view = worklist(FakeStore(), state=None, page=1, per_page=25)  # type: ignore[arg-type]
    assert [(c["key"], c["state"]) for c in view["cases"]] == [
        ("failed", "failed"), ("receiving", "receiving"), ("analysing", "analysing"),
        ("awaiting", "awaiting review"), ("reviewed", "reviewed"), ("delivered", "results delivered")]
    awaiting = view["cases"][3]
    assert (awaiting["results"], awaiting["reviewed"]) == (2, 1)


@pytest.mark.parametrize("state", ["failed", "awaiting review", "results delivered"])
def test_filter_by_state(state):
    view = worklist(FakeStore(), state=state, page=1, per_page=25)  # type: ignore[arg-type]
    assert [c["state"] for c in view["cases"]] == [state] and view["total"] == 1


def test_paging():
    store = FakeStore()
    pages = [worklist(store, state=None, page=p, per_page=4) for p in (1, 2, 3)]  # type: ignore[arg-type]
    assert [len(v["cases"]) for v in pages] == [4, 2, 0] and pages[0]["pages"] == 2
    assert pages[1]["cases"][0]["key"] == "reviewed"


def test_reviewable_keeps_the_newest_ok_result_per_study_and_model():
    rows = [_result(9, "k"), _result(8, "k").model_copy(update={"study_uid": "2.25.9"}), _result(7, "k", status="no_model")]
    assert [r.id for r in reviewable(rows)] == [9]
