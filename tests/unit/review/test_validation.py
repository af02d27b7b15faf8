"""A review that does not fit its result is refused with a specific error, and nothing is written."""

from __future__ import annotations

import pytest

from cds.contracts.handoffs import NewResult
from cds.contracts.review import ReviewRequest
from cds.review import InvalidReview, ResultNotFound, assess
from tests.unit.review.conftest import CLINICIAN


@pytest.mark.parametrize(("request_body", "expected"), [
    ({"outcome": "rejected"}, "needs a reason"),
    ({"outcome": "modified", "reason": "  ", "decision": "benign"}, "needs a reason"),
    ({"outcome": "accepted", "decision": "benign"}, "'modified' review only"),
    ({"outcome": "rejected", "reason": "x", "removed_lesions": [0]}, "'modified' review only"),
    ({"outcome": "modified", "reason": "x"}, "expected a 'decision' or 'removed_lesions'"),
    ({"outcome": "modified", "reason": "x", "removed_lesions": [0, 99, -1]}, "[-1, 99] do not exist"),
])
def test_invalid_requests_are_refused(reviewable, request_body, expected):
    with pytest.raises(InvalidReview) as err:
        assess(reviewable.settings, reviewable.store, reviewable.result_id,
               ReviewRequest.model_validate(request_body), CLINICIAN)
    assert expected in str(err.value)
    assert reviewable.store.reviews_of(reviewable.result_id) == []
    assert not [o for o in reviewable.store.outbox_items(limit=100) if o.key.startswith("review:")]


def test_unknown_result_is_not_found(reviewable):
    with pytest.raises(ResultNotFound, match="result 4242 does not exist"):
        assess(reviewable.settings, reviewable.store, 4242, ReviewRequest(outcome="accepted"), CLINICIAN)


def test_a_slide_result_has_no_lesions_to_remove(reviewable):
    with pytest.raises(InvalidReview, match=r"removed_lesions \[0\] do not exist: result \d+ has no lesions"):
        assess(reviewable.settings, reviewable.store, reviewable.slide_result_id,
               ReviewRequest(outcome="modified", reason="x", removed_lesions=[0]), CLINICIAN)


def test_a_result_without_ai_output_cannot_be_assessed(reviewable):
    store = reviewable.store
    (no_model,) = store.replace_results(99, [NewResult(kind="study_analysis", patient_key="k", status="no_model")])
    with pytest.raises(InvalidReview, match="status 'no_model'"):
        assess(reviewable.settings, store, no_model, ReviewRequest(outcome="accepted"), CLINICIAN)
    (orphan,) = store.replace_results(98, [NewResult(kind="study_analysis", patient_key="k", status="ok",
                                                     model="m", model_version="1")])
    with pytest.raises(InvalidReview, match="no AI outputs"):
        assess(reviewable.settings, store, orphan, ReviewRequest(outcome="accepted"), CLINICIAN)
