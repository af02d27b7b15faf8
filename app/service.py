"""Assembles the running service: store, models, listener, scheduler, workers, dispatcher.

`cds serve`, `cds demo` and the tests all build the service here, so there is one way to wire
the stages and one place that decides the start and stop order (stop taking input first, then
finish work in hand, then close the store).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence

from cds.contracts.errors import ModelUnavailable
from cds.contracts.settings import Settings
from cds.dispatch.dispatcher import Dispatcher
from cds.pipeline.handlers import Pipeline
from cds.pipeline.registry import ModelRegistry, build_registry, short_name
from cds.scheduling.stability import StabilityScheduler, check_stable
from cds.scheduling.workers import WorkerPool
from cds.security.startup import prepare_process
from cds.store import Store
from cds.store.pg_notify import NotifyRelay
from listeners.dicom_scp import DicomListener
from listeners.http.context import HttpContext
from listeners.http.server import HttpServer

log = logging.getLogger(__name__)


# The shipped models, in the order they run; a site adds its own with CDS_EXTRA_MODEL_FACTORIES.
SHIPPED_MODELS: tuple[str, ...] = (
    "models.mammography.runtime",
    "models.slides.runtime",
    "models.ultrasound.runtime",
    "models.recurrence.runtime",
)


def require_models(settings: Settings) -> ModelRegistry:
    """Every shipped or site model that is enabled, loaded; else ModelUnavailable naming each.

    A service that started without one of its models would answer "no model" for every study of
    that modality; refusing to start makes the missing package or file visible at once. A site
    that does not want a model switches it off with CDS_DISABLED_MODELS.
    """
    registry = build_registry(settings, SHIPPED_MODELS)
    if registry.failed:
        raise ModelUnavailable("; ".join(
            f"model {path} cannot be loaded: {why} (to run without it: "
            f"CDS_DISABLED_MODELS={short_name(path)})" for path, why in registry.failed.items()))
    return registry


DELIVERY_LANES: tuple[tuple[str, ...], ...] = (("pacs",), ("fhir", "folder"))
"""Outbox destinations each delivery thread serves; together they cover every destination."""

PARTS = ("listen", "work", "dispatch", "schedule", "api")
"""The parts of the service. `cds serve` runs them all in one process; `cds listen`, `cds work`,
`cds dispatch` and `cds api` run one each, against one store and one shared spool."""


class Service:
    def __init__(self, settings: Settings, *, registry: ModelRegistry | None = None,
                 listen: bool = True, http: bool = False, parts: Iterable[str] | None = None,
                 lanes: Sequence[str] = ()) -> None:
        """``parts``: which parts run (default: workers, dispatcher and scheduler, plus the listener
        when ``listen`` and the HTTP surface when ``http`` and ``settings.http_enabled``; `cds
        serve` and the demo ask for HTTP, tests that build a Service for its pipeline do not).
        ``lanes``: the worker lanes (study, slide, case) this process claims; empty = as settings say.
        Models are loaded only by the parts that use them (workers, and the API that shows them)."""
        prepare_process(settings)  # umask 077, 0700 folders, site patient-key secret, no telemetry
        chosen = set(parts) if parts is not None else (
            {"work", "dispatch", "schedule"} | ({"listen"} if listen else set()) | ({"api"} if http else set()))
        unknown = chosen - set(PARTS)
        if unknown:
            raise ValueError(f"unknown service part(s) {sorted(unknown)}; expected some of {PARTS}")
        self.parts = frozenset(chosen)
        self.settings = settings
        needs_models = bool(self.parts & {"work", "api"})
        self.registry = registry if registry is not None else (
            require_models(settings) if needs_models else ModelRegistry(study_models=[], case_models=[]))
        self.store = Store(settings.store_url)
        self.pipeline = Pipeline(settings, self.store, self.registry)
        self.workers = WorkerPool(settings, self.store, self.pipeline.handlers, lanes=lanes)
        self.scheduler = StabilityScheduler(settings, self.store)
        self.listener = DicomListener(settings, self.store) if "listen" in self.parts else None
        self.dispatcher = Dispatcher(settings, self.store)  # every destination: run_once callers
        # The running service delivers to the PACS and to the rest (FHIR, folder) in parallel.
        self.deliverers = [Dispatcher(settings, self.store, destinations=group) for group in DELIVERY_LANES]
        self.http: HttpServer | None = None
        if "api" in self.parts and settings.http_enabled:
            self.http = HttpServer(HttpContext(
                settings, self.store, self.registry,
                enqueue_case=lambda key: self.pipeline.enqueue_case(key, force=True)))
        self._stop = threading.Event()
        self._dispatch_threads: list[threading.Thread] = []
        self._relay: NotifyRelay | None = None

    def start(self) -> None:
        if self.parts & {"work", "dispatch"}:
            self._relay = self.store.relay_notifications()  # PostgreSQL: other processes' commits wake us
            recovered = self.store.recover_orphans()
            if recovered:
                log.info("recovered %d job(s)/output(s) left running by a previous process", recovered)
        if "schedule" in self.parts:
            check_stable(self.settings, self.store)
        if "work" in self.parts:
            threading.Thread(target=self.pipeline.warm_up, name="cds-warm-up", daemon=True).start()
            self.workers.start()
        if "dispatch" in self.parts:
            self._dispatch_threads = [threading.Thread(
                target=d.run_forever, args=(self._stop, self.settings.poll_interval_s),
                name=f"cds-dispatch-{d.destinations[0]}", daemon=True) for d in self.deliverers]
            for thread in self._dispatch_threads:
                thread.start()
        if "schedule" in self.parts:
            self.scheduler.start()
        if self.listener is not None:
            self.listener.start()
        if self.http is not None:
            self.http.start()

    @property
    def http_port(self) -> int:
        """The HTTP port actually bound (0 when HTTP is not served)."""
        return self.http.port if self.http is not None else 0

    def stop(self) -> None:
        if self.http is not None:  # stop taking input first: HTTP requests, then C-STORE
            self.http.stop()
        if self.listener is not None:
            self.listener.stop()
        self.scheduler.stop()
        self._stop.set()
        # A running job is not waited for long: it stays 'running' in the store and is taken up
        # again (idempotently) at the next start, so SIGTERM returns promptly.
        self.workers.stop(timeout=5.0)
        for thread in self._dispatch_threads:
            thread.join(10)
        if self._relay is not None:
            self._relay.stop()
        self.dispatcher.close()
        self.store.close()
        log.info("service stopped")
