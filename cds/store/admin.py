"""Operator actions and paged listings for the HTTP API: requeue, model switches, filters, and the
aggregates /metrics and the model pages read at request time (so every process sees the same)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from cds.store.db import Database

# The columns each listing may filter on and return; anything else never reaches the SQL.
# Outbox payload blobs and job payloads stay out of listings (they can name the patient).
LISTINGS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "studies": ("study_uid", ("state", "patient_key"), (
        "study_uid", "patient_key", "accession", "study_date", "first_received", "last_received", "state",
        "generation", "stable_at", "n_instances")),
    "cases": ("patient_key", ("patient_key",), (
        "patient_key", "updated_at", "fingerprint", "evaluated_at", "last_job_id")),
    "jobs": ("id", ("state", "kind"), (
        "id", "kind", "state", "attempts", "max_attempts", "next_run_at", "lease_until", "worker",
        "last_error", "created_at", "updated_at", "finished_at")),
    "results": ("id", ("patient_key", "study_uid", "model", "kind", "status"), (
        "id", "job_id", "kind", "patient_key", "study_uid", "modality", "model", "model_version", "status",
        "summary", "created_at", "seconds")),
    "outbox": ("id", ("state", "destination", "kind"), (
        "id", "kind", "destination", "key", "meta", "state", "attempts", "last_error", "next_attempt_at",
        "created_at", "delivered_at")),
    "rejections": ("id", ("status",), ("id", "at", "calling_ae", "sop_uid", "status", "reason")),
}


class ModelActivity(BaseModel):
    """What one model did: results by status, latency study stable -> outputs delivered, inference time."""

    model: str
    n_results: int = 0
    n_by_status: dict[str, int] = {}
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    inference_p50_s: float | None = None
    last_at: float | None = None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# Per (model, result): seconds from the study becoming stable to the last of the job's outputs delivered.
_LATENCY_SQL = """
SELECT r.model AS model, MAX(o.delivered_at) - MAX(s.stable_at) AS latency
FROM results r JOIN studies s ON s.study_uid = r.study_uid
JOIN outbox o ON CAST(json_extract(o.meta, '$.job_id') AS BIGINT) = r.job_id AND o.state = 'delivered'
WHERE r.status = 'ok' AND r.model IS NOT NULL AND s.stable_at IS NOT NULL {where}
GROUP BY r.id HAVING MAX(o.delivered_at) - MAX(s.stable_at) IS NOT NULL"""


class AdminStore(Database):
    """Requeue dead jobs and outputs, switch models on and off, list with paging and filters."""

    def requeue_job(self, job_id: int) -> bool:
        """A dead job back to the queue, due now, with a fresh attempt budget; False if not dead."""
        now = time.time()
        with self.tx() as con:
            cur = con.execute(
                "UPDATE jobs SET state='queued', attempts=0, next_run_at=?, lease_until=NULL, worker=NULL, "
                "finished_at=NULL, updated_at=? WHERE id=? AND state='dead'", (now, now, job_id))
        return bool(cur.rowcount == 1)

    def requeue_output(self, item_id: int) -> bool:
        """A dead output back to delivery, due now, with a fresh attempt count; False if not dead."""
        with self.tx() as con:
            cur = con.execute(
                "UPDATE outbox SET state='pending', attempts=0, next_attempt_at=?, lease_until=NULL, "
                "worker=NULL WHERE id=? AND state='dead'", (time.time(), item_id))
        return bool(cur.rowcount == 1)

    def set_model_enabled(self, model: str, enabled: bool, by: str, reason: str = "") -> None:
        """Persist an operator's switch; the pipeline reads it before running the model."""
        with self.tx() as con:
            con.execute(
                "INSERT INTO model_switches(model, enabled, changed_by, changed_at, reason) VALUES (?,?,?,?,?) "
                "ON CONFLICT(model) DO UPDATE SET enabled=excluded.enabled, changed_by=excluded.changed_by, "
                "changed_at=excluded.changed_at, reason=excluded.reason",
                (model, int(enabled), by, time.time(), reason))

    def model_switches(self) -> dict[str, bool]:
        """Models an operator switched, by name; a model not listed is enabled."""
        return {r["model"]: bool(r["enabled"]) for r in self._query("SELECT model, enabled FROM model_switches")}

    def model_switch_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM model_switches ORDER BY model")]

    def model_activity(self, model: str) -> ModelActivity:
        by_status = {r[0]: r[1] for r in self._query(
            "SELECT status, COUNT(*) FROM results WHERE model=? GROUP BY status", (model,))}
        last = self._query("SELECT MAX(created_at) FROM results WHERE model=?", (model,))[0][0]
        seconds = [r[0] for r in self._query(
            "SELECT seconds FROM results WHERE model=? AND seconds IS NOT NULL", (model,))]
        latencies = [r["latency"] for r in self._query(_LATENCY_SQL.format(where="AND r.model=?"), (model,))]
        return ModelActivity(model=model, n_results=sum(by_status.values()), n_by_status=by_status,
                             latency_p50_s=_quantile(latencies, 0.5), latency_p95_s=_quantile(latencies, 0.95),
                             inference_p50_s=_quantile(seconds, 0.5), last_at=last)

    def page(self, table: str, filters: dict[str, Any], *, limit: int, offset: int = 0,
             after: Any = None) -> list[dict[str, Any]]:
        """Rows of a listing, newest first: ``offset`` paging, or keyset paging with ``after`` (the
        last key of the previous page). Filters on columns outside :data:`LISTINGS` are refused."""
        key, allowed, columns = LISTINGS[table]
        unknown = set(filters) - set(allowed)
        if unknown:
            raise ValueError(f"{table} cannot be filtered on {', '.join(sorted(unknown))}")
        sql = f"SELECT {', '.join(columns)} FROM {table} WHERE 1=1"  # noqa: S608 - names from LISTINGS
        params: list[Any] = []
        for col, val in filters.items():
            if val is not None:
                sql += f" AND {col}=?"
                params.append(val)
        if after is not None:
            sql += f" AND {key} < ?"
            params.append(after)
        sql += f" ORDER BY {key} DESC LIMIT ? OFFSET ?"
        return [dict(r) for r in self._query(sql, (*params, limit, offset))]

    # -- aggregates for /metrics (read at scrape time) -----------------------------------------
    def received_totals(self) -> tuple[int, int]:
        """Instances indexed (duplicates included, each counted once more) and their bytes."""
        row = self._query("SELECT COUNT(*) + COALESCE(SUM(duplicates),0), COALESCE(SUM(size),0) FROM instances")[0]
        return int(row[0]), int(row[1])

    def rejection_reasons(self) -> list[tuple[int | None, str]]:
        return [(r[0], r[1] or "") for r in self._query("SELECT status, reason FROM rejections")]

    def job_state_counts(self) -> list[tuple[str, str, int, float | None]]:
        """(kind, state, count, oldest created_at) per kind and state."""
        return [(r[0], r[1], int(r[2]), r[3]) for r in self._query(
            "SELECT kind, state, COUNT(*), MIN(created_at) FROM jobs GROUP BY kind, state")]

    def outbox_depth(self) -> list[tuple[str, str, int, float | None]]:
        """(destination, state, count, oldest created_at) of outputs not yet delivered."""
        return [(r[0], r[1], int(r[2]), r[3]) for r in self._query(
            "SELECT destination, state, COUNT(*), MIN(created_at) FROM outbox "
            "WHERE state != 'delivered' GROUP BY destination, state")]

    def model_latencies(self) -> list[tuple[str, float]]:
        """(model, seconds from study stable to outputs delivered) per delivered result."""
        return [(r["model"], float(r["latency"])) for r in self._query(_LATENCY_SQL.format(where=""))]

    def inference_seconds(self) -> list[tuple[str, float]]:
        return [(r[0], float(r[1])) for r in self._query(
            "SELECT model, seconds FROM results WHERE model IS NOT NULL AND seconds IS NOT NULL")]

    def ping(self) -> None:
        """A read that fails when the store file cannot be read (for /ready)."""
        self._query("SELECT COUNT(*) FROM sqlite_master")
