"""Operator actions ``/api/v1/...`` (Role.operator): requeue a dead job or output, re-evaluate a
case, switch a model on or off. Each is an audit record and answers with the new state; an
unknown target is 404, a target in the wrong state 409, each with a detail that says which."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel

from cds.audit import events as ev
from cds.audit.trail import record
from cds.contracts.review import Principal, Role
from listeners.http.api import PREFIX, models, row_id
from listeners.http.api_models import JobOut, ModelOut, ModelSwitch, OutboxOut
from listeners.http.auth import require
from listeners.http.context import HttpContext, context

_UPDATE = {"system": ev.REST, "code": "update", "display": "update"}


class Reevaluation(BaseModel):
    patient_key: str
    job: JobOut


def audit_action(ctx: HttpContext, who: Principal, what: str, patient_keys: list[str] | None = None,
                 detail: str = "") -> None:
    """An operator's change, in the same tamper-evident trail as receipts and reads."""
    s = ctx.settings
    record(s, ev.audit_event(
        type_=ev.REST_TYPE, subtypes=[_UPDATE], action="U", observer=s.audit_source_id or s.ae_title,
        agents=[ev.agent(ev.SOURCE_ROLE, who.name, requestor=True), ev.agent(ev.DESTINATION_ROLE, s.ae_title)],
        entities=[ev.patient_entity(k) for k in patient_keys or []] + [ev.object_entity(what, detail[:200] or "operator action")]))


def _job_out(ctx: HttpContext, job_id: int) -> JobOut:
    job = ctx.store.job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return JobOut.model_validate(job.model_dump())


def _outbox_out(ctx: HttpContext, item_id: int) -> OutboxOut:
    rows = ctx.store.page("outbox", {}, limit=1, after=item_id + 1)
    if not rows or rows[0]["id"] != item_id:
        raise HTTPException(404, f"no output {item_id}")
    row: dict[str, Any] = rows[0]
    return OutboxOut.model_validate({**row, "meta": json.loads(row["meta"] or "{}")})


def router() -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["actions"])
    operator = require(Role.operator)
    errors: dict[int | str, dict[str, Any]] = {404: {"description": "unknown"}, 409: {"description": "wrong state"}}

    @r.post("/jobs/{job_id}/requeue", response_model=JobOut, responses=errors)
    def requeue_job(job_id: int = row_id(), ctx: HttpContext = Depends(context),
                    who: Principal = Depends(operator)) -> JobOut:
        """Give a dead job a new run (fresh attempts, due now)."""
        before = _job_out(ctx, job_id)
        if not ctx.store.requeue_job(job_id):
            raise HTTPException(409, f"job {job_id} is {before.state}, not dead: only a dead job is requeued")
        audit_action(ctx, who, f"job:{job_id}", detail="requeued")
        return _job_out(ctx, job_id)

    @r.post("/outbox/{item_id}/requeue", response_model=OutboxOut, responses=errors)
    def requeue_output(item_id: int = row_id(), ctx: HttpContext = Depends(context),
                       who: Principal = Depends(operator)) -> OutboxOut:
        """Deliver a dead output again (fresh attempts, due now)."""
        before = _outbox_out(ctx, item_id)
        if not ctx.store.requeue_output(item_id):
            raise HTTPException(409, f"output {item_id} is {before.state}, not dead: only a dead output is requeued")
        audit_action(ctx, who, f"output:{item_id}", detail="requeued")
        return _outbox_out(ctx, item_id)

    @r.post("/cases/{patient_key}/reevaluate", response_model=Reevaluation, responses=errors)
    def reevaluate(patient_key: str = Path(..., min_length=1, max_length=128), ctx: HttpContext = Depends(context),
                   who: Principal = Depends(operator)) -> Reevaluation:
        """Queue a NEW case job for the patient, even when no input changed."""
        if not ctx.store.page("cases", {"patient_key": patient_key}, limit=1):
            raise HTTPException(404, "no case with this patient key (see GET /api/v1/cases)")
        if ctx.enqueue_case is None:
            raise HTTPException(409, "this server runs without a pipeline: cases cannot be re-evaluated here")
        job_id = ctx.enqueue_case(patient_key)
        audit_action(ctx, who, f"case-job:{job_id}", [patient_key], "re-evaluation requested")
        return Reevaluation(patient_key=patient_key, job=_job_out(ctx, job_id))

    @r.put("/models/{name}/switch", response_model=ModelOut, responses=errors)
    def switch(body: ModelSwitch, name: str = Path(..., min_length=1, max_length=128),
               ctx: HttpContext = Depends(context), who: Principal = Depends(operator)) -> ModelOut:
        """Enable or disable a loaded model; a disabled model is recorded as 'disabled', not run."""
        found = next((m for m in models(ctx) if m.name == name and m.state == "loaded"), None)
        if found is None:
            raise HTTPException(404, f"no loaded model named {name!r} (see GET /api/v1/models)")
        ctx.store.set_model_enabled(name, body.enabled, who.name, body.reason)
        audit_action(ctx, who, f"model:{name}", detail=("enabled" if body.enabled else "disabled") +
                     (f": {body.reason}" if body.reason else ""))
        return found.model_copy(update={"enabled": body.enabled})

    return r
