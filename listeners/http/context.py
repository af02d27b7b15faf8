"""What the HTTP handlers share: settings, store, the loaded models and the pipeline's actions."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from cds.contracts.settings import Settings
from cds.pipeline.registry import ModelRegistry
from cds.store import Store


@dataclass
class HttpContext:
    """Built once per application by the service (or a test); handlers never keep module state."""

    settings: Settings
    store: Store
    registry: ModelRegistry | None = None
    # A NEW case job for the patient even when its inputs did not change (operator re-evaluation).
    enqueue_case: Callable[[str], int] | None = None
    started_at: float = field(default_factory=time.time)
    # /ready's peer probes, by peer name; None = the PACS and FHIR probes of cds.dispatch.peer_watch.
    peer_probes: dict[str, Callable[[Settings], bool]] | None = None


def context(request: Request) -> HttpContext:
    """The application's context (a FastAPI dependency)."""
    ctx: HttpContext = request.app.state.ctx
    return ctx
