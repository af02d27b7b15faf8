"""/health (the process answers) and /ready (it can do its work), both without authentication.

/ready answers 503 with the reasons when the store cannot be read, the spool's filesystem is short
of space, an enabled model did not load, or a configured PACS or FHIR server does not answer.
It never names a patient. The peer probes are those of :mod:`cds.dispatch.peer_watch`, run side
by side and cut off after :data:`PROBE_BUDGET_S`, so a load balancer's check stays quick.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cds.contracts.settings import Settings
from cds.dispatch.peer_watch import fhir_answers, pacs_answers
from listeners.http.context import HttpContext, context

PROBE_BUDGET_S = 6.0


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    checks: dict[str, Check]


class Alive(BaseModel):
    alive: bool
    uptime_s: float


def _store_check(ctx: HttpContext) -> Check:
    """A fresh read-only connection: the service's open one would hide a file made unreadable."""
    path = ctx.store.path
    if path is None:  # a database server (PostgreSQL): a query on the service's own connection
        try:
            ctx.store.ping()
        except Exception as exc:  # the driver's errors differ; any failure means not ready
            return Check(ok=False, detail=f"store cannot be queried: {type(exc).__name__}")
        return Check(ok=True)
    if not path.exists():
        return Check(ok=False, detail=f"store file {path.name} is missing")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return Check(ok=False, detail=f"store cannot be read: {exc}")
    return Check(ok=True)


def _space_check(settings: Settings) -> Check:
    folder = settings.spool_dir if settings.spool_dir.exists() else settings.data_dir
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check(ok=False, detail=f"spool filesystem cannot be inspected: {exc.strerror or exc}")
    ok = free >= settings.ready_min_free_bytes
    return Check(ok=ok, detail=f"{free} bytes free, {settings.ready_min_free_bytes} required")


def _models_check(ctx: HttpContext) -> Check:
    if ctx.registry is None:
        return Check(ok=True, detail="no model registry in this process")
    failed = ctx.registry.failed
    if failed:
        return Check(ok=False, detail="; ".join(f"{k}: {v}" for k, v in failed.items()))
    return Check(ok=True, detail=f"{len(ctx.registry.identities)} model(s) loaded")


def peer_probes(ctx: HttpContext) -> dict[str, Callable[[Settings], bool]]:
    if ctx.peer_probes is not None:
        return ctx.peer_probes
    out: dict[str, Callable[[Settings], bool]] = {}
    if ctx.settings.pacs_configured:
        out["pacs"] = pacs_answers
    if ctx.settings.fhir_base_url:
        out["fhir"] = fhir_answers
    return out


def _peer_checks(ctx: HttpContext) -> dict[str, Check]:
    probes = peer_probes(ctx)
    if not probes:
        return {}
    out: dict[str, Check] = {}
    pool = ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="cds-ready")
    try:
        futures = {name: pool.submit(probe, ctx.settings) for name, probe in probes.items()}
        wait(futures.values(), timeout=PROBE_BUDGET_S)
        for name, fut in futures.items():
            if not fut.done():
                out[name] = Check(ok=False, detail=f"{name} did not answer within {PROBE_BUDGET_S:.0f} s")
            elif fut.exception() is not None:
                out[name] = Check(ok=False, detail=f"{name} probe failed: {type(fut.exception()).__name__}")
            else:
                out[name] = Check(ok=bool(fut.result()), detail="answers" if fut.result() else f"{name} does not answer")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


def readiness(ctx: HttpContext) -> Readiness:
    checks = {"store": _store_check(ctx), "spool_space": _space_check(ctx.settings), "models": _models_check(ctx)}
    checks.update(_peer_checks(ctx))
    reasons = [f"{name}: {c.detail}" for name, c in checks.items() if not c.ok]
    return Readiness(ready=not reasons, reasons=reasons, checks=checks)


def router() -> APIRouter:
    r = APIRouter(tags=["health"])

    @r.get("/health", response_model=Alive)
    def health(ctx: HttpContext = Depends(context)) -> Alive:
        """The process answers (liveness)."""
        return Alive(alive=True, uptime_s=round(time.time() - ctx.started_at, 3))

    @r.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
    def ready(ctx: HttpContext = Depends(context)) -> JSONResponse:
        """Whether the service can do its work now; 503 names each reason."""
        result = readiness(ctx)
        return JSONResponse(result.model_dump(), status_code=200 if result.ready else 503)

    return r
