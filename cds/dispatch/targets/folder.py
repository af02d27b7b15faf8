"""The output folder: where results go when no PACS or FHIR server is configured (and the PDF)."""

from __future__ import annotations

from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.store.durable import copy_durable, write_durable


class FolderTarget:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def deliver(self, item: OutboxItem) -> str:
        """Copy into ``output_dir/<kind>/`` under a name derived from the key (a re-copy
        overwrites the same file), via a temporary file, fsync and rename, so a crash never
        leaves half a file."""
        sub = item.kind if item.kind in ("dicom", "fhir", "pdf") else "other"
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in item.key)[-180:]
        target = self.settings.output_dir / sub / f"{safe}{item.payload_path.suffix}"
        if item.payload is not None:
            write_durable(target, item.payload)
        else:
            copy_durable(item.payload_path, target)
        return f"written to {target}"

    def close(self) -> None:
        pass
