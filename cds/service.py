"""Assembles the running service: store, models, listener, scheduler, workers, dispatcher.

`cds serve`, `cds demo` and the tests all build the service here, so there is one way to wire
the stages and one place that decides the start and stop order (stop taking input first, then
finish work in hand, then close the store).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cds.jobs import WorkerPool
from cds.pipeline import Pipeline
from cds.registry import ModelRegistry, build_registry
from cds.scheduler import StabilityScheduler, check_stable
from cds.settings import Settings
from cds.store import Store
from listeners.dicom_scp import DicomListener

log = logging.getLogger(__name__)


def make_dispatcher(settings: Settings, store: Store) -> Any | None:
    """The outbox dispatcher, when the results issue's module is present in this build."""
    try:
        from cds.dispatch import Dispatcher
    except ImportError:
        log.warning("output dispatch is not available in this build: outputs stay in the outbox")
        return None
    return Dispatcher(settings, store)


class Service:
    def __init__(self, settings: Settings, *, registry: ModelRegistry | None = None,
                 listen: bool = True) -> None:
        settings.ensure_dirs()
        self.settings = settings
        self.store = Store(settings.store_url)
        self.registry = registry if registry is not None else build_registry(settings)
        self.pipeline = Pipeline(settings, self.store, self.registry)
        self.workers = WorkerPool(settings, self.store, self.pipeline.handlers)
        self.scheduler = StabilityScheduler(settings, self.store)
        self.listener = DicomListener(settings, self.store) if listen else None
        self.dispatcher = make_dispatcher(settings, self.store)
        self._stop = threading.Event()
        self._dispatch_thread: threading.Thread | None = None

    def start(self) -> None:
        recovered = self.store.recover_orphans()
        if recovered:
            log.info("recovered %d job(s)/output(s) left running by a previous process", recovered)
        check_stable(self.settings, self.store)
        self.workers.start()
        if self.dispatcher is not None:
            self._dispatch_thread = threading.Thread(
                target=self.dispatcher.run_forever, args=(self._stop, self.settings.poll_interval_s),
                name="cds-dispatch",
                daemon=True)
            self._dispatch_thread.start()
        self.scheduler.start()
        if self.listener is not None:
            self.listener.start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.scheduler.stop()
        self._stop.set()
        # A running job is not waited for long: it stays 'running' in the store and is taken up
        # again (idempotently) at the next start, so SIGTERM returns promptly.
        self.workers.stop(timeout=5.0)
        if self._dispatch_thread is not None:
            self._dispatch_thread.join(10)
        self.store.close()
        log.info("service stopped")
