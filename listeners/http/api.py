"""Read-only API ``/api/v1/...``: studies, cases, jobs, results, outputs, refusals, models.

Every listing pages (``limit`` up to 500, then ``offset`` or the ``cursor`` the previous page
returned) and filters on named columns only. A response that carries patient-linked rows is
recorded as an audit read (who, what, which patient keys) before it is returned.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from cds.audit.trail import audit_read
from cds.contracts.review import Principal, Role
from cds.store.admin import LISTINGS
from listeners.http.api_models import (
    CaseOut,
    JobOut,
    ModelOut,
    OutboxOut,
    Page,
    RefusalOut,
    ResultOut,
    StudyOut,
)
from listeners.http.auth import require
from listeners.http.context import HttpContext, context

PREFIX = "/api/v1"
Limit = Query(100, ge=1, le=500, description="Rows per page (at most 500).")
Offset = Query(0, ge=0, le=1_000_000, description="Rows to skip (or use cursor).")


def row_id() -> Any:
    """A fresh marker per parameter (FastAPI binds a marker to the first name it is used for)."""
    return Path(..., ge=1, le=2**62, description="A row id.")


Cursor = Query(None, max_length=128, description="next_cursor of the previous page.")


def listing(ctx: HttpContext, principal: Principal, table: str, filters: dict[str, Any], limit: int,
            offset: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``table`` and the cursor of the next; audited when rows carry patient keys."""
    key = LISTINGS[table][0]
    after: Any = cursor
    if cursor is not None and key == "id":
        if not cursor.isdigit() or len(cursor) > 18:  # row ids are 63-bit integers
            raise HTTPException(400, f"cursor {cursor!r} is not valid here: expected the next_cursor of a "
                                     f"previous page of {table} (a row id)")
        after = int(cursor)
    rows = ctx.store.page(table, filters, limit=limit, offset=offset, after=after)
    keys = sorted({str(r["patient_key"]) for r in rows if r.get("patient_key")})
    if keys:
        audit_read(ctx.settings, user=principal.name, what=f"api:{table}", patient_keys=keys)
    next_cursor = str(rows[-1][key]) if len(rows) == limit else None
    return rows, next_cursor


def models(ctx: HttpContext) -> list[ModelOut]:
    """Every model the registry knows, with its card, operator switch and activity."""
    out: list[ModelOut] = []
    switches = ctx.store.model_switches()
    registry = ctx.registry
    if registry is None:
        return out
    for ident in registry.identities:
        card = None
        if ident.card is not None and ident.card.exists():
            try:
                card = json.loads(ident.card.read_text())
            except (OSError, ValueError):
                card = None
        out.append(ModelOut(name=ident.name, version=ident.version, state="loaded",
                            enabled=switches.get(ident.name, True), card=card,
                            activity=ctx.store.model_activity(ident.name)))
    for path, why in registry.unavailable.items():
        out.append(ModelOut(name=path, state="disabled" if path in registry.disabled else "failed",
                            enabled=path not in registry.disabled, why=why))
    return out


