"""Model results per job: replaced as a whole when a job runs again, read back typed."""

from __future__ import annotations

import json
import time

from cds.contracts.handoffs import NewResult, ResultRow
from cds.store.db import Database


class ResultStore(Database):
    def replace_results(self, job_id: int, rows: list[NewResult]) -> list[int]:
        """Write a job's results, replacing any from an earlier attempt (jobs are idempotent)."""
        now = time.time()
        ids = []
        with self.tx() as con:
            con.execute("DELETE FROM results WHERE job_id=?", (job_id,))
            for r in rows:
                cur = con.execute(
                    """INSERT INTO results(job_id, kind, patient_key, study_uid, modality, model,
                       model_version, status, summary, body, created_at, seconds)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?)""",
                    (job_id, r.kind, r.patient_key, r.study_uid, r.modality, r.model,
                     r.model_version, r.status, r.summary,
                     json.dumps(r.body) if r.body is not None else None, now, r.seconds),
                )
                ids.append(int(cur.lastrowid or 0))
        return ids

    def results(self, *, patient_key: str | None = None, kind: str | None = None,
                study_uid: str | None = None, limit: int = 500) -> list[ResultRow]:
        sql, params = "SELECT * FROM results WHERE 1=1", []
        for col, val in (("patient_key", patient_key), ("kind", kind), ("study_uid", study_uid)):
            if val is not None:
                sql += f" AND {col}=?"
                params.append(val)
        rows = self._query(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        out = []
        for r in rows:
            d = dict(r)
            d["body"] = json.loads(d["body"]) if d["body"] else None
            out.append(ResultRow.model_validate(d))
        return out
