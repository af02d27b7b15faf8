"""`cds status` as tables: studies, cases, jobs, results, outbox, failures and models."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console
from rich.table import Table

from cds.pipeline.registry import ModelRegistry
from cds.store import Store


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else ""


def print_status(console: Console, store: Store, limit: int = 20) -> None:
    """Render the store's state as tables (shared by status, analyze and demo)."""
    counts = store.counts()
    console.print("[bold]Counts[/bold] " + "; ".join(
        f"{k}: " + ", ".join(f"{s}={n}" for s, n in v.items()) for k, v in counts.items() if v))

    t = Table(title="Studies")
    for c in ("study UID", "patient key", "state", "gen", "instances", "last received"):
        t.add_column(c)
    for s in store.recent_studies(limit):
        t.add_row(s.study_uid, s.patient_key or "", s.state, str(s.generation),
                  str(s.n_instances), _ts(s.last_received))
    console.print(t)

    t = Table(title="Cases")
    for c in ("patient key", "studies (modalities)", "evaluated", "inputs fingerprint", "last job"):
        t.add_column(c)
    for c in store.case_overview(limit):
        t.add_row(c.patient_key, f"{c.n_studies} ({c.modalities or ''})", _ts(c.evaluated_at),
                  c.fingerprint or "", str(c.last_job_id or ""))
    console.print(t)

    t = Table(title="Jobs")
    for c in ("id", "kind", "state", "attempts", "key", "note / last error"):
        t.add_column(c, overflow="fold")
    for j in store.jobs(limit=limit):
        t.add_row(str(j.id), j.kind, j.state, f"{j.attempts}/{j.max_attempts}", j.key, j.last_error or "")
    console.print(t)

    t = Table(title="Results")
    for c in ("job", "kind", "study / modality", "model", "status", "summary"):
        t.add_column(c, overflow="fold")
    for r in store.results(limit=limit):
        t.add_row(str(r.job_id), r.kind, f"{r.study_uid or ''} {r.modality or ''}".strip(),
                  f"{r.model or ''} {r.model_version or ''}".strip(), r.status, r.summary or "")
    console.print(t)

    t = Table(title="Outbox")
    for c in ("id", "kind", "destination", "state", "attempts", "payload", "last error"):
        t.add_column(c, overflow="fold")
    for o in store.outbox_items(limit=limit):
        t.add_row(str(o.id), o.kind, o.destination, o.state, str(o.attempts), o.payload_path.name,
                  o.last_error or "")
    console.print(t)

    t = Table(title="Failures (refused instances, dead jobs, dead outputs)")
    for c in ("when", "what", "id", "reason"):
        t.add_column(c, overflow="fold")
    for r in store.recent_rejections(limit):
        if r.sop_uid:
            what = f"instance refused 0x{r.status:04X}"
        elif r.status == 0x0122:
            what = "SOP classes not offered (negotiation; no instance refused)"
        else:
            what = "association rejected"
        t.add_row(_ts(r.at), what, r.sop_uid or r.calling_ae, r.reason)
    for j in store.jobs("dead", limit=limit):
        t.add_row(_ts(j.updated_at), "job dead", str(j.id), j.last_error or "")
    for o in store.outbox_items("dead", limit=limit):
        t.add_row("", "output dead", str(o.id), o.last_error or "")
    console.print(t)


def print_models(console: Console, registry: ModelRegistry) -> None:
    """Every model the settings name: loaded with its version, disabled, or why it cannot load."""
    t = Table(title="Models")
    for c in ("model", "version", "state", "why / card"):
        t.add_column(c, overflow="fold")
    for m in (*registry.study_models, *registry.case_models):
        t.add_row(m.identity.name, m.identity.version, "loaded", str(m.identity.card or ""))
    for path, why in registry.unavailable.items():
        t.add_row(path, "", "disabled" if path in registry.disabled else "UNAVAILABLE", why)
    console.print(t)
