"""The web pages: worklist, case page with the clinician review forms, operator and model pages.

Server-rendered Jinja2 (no single-page build): each GET reads the store, writes ``audit_read`` when
it shows patient data, and renders one template. A browser without a session is sent to the
login form; forms post back here (with the session's CSRF token, checked by
:func:`listeners.http.auth.require`) and redirect to the page they came from (post/redirect/get).
Only a clinician sees the review forms and only an operator the requeue and switch forms; posting
them without the role answers 403 whatever the page showed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError

from cds import review
from cds.audit.trail import audit_read
from cds.contracts.review import Principal, ReviewOutcome, ReviewRequest, Role
from listeners.http import page_ops, page_views
from listeners.http.actions import audit_action
from listeners.http.api import row_id
from listeners.http.auth import csrf_token, current_principal, require
from listeners.http.context import HttpContext, context

HERE = Path(__file__).parent
PAGE = 25


class LoginRequired(Exception):
    """A page asked for without a session: answered with a redirect to the login form."""


def _viewer(request: Request, ctx: HttpContext = Depends(context)) -> Principal:
    """The caller of a GET page: a redirect to /login without a session, 403 without a role."""
    principal = current_principal(request, ctx)
    if principal is None:
        raise HTTPException(303, "login required", headers={
            "Location": "/login?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))})
    if not principal.has(Role.viewer):
        raise HTTPException(403, "the viewer role is required to see the pages")
    return principal


def _render(templates: Jinja2Templates, request: Request, template: str, principal: Principal | None,
            **values: Any) -> HTMLResponse:
    can = {"review": bool(principal and principal.has(Role.clinician)),
           "operate": bool(principal and principal.has(Role.operator))}
    return templates.TemplateResponse(request, template, {"user": principal, "can": can, "csrf": csrf_token(request),
                                                      **values})


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _case_routes(r: APIRouter, templates: Jinja2Templates) -> None:
    clinician = require(Role.clinician)
    @r.get("/", response_class=HTMLResponse)
    def worklist(request: Request, state: str = Query("", description="filter: one of the case states"),
                 page: int = Query(1, ge=1), per_page: int = Query(PAGE, ge=1, le=200),
                 ctx: HttpContext = Depends(context), principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """Patient cases, newest first, with their state."""
        if state and state not in page_views.STATES:
            raise HTTPException(422, f"state {state!r} is not a case state; expected one of "
                                     f"{', '.join(page_views.STATES)}")
        view = page_views.worklist(ctx.store, state=state or None, page=page, per_page=per_page)
        audit_read(ctx.settings, user=principal.name, what="worklist page",
                   patient_keys=[c["key"] for c in view["cases"]])
        return _render(templates, request, "worklist.html.j2", principal, **view)

    @r.get("/cases/{patient_key}", response_class=HTMLResponse)
    def case(request: Request, patient_key: str, ctx: HttpContext = Depends(context),
             principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """One patient's AI results, figures, inputs, model cards and review forms."""
        view = page_views.case_page(ctx.store, patient_key)
        if view is None:
            raise HTTPException(404, "no patient with this patient key in the store")
        audit_read(ctx.settings, user=principal.name, what="case page", patient_keys=[patient_key])
        return _render(templates, request, "case.html.j2", principal, **view)

    @r.post("/cases/{patient_key}/results/{result_id}/review", status_code=303, response_class=RedirectResponse)
    def review_result(patient_key: str, result_id: int = row_id(), outcome: ReviewOutcome = Form(...),
                      reason: str = Form(""), decision: str = Form(""), removed_lesions: list[int] = Form([]),
                      ctx: HttpContext = Depends(context),
                      principal: Principal = Depends(clinician)) -> RedirectResponse:
        """Accept, modify or reject one AI result; then back to the case page."""
        rows = page_views.reviewable(ctx.store.results(patient_key=patient_key))
        if not any(r.id == result_id for r in rows):
            raise HTTPException(404, f"result {result_id} is not a current AI result of this patient")
        try:
            req = ReviewRequest(outcome=outcome, reason=reason.strip(), decision=decision.strip() or None,
                                removed_lesions=removed_lesions)
        except ValidationError as exc:
            raise HTTPException(422, "review form: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
        try:
            review.assess(ctx.settings, ctx.store, result_id, req, principal)
        except review.ResultNotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except review.InvalidReview as exc:
            raise HTTPException(422, str(exc)) from exc
        return _redirect(f"/cases/{quote(patient_key)}#result-{result_id}")


def _ops_routes(r: APIRouter, templates: Jinja2Templates) -> None:
    operator = require(Role.operator)
    @r.get("/ops/jobs", response_class=HTMLResponse)
    def jobs(request: Request, state: str = Query(""), limit: int = Query(200, ge=1, le=2000),
             ctx: HttpContext = Depends(context), principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """Jobs by state; dead ones with a requeue button."""
        if state and state not in page_ops.JOB_STATES:
            raise HTTPException(422, f"state {state!r} is not a job state; expected one of {', '.join(page_ops.JOB_STATES)}")
        return _render(templates, request, "ops_jobs.html.j2", principal, **page_ops.jobs_page(ctx.store, state, limit))

    @r.get("/ops/outbox", response_class=HTMLResponse)
    def outbox(request: Request, state: str = Query(""), limit: int = Query(200, ge=1, le=2000),
               ctx: HttpContext = Depends(context), principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """Outputs by state; dead ones with a requeue button."""
        if state and state not in page_ops.OUTBOX_STATES:
            raise HTTPException(422, f"state {state!r} is not an output state; expected one of "
                                     f"{', '.join(page_ops.OUTBOX_STATES)}")
        return _render(templates, request, "ops_outbox.html.j2", principal,
                       **page_ops.outbox_page(ctx.store, state, limit))

    @r.get("/ops/refusals", response_class=HTMLResponse)
    def refusals(request: Request, limit: int = Query(200, ge=1, le=2000), ctx: HttpContext = Depends(context),
                 principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """Refused instances and associations, newest first."""
        return _render(templates, request, "ops_refusals.html.j2", principal, **page_ops.refusals_page(ctx.store, limit))

    @r.post("/ops/jobs/{job_id}/requeue", status_code=303, response_class=RedirectResponse)
    def requeue_job(job_id: int = row_id(), ctx: HttpContext = Depends(context),
                    principal: Principal = Depends(operator)) -> RedirectResponse:
        """Give a dead job another run."""
        if not ctx.store.requeue_job(job_id):
            raise HTTPException(409, f"job {job_id} is not dead (only a dead job can be requeued)")
        audit_action(ctx, principal, f"job:{job_id}", detail="requeued (pages)")
        return _redirect("/ops/jobs")

    @r.post("/ops/outbox/{item_id}/requeue", status_code=303, response_class=RedirectResponse)
    def requeue_output(item_id: int = row_id(), ctx: HttpContext = Depends(context),
                       principal: Principal = Depends(operator)) -> RedirectResponse:
        """Deliver a dead output again."""
        if not ctx.store.requeue_output(item_id):
            raise HTTPException(409, f"output {item_id} is not dead (only a dead output can be requeued)")
        audit_action(ctx, principal, f"output:{item_id}", detail="requeued (pages)")
        return _redirect("/ops/outbox")


def _model_routes(r: APIRouter, templates: Jinja2Templates) -> None:
    operator = require(Role.operator)
    @r.get("/models", response_class=HTMLResponse)
    def models(request: Request, ctx: HttpContext = Depends(context),
               principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """Every model with its state and review outcomes."""
        return _render(templates, request, "models.html.j2", principal, **page_ops.models_page(ctx))

    @r.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str, ctx: HttpContext = Depends(context),
              principal: Principal = Depends(_viewer)) -> HTMLResponse:
        """One model: volume, latency, review outcomes, card, switch."""
        view = page_ops.model_page(ctx, name)
        if view is None:
            raise HTTPException(404, f"no model named {name!r} is loaded or has results")
        return _render(templates, request, "model.html.j2", principal, **view)

    @r.post("/models/{name}/switch", status_code=303, response_class=RedirectResponse)
    def switch(name: str, enabled: bool = Form(...), reason: str = Form(..., min_length=1, max_length=500),
               ctx: HttpContext = Depends(context),
               principal: Principal = Depends(operator)) -> RedirectResponse:
        """Enable or disable a model, with a reason."""
        if name not in page_ops.identities(ctx) and page_ops.model_page(ctx, name) is None:
            raise HTTPException(404, f"no model named {name!r} is loaded or has results")
        ctx.store.set_model_enabled(name, enabled, principal.name, reason.strip())
        audit_action(ctx, principal, f"model:{name}", detail=("enabled" if enabled else "disabled") + " (pages)")
        return _redirect(f"/models/{quote(name)}")


def router() -> APIRouter:
    r = APIRouter(tags=["pages"], include_in_schema=False)
    # autoescape everything: the templates end in .j2, which select_autoescape() would leave raw,
    # and names, reasons and errors shown here come from outside.
    templates = Jinja2Templates(env=Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True))

    @r.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = Query("/")) -> HTMLResponse:
        """The login form (an API token); POST /login opens the session."""
        return _render(templates, request, "login.html.j2", None, next=next)

    @r.get("/static/{name}")
    def static(name: str) -> FileResponse:
        """The pages' stylesheet and script (only files shipped in static/, by plain name)."""
        shipped = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
        if name not in shipped:
            raise HTTPException(404, f"no static file {name!r}; shipped: {', '.join(sorted(shipped))}")
        return FileResponse(shipped[name], headers={"Cache-Control": "max-age=3600"})

    _case_routes(r, templates)
    _ops_routes(r, templates)
    _model_routes(r, templates)
    return r
