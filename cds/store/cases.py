"""Per-patient case state: the fingerprint of the inputs last evaluated, and the last case job."""

from __future__ import annotations

import time

from cds.store.db import Database


class CaseStore(Database):
    def case_fingerprint(self, patient_key: str) -> str | None:
        rows = self._query("SELECT fingerprint FROM cases WHERE patient_key=?", (patient_key,))
        return rows[0]["fingerprint"] if rows else None

    def set_case(self, patient_key: str, fingerprint: str | None, job_id: int | None) -> None:
        now = time.time()
        with self.tx() as con:
            con.execute(
                """INSERT INTO cases(patient_key, updated_at, fingerprint, evaluated_at, last_job_id)
                   VALUES (?,?,?,?,?) ON CONFLICT(patient_key) DO UPDATE SET
                   updated_at=excluded.updated_at,
                   fingerprint=COALESCE(excluded.fingerprint, cases.fingerprint),
                   evaluated_at=COALESCE(excluded.evaluated_at, cases.evaluated_at),
                   last_job_id=COALESCE(excluded.last_job_id, cases.last_job_id)""",
                (patient_key, now, fingerprint, now if fingerprint else None, job_id),
            )

    def case_last_job(self, patient_key: str) -> int | None:
        """The case job that last evaluated the patient (its outputs are the current ones)."""
        rows = self._query("SELECT last_job_id FROM cases WHERE patient_key=?", (patient_key,))
        return int(rows[0]["last_job_id"]) if rows and rows[0]["last_job_id"] is not None else None

    def active_patients(self, since: float) -> list[str]:
        """Patient keys with a study received since ``since`` (epoch seconds)."""
        return [r[0] for r in self._query(
            "SELECT DISTINCT patient_key FROM studies WHERE last_received>=?", (since,))]
