"""The FastAPI application of `cds serve`: one router per concern, OpenAPI at a stable path."""

from __future__ import annotations

from fastapi import FastAPI

from listeners.http import actions, api, auth, health, metrics, pages, review_api, stow
from listeners.http.context import HttpContext

OPENAPI_PATH = "/api/v1/openapi.json"


def create_app(ctx: HttpContext) -> FastAPI:
    """One application per server (and per test): its context, OIDC verifier and metrics registry
    live on ``app.state``, never at module level."""
    app = FastAPI(title="breast-cds", version="1", openapi_url=OPENAPI_PATH, docs_url="/api/v1/docs",
                  redoc_url=None)
    app.state.ctx = ctx
    for module in (health, metrics, auth, api, actions, review_api, stow, pages):
        app.include_router(module.router())
    return app
