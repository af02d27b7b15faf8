"""Intake side of the store: patients, studies, instances, rejections, and stable promotion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cds.contracts.domain import InstanceRecord, PatientRef
from cds.contracts.handoffs import StudyJobPayload
from cds.store.db import Database
from cds.store.jobs import insert_job
from cds.store.pg_notify import JOBS_CHANNEL
from cds.store.rows import InstanceRow, RejectionRow, StudyRow


class InstanceStore(Database):
    """Index spooled instances, record refusals, and turn quiet studies into study jobs."""

    def record_instance(
        self,
        rec: InstanceRecord,
        patient: PatientRef,
        *,
        accession: str = "",
        study_date: str = "",
    ) -> bool:
        """Index one durably spooled instance. Returns False for a duplicate SOP Instance UID.

        A new instance in a study that was already stable opens a new generation of the study,
        so its jobs run again with everything received (results are per generation).
        """
        now = time.time()
        with self.tx() as con:
            dup = con.execute(
                "SELECT 1 FROM instances WHERE sop_uid=?", (rec.sop_instance_uid,)
            ).fetchone()
            if dup:
                con.execute(
                    "UPDATE instances SET duplicates=duplicates+1 WHERE sop_uid=?",
                    (rec.sop_instance_uid,),
                )
                return False
            con.execute(
                """INSERT INTO patients(key, patient_id, issuer, name, birth_date, sex, first_seen,
                   updated_at) VALUES (?,?,?,?,?,?,?,?)
                   ON CONFLICT(key) DO UPDATE SET name=excluded.name,
                   birth_date=excluded.birth_date, sex=excluded.sex, updated_at=excluded.updated_at""",
                (patient.key, patient.patient_id, patient.issuer, patient.name,
                 patient.birth_date, patient.sex, now, now),
            )
            generation = self._touch_study(con, rec, patient, accession, study_date, now)
            con.execute(
                """INSERT INTO instances(sop_uid, sop_class, study_uid, series_uid, modality, path,
                   transfer_syntax, size, calling_ae, received_at, generation)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                (rec.sop_instance_uid, rec.sop_class_uid, rec.study_instance_uid,
                 rec.series_instance_uid, rec.modality, str(rec.path), rec.transfer_syntax_uid,
                 rec.size_bytes, rec.calling_ae, now, generation),
            )
        return True

    @staticmethod
    def _touch_study(con: Any, rec: InstanceRecord, patient: PatientRef,
                     accession: str, study_date: str, now: float) -> int:
        """Create the study or count one more instance in it; returns the instance's generation."""
        row = con.execute(
            "SELECT state, generation FROM studies WHERE study_uid=?",
            (rec.study_instance_uid,),
        ).fetchone()
        if row is None:
            con.execute(
                """INSERT INTO studies(study_uid, patient_key, accession, study_date,
                   first_received, last_received, state, generation, n_instances)
                   VALUES (?,?,?,?,?,?, 'receiving', 0, 1)""",
                (rec.study_instance_uid, patient.key, accession, study_date, now, now),
            )
            return 0
        generation = int(row["generation"]) + (1 if row["state"] == "stable" else 0)
        con.execute(
            """UPDATE studies SET last_received=?, state='receiving', generation=?,
               n_instances=n_instances+1 WHERE study_uid=?""",
            (now, generation, rec.study_instance_uid),
        )
        return generation

    def record_rejection(
        self, calling_ae: str, sop_uid: str, status: int, reason: str, quarantine_path: str = ""
    ) -> None:
        with self.tx() as con:
            con.execute(
                """INSERT INTO rejections(at, calling_ae, sop_uid, status, reason, quarantine_path)
                   VALUES (?,?,?,?,?,?)""",
                (time.time(), calling_ae, sop_uid, status, reason, quarantine_path),
            )

    def rejection_recorded_since(self, calling_ae: str, reason: str, since: float) -> bool:
        """Whether this calling AE got a rejection with exactly this reason after ``since``."""
        return bool(self._query(
            "SELECT 1 FROM rejections WHERE calling_ae=? AND reason=? AND at>?",
            (calling_ae, reason, since)))

    def rejections_for(self, *, sop_uid: str | None = None,
                       calling_ae: str | None = None) -> list[RejectionRow]:
        """Rejections of one instance and/or one calling AE, newest first."""
        sql, params = "SELECT * FROM rejections WHERE 1=1", []
        for col, val in (("sop_uid", sop_uid), ("calling_ae", calling_ae)):
            if val is not None:
                sql += f" AND {col}=?"
                params.append(val)
        rows = self._query(sql + " ORDER BY id DESC", tuple(params))
        return [RejectionRow.model_validate(dict(r)) for r in rows]

    def recent_rejections(self, limit: int) -> list[RejectionRow]:
        rows = self._query("SELECT * FROM rejections ORDER BY id DESC LIMIT ?", (limit,))
        return [RejectionRow.model_validate(dict(r)) for r in rows]

    def instance_exists(self, sop_uid: str) -> bool:
        return bool(self._query("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)))

    def instance_row(self, sop_uid: str) -> InstanceRow | None:
        rows = self._query("SELECT * FROM instances WHERE sop_uid=?", (sop_uid,))
        return InstanceRow.model_validate(dict(rows[0])) if rows else None

    def instance_path(self, sop_uid: str) -> Path | None:
        """Where the instance was spooled, or None when it is not indexed."""
        rows = self._query("SELECT path FROM instances WHERE sop_uid=?", (sop_uid,))
        return Path(rows[0]["path"]) if rows else None

    def study_instances(self, study_uid: str, modality: str | None = None) -> list[InstanceRecord]:
        sql = "SELECT * FROM instances WHERE study_uid=?"
        params: tuple[str, ...] = (study_uid,)
        if modality:
            sql += " AND modality=?"
            params += (modality,)
        return [
            InstanceRecord(
                sop_instance_uid=r["sop_uid"], sop_class_uid=r["sop_class"],
                study_instance_uid=r["study_uid"], series_instance_uid=r["series_uid"],
                modality=r["modality"], path=Path(r["path"]),
                transfer_syntax_uid=r["transfer_syntax"] or "", size_bytes=r["size"] or 0,
                calling_ae=r["calling_ae"] or "",
            )
            for r in self._query(sql + " ORDER BY received_at, sop_uid", params)
        ]

    def study(self, study_uid: str) -> StudyRow | None:
        rows = self._query("SELECT * FROM studies WHERE study_uid=?", (study_uid,))
        return StudyRow.model_validate(dict(rows[0])) if rows else None

    def patient(self, key: str) -> PatientRef | None:
        rows = self._query("SELECT * FROM patients WHERE key=?", (key,))
        if not rows:
            return None
        r = rows[0]
        return PatientRef(patient_id=r["patient_id"] or "", issuer=r["issuer"] or "",
                          name=r["name"] or "", birth_date=r["birth_date"] or "", sex=r["sex"] or "")

    def promote_stable_studies(self, stable_age_s: float, max_attempts: int) -> list[str]:
        """Mark studies quiet for ``stable_age_s`` as stable and enqueue one job per modality.

        Done in one transaction, so a crash either leaves the study 'receiving' (checked again
        next tick) or stable with its jobs queued; never stable without jobs.
        """
        now = time.time()
        with self.tx() as con:
            rows = con.execute(
                "SELECT study_uid, generation, patient_key FROM studies "
                "WHERE state='receiving' AND last_received<=?",
                (now - stable_age_s,),
            ).fetchall()
            promoted = [self._promote(con, r, max_attempts, now) for r in rows]
            if promoted:
                self._announce(con, JOBS_CHANNEL)
        if promoted:
            self.jobs_ready.notify()
        return promoted

    def promote_studies(self, study_uids: list[str], max_attempts: int) -> list[str]:
        """Mark these studies complete now (their content or their sender says so), as
        :meth:`promote_stable_studies` would after the stable age; studies already stable are left."""
        now = time.time()
        promoted: list[str] = []
        with self.tx() as con:
            for uid in study_uids:
                row = con.execute("SELECT study_uid, generation, patient_key FROM studies "
                                  "WHERE state='receiving' AND study_uid=?", (uid,)).fetchone()
                if row is not None:
                    promoted.append(self._promote(con, row, max_attempts, now))
            if promoted:
                self._announce(con, JOBS_CHANNEL)
        if promoted:
            self.jobs_ready.notify()
        return promoted

    @staticmethod
    def _promote(con: Any, r: Any, max_attempts: int, now: float) -> str:
        modalities = [m["modality"] for m in con.execute(
            "SELECT DISTINCT modality FROM instances WHERE study_uid=?", (r["study_uid"],))]
        con.execute("UPDATE studies SET state='stable', stable_at=? WHERE study_uid=?", (now, r["study_uid"]))
        for modality in modalities:
            payload = StudyJobPayload(study_uid=r["study_uid"], modality=modality,
                                      patient_key=r["patient_key"], generation=r["generation"])
            insert_job(con, "study", f"study:{r['study_uid']}:{modality}:g{r['generation']}",
                       payload, max_attempts, now)
        return str(r["study_uid"])
