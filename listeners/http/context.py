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
    settings: Settings
    store: Store
    registry: ModelRegistry | None = None
    enqueue_case: Callable[[str], int] | None = None  # Pipeline.enqueue_case: re-evaluate a patient case
    started_at: float = field(default_factory=time.time)


def context(request: Request) -> HttpContext:
    """The application's context (a FastAPI dependency)."""
    ctx: HttpContext = request.app.state.ctx
    return ctx
