"""Read-only views for ``cds status``, health checks and the demo's wait for quiet."""

from __future__ import annotations

from cds.store.db import Database
from cds.store.rows import CaseOverviewRow, StudyRow


class StatusStore(Database):
    def counts(self) -> dict[str, dict[str, int]]:
        """Row counts per state, for ``cds status`` and health checks."""
        out: dict[str, dict[str, int]] = {}
        for table, col in (("studies", "state"), ("jobs", "state"), ("outbox", "state"),
                           ("results", "status")):
            out[table] = {r[0]: r[1] for r in self._query(
                f"SELECT {col}, COUNT(*) FROM {table} GROUP BY {col}")}
        out["instances"] = {"total": self._count("SELECT COUNT(*) FROM instances")}
        out["rejections"] = {"total": self._count("SELECT COUNT(*) FROM rejections")}
        out["cases"] = {"total": self._count("SELECT COUNT(*) FROM cases")}
        return out

    def pending_work(self) -> int:
        """Jobs not yet finished plus studies not yet stable (the demo waits for zero)."""
        jobs = self._count("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')")
        studies = self._count("SELECT COUNT(*) FROM studies WHERE state='receiving'")
        outbox = self._count("SELECT COUNT(*) FROM outbox WHERE state IN ('pending','delivering')")
        return jobs + studies + outbox

    def recent_studies(self, limit: int) -> list[StudyRow]:
        """The most recently received studies first."""
        rows = self._query("SELECT * FROM studies ORDER BY last_received DESC LIMIT ?", (limit,))
        return [StudyRow.model_validate(dict(r)) for r in rows]

    def case_overview(self, limit: int) -> list[CaseOverviewRow]:
        """Cases, most recently updated first, with their study count and modalities."""
        rows = self._query(
            "SELECT c.*, (SELECT COUNT(*) FROM studies s WHERE s.patient_key=c.patient_key) "
            "AS n_studies, (SELECT GROUP_CONCAT(DISTINCT i.modality) FROM instances i JOIN "
            "studies s ON s.study_uid=i.study_uid WHERE s.patient_key=c.patient_key) AS modalities "
            "FROM cases c ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [CaseOverviewRow.model_validate(dict(r)) for r in rows]