def router() -> APIRouter:
    r = APIRouter(prefix=PREFIX, tags=["read"])
    viewer = require(Role.viewer)

    @r.get("/studies", response_model=Page[StudyOut])
    def studies(state: str | None = Query(None, max_length=32), patient_key: str | None = Query(None, max_length=128),
                limit: int = Limit, offset: int = Offset, cursor: str | None = Cursor,
                ctx: HttpContext = Depends(context), who: Principal = Depends(viewer)) -> Page[StudyOut]:
        """Studies received, newest study UID first."""
        rows, nxt = listing(ctx, who, "studies", {"state": state, "patient_key": patient_key}, limit, offset, cursor)
        return Page[StudyOut](items=[StudyOut.model_validate(x) for x in rows], limit=limit, offset=offset,
                              next_cursor=nxt)

    @r.get("/cases", response_model=Page[CaseOut])
    def cases(patient_key: str | None = Query(None, max_length=128), limit: int = Limit, offset: int = Offset,
              cursor: str | None = Cursor, ctx: HttpContext = Depends(context),
              who: Principal = Depends(viewer)) -> Page[CaseOut]:
        """Patient cases (one per patient key)."""
        rows, nxt = listing(ctx, who, "cases", {"patient_key": patient_key}, limit, offset, cursor)
        return Page[CaseOut](items=[CaseOut.model_validate(x) for x in rows], limit=limit, offset=offset,
                             next_cursor=nxt)

    @r.get("/jobs", response_model=Page[JobOut])
    def jobs(state: str | None = Query(None, max_length=32), kind: str | None = Query(None, max_length=32),
             limit: int = Limit, offset: int = Offset, cursor: str | None = Cursor,
             ctx: HttpContext = Depends(context), who: Principal = Depends(viewer)) -> Page[JobOut]:
        """Jobs, newest first (their payloads are not listed)."""
        rows, nxt = listing(ctx, who, "jobs", {"state": state, "kind": kind}, limit, offset, cursor)
        return Page[JobOut](items=[JobOut.model_validate(x) for x in rows], limit=limit, offset=offset,
                            next_cursor=nxt)

    @r.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "no such job"}})
    def job(job_id: int = row_id(), ctx: HttpContext = Depends(context), who: Principal = Depends(viewer)) -> JobOut:
        """One job."""
        found = ctx.store.job(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id}")
        return JobOut.model_validate(found.model_dump())

    @r.get("/results", response_model=Page[ResultOut])
    def results(patient_key: str | None = Query(None, max_length=128), study_uid: str | None = Query(None, max_length=64),
                model: str | None = Query(None, max_length=128), limit: int = Limit, offset: int = Offset,
                cursor: str | None = Cursor, ctx: HttpContext = Depends(context),
                who: Principal = Depends(viewer)) -> Page[ResultOut]:
        """Model results (their summaries; bodies are in the outputs)."""
        rows, nxt = listing(ctx, who, "results", {"patient_key": patient_key, "study_uid": study_uid, "model": model},
                            limit, offset, cursor)
        return Page[ResultOut](items=[ResultOut.model_validate(x) for x in rows], limit=limit, offset=offset,
                               next_cursor=nxt)

    @r.get("/outbox", response_model=Page[OutboxOut])
    def outbox(state: str | None = Query(None, max_length=32), destination: str | None = Query(None, max_length=32),
               limit: int = Limit, offset: int = Offset, cursor: str | None = Cursor,
               ctx: HttpContext = Depends(context), who: Principal = Depends(viewer)) -> Page[OutboxOut]:
        """Outputs to deliver and delivered (never their payloads)."""
        rows, nxt = listing(ctx, who, "outbox", {"state": state, "destination": destination}, limit, offset, cursor)
        items = [OutboxOut.model_validate({**x, "meta": json.loads(x["meta"] or "{}")}) for x in rows]
        return Page[OutboxOut](items=items, limit=limit, offset=offset, next_cursor=nxt)

    @r.get("/refusals", response_model=Page[RefusalOut])
    def refusals(limit: int = Limit, offset: int = Offset, cursor: str | None = Cursor,
                 ctx: HttpContext = Depends(context), who: Principal = Depends(viewer)) -> Page[RefusalOut]:
        """Refused instances and associations (status and reason; the file is kept in <data>/rejected)."""
        rows, nxt = listing(ctx, who, "rejections", {}, limit, offset, cursor)
        return Page[RefusalOut](items=[RefusalOut.model_validate(x) for x in rows], limit=limit, offset=offset,
                                next_cursor=nxt)

    @r.get("/models", response_model=list[ModelOut])
    def list_models(ctx: HttpContext = Depends(context), who: Principal = Depends(viewer)) -> list[ModelOut]:
        """Every model: loaded (version, card, activity), failed (why) or disabled; operator switches."""
        return models(ctx)

    return r
