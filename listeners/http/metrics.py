"""/metrics in the Prometheus text format, read from the store at scrape time.

WHY a custom collector and not counters incremented in code: the numbers are the store's (one
truth across the C-STORE listener, STOW-RS, workers, several processes and restarts), so a
scrape after a restart shows the same totals as before it. One ``CollectorRegistry`` per
application (kept on ``app.state``), never the process-global default registry.

Label values are bounded: refusal reasons are classes named from the DIMSE status (see
:data:`REFUSAL_CLASSES`), models and destinations come from the configuration.

No authentication by default: the server binds to loopback unless a site decides otherwise, and
the metrics carry counts and model names only (no patient data, no UIDs).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from listeners.http.context import HttpContext, context

REFUSAL_CLASSES: dict[int, str] = {
    0x0000: "association_rejected", 0x0122: "sop_class_not_supported", 0xA700: "out_of_resources",
    0xA900: "sop_class_mismatch", 0xC000: "cannot_parse", 0xC001: "missing_uid", 0xC002: "pixel_length",
    0xC003: "truncated", 0xC004: "missing_attribute", 0xC005: "processing_failure", 0xC006: "invalid_uid",
    0xC007: "wrong_vr", 0xC008: "pixel_encoding", 0xC009: "invalid_image_value",
    0xC00A: "instance_uid_differs", 0xC0FF: "internal_error",
}
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
INFERENCE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def refusal_class(status: int | None) -> str:
    """A bounded label for a refusal: its DIMSE status's name, or the status class."""
    if status is None:
        return "unknown"
    if status in REFUSAL_CLASSES:
        return REFUSAL_CLASSES[status]
    if status & 0xF000 == 0xA000:
        return "refused_other"
    if status & 0xF000 == 0xC000:
        return "cannot_understand_other"
    return "other"


def _histogram(name: str, doc: str, samples: Iterable[tuple[str, float]],
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model"])
    per_model: dict[str, list[float]] = defaultdict(list)
    for model, value in samples:
        per_model[model].append(value)
    for model, values in sorted(per_model.items()):
        cumulative = [(str(b), float(sum(1 for v in values if v <= b))) for b in buckets]
        family.add_metric([model], cumulative + [("+Inf", float(len(values)))], sum_value=float(sum(values)))
    return family


class StoreCollector(Collector):
    """Everything /metrics shows, computed from the store when Prometheus scrapes."""

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        store, now = self.ctx.store, time.time()
        n, size = store.received_totals()
        yield CounterMetricFamily("cds_instances_received", "Instances received and stored (duplicates count).",
                                  value=n)
        yield CounterMetricFamily("cds_instances_received_bytes", "Bytes of the instances stored.", value=size)
        refused = CounterMetricFamily("cds_instances_refused", "Instances and associations refused, by reason.",
                                      labels=["reason"])
        counts: dict[str, int] = defaultdict(int)
        for status, _ in store.rejection_reasons():
            counts[refusal_class(status)] += 1
        for reason, count in sorted(counts.items()):
            refused.add_metric([reason], count)
        yield refused
        yield from self._jobs(now)
        yield from self._outbox(now)
        yield _histogram("cds_model_latency_seconds", "Seconds from a study becoming stable to its results "
                         "delivered, per model.", store.model_latencies(), LATENCY_BUCKETS)
        yield _histogram("cds_model_inference_seconds", "Seconds a model ran per result.", store.inference_seconds(),
                         INFERENCE_BUCKETS)
        reviews = CounterMetricFamily("cds_reviews", "Clinician assessments of AI results, by model and outcome.",
                                      labels=["model", "outcome"])
        review_counts = getattr(store, "review_counts", None)  # ReviewStore (another part) provides it
        if callable(review_counts):
            for (model, outcome), count in sorted(review_counts().items()):
                reviews.add_metric([str(model), str(outcome)], count)
        yield reviews

    def _jobs(self, now: float) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("cds_jobs", "Jobs by kind and state.", labels=["kind", "state"])
        oldest = GaugeMetricFamily("cds_job_oldest_queued_age_seconds", "Age of the oldest queued job, by kind.",
                                   labels=["kind"])
        for kind, state, count, first in self.ctx.store.job_state_counts():
            jobs.add_metric([kind, state], count)
            if state == "queued" and first is not None:
                oldest.add_metric([kind], max(0.0, now - first))
        yield jobs
        yield oldest

    def _outbox(self, now: float) -> Iterator[Metric]:
        depth = GaugeMetricFamily("cds_outbox_depth", "Outputs not yet delivered, by destination and state.",
                                  labels=["destination", "state"])
        oldest = GaugeMetricFamily("cds_outbox_oldest_age_seconds", "Age of the oldest undelivered output.",
                                   labels=["destination"])
        first_by_dest: dict[str, float] = {}
        for dest, state, count, first in self.ctx.store.outbox_depth():
            depth.add_metric([dest, state], count)
            if first is not None and state in ("pending", "delivering"):
                first_by_dest[dest] = min(first, first_by_dest.get(dest, first))
        for dest, first in sorted(first_by_dest.items()):
            oldest.add_metric([dest], max(0.0, now - first))
        yield depth
        yield oldest


def registry_for(request: Request, ctx: HttpContext) -> CollectorRegistry:
    """The application's own registry, made at the first scrape."""
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(ctx))
        request.app.state.metrics_registry = registry
    return registry


def router() -> APIRouter:
    r = APIRouter(tags=["metrics"])

    @r.get("/metrics", response_class=Response,
           responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    def metrics(request: Request, ctx: HttpContext = Depends(context)) -> Response:
        """Prometheus metrics (no authentication: loopback by default; see the module docstring)."""
        return Response(generate_latest(registry_for(request, ctx)), media_type=CONTENT_TYPE_LATEST)

    return r
