"""Clinician review of AI results over the API (IHE AIRA-style).

``POST /api/v1/results/{result_id}/reviews`` (clinician): accept, modify or reject one stored
result; 201 with the recorded review, 404 for an unknown result, 422 when the assessment does
not fit the result (the ``detail`` says what was wrong and what was expected).
``GET /api/v1/results/{result_id}/reviews`` (viewer): the result's reviews, newest first (the
first one is the one that counts); an audit record, since reviews name the patient's results.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path
from starlette.concurrency import run_in_threadpool

from cds.audit.trail import audit_read
from cds.contracts.review import Principal, ReviewRequest, ReviewRow, Role
from cds.review import InvalidReview, ResultNotFound, assess
from listeners.http.auth import require
from listeners.http.context import HttpContext, context

ResultId = Path(..., ge=1, le=2**63 - 1, description="The stored result's id (results.id).")
_ERRORS = {404: {"description": "No result with that id"},
           422: {"description": "The assessment does not fit the result (detail says why)"}}


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/results", tags=["reviews"])
    clinician, viewer = require(Role.clinician), require(Role.viewer)

    @r.post("/{result_id}/reviews", status_code=201, response_model=ReviewRow, responses=_ERRORS,
            summary="Accept, modify or reject one AI result")
    async def post_review(request: ReviewRequest, result_id: int = ResultId,
                          ctx: HttpContext = Depends(context),
                          principal: Principal = Depends(clinician)) -> ReviewRow:
        try:  # writes files, the store and the outbox: off the event loop
            return await run_in_threadpool(assess, ctx.settings, ctx.store, result_id, request, principal)
        except ResultNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except InvalidReview as exc:
            raise HTTPException(422, str(exc)) from exc

    @r.get("/{result_id}/reviews", response_model=list[ReviewRow], responses={404: _ERRORS[404]},
           summary="The reviews of one result, newest first")
    def get_reviews(result_id: int = ResultId, ctx: HttpContext = Depends(context),
                    principal: Principal = Depends(viewer)) -> list[ReviewRow]:
        result = ctx.store.review_target(result_id)
        if result is None:
            raise HTTPException(404, f"result {result_id} does not exist")
        rows = ctx.store.reviews_of(result_id)
        audit_read(ctx.settings, user=principal.name, what=f"reviews of result {result_id}",
                   patient_keys=[result.patient_key] if result.patient_key else [])
        return rows

    return r
