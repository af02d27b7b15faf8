"""Delivery targets, one module each, behind a small registry.

A target turns one outbox item into an acknowledged delivery and returns the peer's answer, or
raises ``TransientError`` (retry later: outage, timeout, out of resources) or ``PermanentError``
(the peer refused it and will again: dead-letter). The dispatcher chooses the target by the
item's destination and kind, nothing else.
"""

from __future__ import annotations

from typing import Protocol

from cds.contracts.errors import PermanentError
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.dispatch.targets.cstore import CStoreTarget
from cds.dispatch.targets.fhir import FhirTarget
from cds.dispatch.targets.folder import FolderTarget
from cds.dispatch.targets.stow import StowTarget


class Target(Protocol):
    def deliver(self, item: OutboxItem) -> str: ...

    def close(self) -> None: ...


class Targets:
    """The configured targets, created on first use and closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._open: dict[str, Target] = {}

    def _make(self, name: str) -> Target:
        s = self.settings
        if name == "folder":
            return FolderTarget(s)
        if name == "stow":
            return StowTarget(s)
        if name == "cstore":
            return CStoreTarget(s)
        return FhirTarget(s)

    def name_for(self, item: OutboxItem) -> str:
        """Which target delivers ``item``; PermanentError when its destination is not configured."""
        s = self.settings
        if item.destination == "folder" or item.kind == "pdf":
            return "folder"
        if item.destination == "pacs":
            if s.dicomweb_url:
                return "stow"
            if s.pacs_host and s.pacs_ae_title:
                return "cstore"
            raise PermanentError("destination 'pacs' but neither pacs_host/pacs_ae_title nor "
                                 "dicomweb_url is set")
        if item.destination == "fhir":
            if not s.fhir_base_url:
                raise PermanentError("destination 'fhir' but fhir_base_url is not set")
            return "fhir"
        raise PermanentError(f"unknown destination {item.destination!r}")

    def for_item(self, item: OutboxItem) -> Target:
        name = self.name_for(item)
        if name not in self._open:
            self._open[name] = self._make(name)
        return self._open[name]

    def idle(self) -> None:
        """Nothing is due now: let targets that keep a connection (C-STORE) release it."""
        for target in self._open.values():
            release = getattr(target, "idle", None)
            if release is not None:
                release()

    def close(self) -> None:
        for target in self._open.values():
            target.close()
        self._open.clear()
