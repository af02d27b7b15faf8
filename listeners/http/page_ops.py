"""View models of the operator pages (jobs, outbox, refusals) and the model pages.

Operators see errors and states, never patient data: jobs are named by id and study UID or keyed
patient key, outputs by their description and destination.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from cds.contracts.domain import ModelIdentity
from cds.store import Store
from listeners.http.context import HttpContext
from listeners.http.page_views import when

JOB_STATES = ("dead", "queued", "running", "done")
OUTBOX_STATES = ("dead", "pending", "delivering", "delivered")


def jobs_page(store: Store, state: str | None, limit: int) -> dict[str, Any]:
    rows = [{"id": j.id, "kind": j.kind, "state": j.state, "attempts": f"{j.attempts}/{j.max_attempts}",
             "subject": getattr(j.payload, "study_uid", "") or j.payload.patient_key, "error": j.last_error or "",
             "updated": when(j.updated_at), "requeue": j.state == "dead"}
            for j in store.jobs(state=state or None, limit=limit)]
    return {"rows": rows, "state": state or "", "states": JOB_STATES}


def outbox_page(store: Store, state: str | None, limit: int) -> dict[str, Any]:
    rows = [{"id": o.id, "kind": o.kind, "destination": o.destination, "state": o.state,
             "attempts": o.attempts, "what": o.meta.description or o.meta.resource_type or o.payload_path.name,
             "job": o.meta.job_id, "error": o.last_error or "", "created": when(o.created_at),
             "requeue": o.state == "dead"} for o in store.outbox_items(state=state or None, limit=limit)]
    return {"rows": rows, "state": state or "", "states": OUTBOX_STATES}


def refusals_page(store: Store, limit: int) -> dict[str, Any]:
    rows = [{"id": r.id, "at": when(r.at), "calling_ae": r.calling_ae or "-", "sop_uid": r.sop_uid or "-",
             "status": f"0x{r.status:04X}" if r.status is not None else "-", "reason": r.reason or ""}
            for r in store.recent_rejections(limit)]
    return {"rows": rows}


def _plain(value: Any) -> Any:
    """Store answers as plain data for a template (pydantic rows, tuples as keys, nested dicts)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {(" / ".join(map(str, k)) if isinstance(k, tuple) else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def identities(ctx: HttpContext) -> dict[str, ModelIdentity]:
    """The loaded models by name (empty when the service runs without a registry)."""
    return {m.name: m for m in (ctx.registry.identities if ctx.registry is not None else [])}


def _enabled(store: Store, name: str) -> tuple[bool, str]:
    """Whether the model is on, and who switched it and why (a model never switched is on)."""
    row = next((r for r in store.model_switch_rows() if r.get("model") == name), None)
    if row is None:
        return True, ""
    return bool(row["enabled"]), f"switched by {row.get('changed_by') or '?'} at {when(row.get('changed_at'))}" + (
        f": {row['reason']}" if row.get("reason") else "")


def _activity(store: Store, name: str) -> tuple[int, dict[str, str]]:
    """How many results the model gave, and its volume and latency figures as display strings."""
    a = store.model_activity(name)

    def secs(v: float | None) -> str:
        return f"{v:.2f} s" if v is not None else "-"

    return a.n_results, {
        "results": str(a.n_results),
        "by status": ", ".join(f"{k} {v}" for k, v in sorted(a.n_by_status.items())) or "-",
        "latency study stable -> delivered, median": secs(a.latency_p50_s),
        "latency study stable -> delivered, p95": secs(a.latency_p95_s),
        "inference, median": secs(a.inference_p50_s), "last result (UTC)": when(a.last_at)}


def _reviews_of(store: Store, name: str) -> dict[str, Any]:
    counts = _plain(store.review_counts())
    if isinstance(counts, dict) and isinstance(counts.get(name), dict):
        return dict(counts[name])
    if isinstance(counts, dict):  # keyed "model / outcome"
        return {k.split(" / ", 1)[1]: v for k, v in counts.items() if k.startswith(f"{name} / ")}
    return {}


def models_page(ctx: HttpContext) -> dict[str, Any]:
    loaded = identities(ctx)
    failed = ctx.registry.failed if ctx.registry is not None else {}
    reviewed = {model for model, _ in ctx.store.review_counts() if model}
    names = sorted(set(loaded) | set(failed) | reviewed)
    rows = []
    for name in names:
        enabled, why = _enabled(ctx.store, name)
        ident = loaded.get(name)
        n_results, activity = _activity(ctx.store, name)
        rows.append({"name": name, "version": ident.version if ident else "-", "enabled": enabled, "why": why,
                     "results": n_results, "latency": activity["latency study stable -> delivered, median"],
                     "reviews": _reviews_of(ctx.store, name), "notice": ident.notice if ident else ""})
    return {"rows": rows, "failed": [{"name": k, "error": v} for k, v in failed.items()]}


def model_page(ctx: HttpContext, name: str) -> dict[str, Any] | None:
    """One model: identity, card, on/off, volume and latency, review outcomes; None if unknown."""
    ident = identities(ctx).get(name)
    n_results, activity = _activity(ctx.store, name)
    if ident is None and not n_results:
        return None
    card: dict[str, Any] = {}
    if ident is not None and ident.card is not None and ident.card.exists():
        card = json.loads(ident.card.read_text())
    enabled, why = _enabled(ctx.store, name)
    return {"name": name, "ident": ident, "enabled": enabled, "why": why, "activity": activity,
            "reviews": _reviews_of(ctx.store, name), "card": card,
            "card_json": json.dumps(card, indent=1)[:20000] if card else ""}
