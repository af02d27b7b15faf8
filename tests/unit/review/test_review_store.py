"""ReviewStore: every review is kept; counts and the pages see only each result's latest one."""

from __future__ import annotations

from cds.store import Store


def test_counts_follow_the_latest_review_of_each_result(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    first = store.add_review(result_id=1, outcome="accepted", reviewer="u1", model="mg", created_at=1.0)
    second = store.add_review(result_id=1, outcome="rejected", reviewer="u2", model="mg", reason="artefact",
                              created_at=2.0)
    store.add_review(result_id=2, outcome="accepted", reviewer="u1", model="mg")
    store.add_review(result_id=3, outcome="modified", reviewer="u1", model="sm", removed_lesions=[2, 0, 2])
    # result 1 counts once, as rejected: the accepted review was superseded
    assert store.review_counts() == {("mg", "rejected"): 1, ("mg", "accepted"): 1, ("sm", "modified"): 1}
    assert [r.id for r in store.reviews_of(1)] == [second, first]
    latest = store.latest_reviews([1, 2, 99])
    assert set(latest) == {1, 2} and latest[1].id == second and latest[1].reason == "artefact"
    assert store.reviews(model="sm")[0].removed_lesions == [0, 2]
    assert [r.result_id for r in store.reviews(limit=2)] == [3, 2]
    assert [r.result_id for r in store.reviews(limit=2, offset=2)] == [1, 1]
    assert store.reviews(patient_key="nobody") == []


def test_discarded_review_leaves_no_row_and_no_pending_output(tmp_path):
    from cds.contracts.handoffs import NewOutput

    store = Store(f"sqlite:///{tmp_path}/s.db")
    rid = store.add_review(result_id=5, outcome="accepted", reviewer="u")
    store.outbox_add(NewOutput(kind="fhir", destination="fhir", key=f"review:{rid}:provenance",
                               payload_path=tmp_path / "p.json", payload=b"{}"))
    store.outbox_add(NewOutput(kind="fhir", destination="fhir", key="other", payload_path=tmp_path / "q.json",
                               payload=b"{}"))
    store.discard_review(rid)
    assert store.reviews_of(5) == [] and store.review_counts() == {}
    assert [o.key for o in store.outbox_items()] == ["other"]
