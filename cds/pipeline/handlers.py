"""Job handlers: study analysis and patient-case evaluation.

Data flows one way: a study job reads the study's instances from the store, runs the models
registered for its modality, writes their results to the store, renders outputs into the outbox,
and queues a case job for the patient. A case job reads the patient's latest study results and
clinical context, runs the case models (recurrence) when any input changed, and renders the
case outputs (recurrence RiskAssessment, PDF report, Provenance). Both are idempotent: a re-run
replaces the job's results and the outbox keys stop duplicate deliveries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from cds.contracts.domain import (
    CaseInput,
    ClinicalContext,
    PatientRef,
    RecurrenceResult,
    SlideResult,
    StudyAnalysis,
    StudyInput,
    UltrasoundResult,
)
from cds.scheduling.workers import PermanentJobError
from cds.fhir.context import fetch_clinical_context
from cds.writers import outputs as writers
from cds.pipeline.registry import ModelRegistry
from cds.contracts.settings import Settings
from cds.store import Job, Store

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry

    @property
    def handlers(self) -> dict[str, Any]:
        return {"study": self.run_study_job, "case": self.run_case_job}

    def _job_dir(self, job: Job) -> Path:
        d = self.settings.work_dir / f"job-{job.id}"
        if d.exists():  # an earlier attempt of this job: start clean (idempotent re-run)
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    # -- study ------------------------------------------------------------------------------
    def run_study_job(self, job: Job) -> str:
        p = job.payload
        study_uid, modality = p["study_uid"], p["modality"]
        patient = self.store.patient(p["patient_key"]) or PatientRef()
        instances = self.store.study_instances(study_uid, modality)
        if not instances:
            raise PermanentJobError(f"study {study_uid} has no {modality} instances in the store")
        study_row = self.store.study(study_uid)
        study = StudyInput(
            study_instance_uid=study_uid, modality=modality, patient=patient,
            instances=instances, accession_number=(study_row["accession"] or "") if study_row else "",
            companions=[] if modality == "SR" else self.store.study_instances(study_uid, "SR"),
        )
        models = self.registry.for_modality(modality)
        base = {"kind": "study", "patient_key": patient.key, "study_uid": study_uid,
                "modality": modality}
        if not models:
            why = "; ".join(f"{k}: {v}" for k, v in self.registry.unavailable.items())
            summary = f"no model registered for modality {modality}"
            self.store.replace_results(job.id, [{**base, "status": "no_model", "summary": summary,
                                                 "body": {"unavailable": why} if why else None}])
            log.info("study %s: %s", study_uid, summary)
            self.enqueue_case(patient.key)  # the case still groups this study for the patient
            return summary

        work = self._job_dir(job)
        rows, analyses = [], []
        for model in models:
            try:
                analysis = model.analyze(study, work / model.identity.name)
            except (ValueError, KeyError) as exc:
                raise PermanentJobError(
                    f"{model.identity.name} cannot read study {study_uid}: {exc}") from exc
            analyses.append(analysis)
            rows.append({**base, "kind": "study_analysis", "status": "ok",
                         "model": model.identity.name, "model_version": model.identity.version,
                         "summary": summarize(analysis),
                         "body": analysis.model_dump(mode="json")})
        self.store.replace_results(job.id, rows)
        queued = self._queue_outputs(job, "study", analyses=analyses)
        self.enqueue_case(patient.key)
        return f"{len(analyses)} model(s) ran; {queued} output(s) queued"

    # -- case -------------------------------------------------------------------------------
    def enqueue_case(self, patient_key: str) -> int:
        """Queue a case evaluation keyed by the current inputs: unchanged inputs, no new job."""
        ids = sorted(r.id for r in self.store.results(patient_key=patient_key, kind="study_analysis"))
        digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
        return self.store.enqueue("case", f"case:{patient_key}:{digest}", {"patient_key": patient_key},
                                  self.settings.job_max_attempts)

    def latest_analyses(self, patient_key: str) -> list[StudyAnalysis]:
        """The newest result per (study, model) for one patient."""
        seen: set[tuple[str | None, str | None]] = set()
        out = []
        for r in self.store.results(patient_key=patient_key, kind="study_analysis"):
            if (r.study_uid, r.model) in seen or r.body is None:
                continue
            seen.add((r.study_uid, r.model))
            out.append(StudyAnalysis.model_validate(r.body))
        return out

    def run_case_job(self, job: Job) -> str:
        patient_key = job.payload["patient_key"]
        patient = self.store.patient(patient_key) or PatientRef()
        analyses = self.latest_analyses(patient_key)
        clinical = self._clinical_context(patient)
        fingerprint = hashlib.sha256(
            json.dumps([sorted(a.created_at.isoformat() + a.study_instance_uid for a in analyses),
                        clinical.model_dump(mode="json")], sort_keys=True, default=str).encode()
        ).hexdigest()[:24]
        if self.store.case_fingerprint(patient_key) == fingerprint:
            return "case inputs unchanged since the last evaluation"
        work = self._job_dir(job)
        slide = next(((a.slide, a.study_instance_uid) for a in analyses if a.slide), (None, ""))
        us = next(((a.ultrasound, a.study_instance_uid) for a in analyses if a.ultrasound), (None, ""))
        case = CaseInput(patient=patient, clinical=clinical, slide=slide[0], ultrasound=us[0],
                         slide_study_uid=slide[1], ultrasound_study_uid=us[1], work_dir=work)
        results: list[RecurrenceResult] = []
        rows = []
        base = {"kind": "recurrence", "patient_key": patient_key}
        if not self.registry.case_models:
            rows.append({**base, "status": "no_model",
                         "summary": "no case model registered (recurrence model not available)"})
        for model in self.registry.case_models:
            try:
                result = model.analyze_case(case)
            except ValueError as exc:  # not enough inputs yet (e.g. a mammogram, no record):
                rows.append({**base, "status": "insufficient_input", "model": model.identity.name,
                             "model_version": model.identity.version, "summary": str(exc)})
                continue  # the case is evaluated again when an input arrives
            results.append(result)
            rows.append({**base, "status": "ok", "model": model.identity.name,
                         "model_version": model.identity.version,
                         "summary": f"risk group {result.risk_group}; 5-year risk "
                                    f"{result.absolute_risk.get(5, float('nan')):.2f}; missing: "
                                    f"{', '.join(result.modalities_missing) or 'none'}",
                         "body": result.model_dump(mode="json")})
        self.store.replace_results(job.id, rows)
        queued = 0
        if analyses or results:
            queued = self._queue_outputs(job, "case", patient=patient, analyses=analyses,
                                         clinical=clinical, recurrence=results[0] if results else None)
        self.store.set_case(patient_key, fingerprint, job.id)
        return f"case evaluated ({len(results)} case model(s)); {queued} output(s) queued"

    def _clinical_context(self, patient: PatientRef) -> ClinicalContext:
        return fetch_clinical_context(self.settings, patient)

    # -- outputs ----------------------------------------------------------------------------
    def _queue_outputs(self, job: Job, scope: str, **kw: Any) -> int:
        """Render outputs with the writers and put each in the outbox (idempotent keys)."""
        out_dir = self.settings.work_dir / f"job-{job.id}" / "out"
        out_dir.mkdir(parents=True, exist_ok=True)
        # The writers get the source files from here, not from the store (one-way flow).
        sources = {i.sop_instance_uid: i.path for a in kw["analyses"]
                   for i in self.store.study_instances(a.study_instance_uid)}
        if scope == "study":
            artifacts = []
            for analysis in kw["analyses"]:
                artifacts += writers.study_outputs(self.settings, analysis, out_dir, sources=sources)
        else:
            artifacts = writers.case_outputs(self.settings, kw["patient"], kw["analyses"],
                                             kw["clinical"], kw["recurrence"], out_dir, sources=sources)
        for a in artifacts:
            destination = self._destination(a.kind)
            self.store.outbox_add(a.kind, destination, a.key, a.path,
                                  {"description": getattr(a, "description", ""), "job_id": job.id,
                                   "resource_type": getattr(a, "resource_type", "")})
        return len(artifacts)

    def _destination(self, kind: str) -> str:
        if kind == "dicom" and self.settings.pacs_configured:
            return "pacs"
        if kind == "fhir" and self.settings.fhir_base_url:
            return "fhir"
        return "folder"


def summarize(analysis: StudyAnalysis) -> str:
    """One line for `cds status`: what the model said, with its calibrated decision."""
    if analysis.mammography:
        m = analysis.mammography.exam_malignancy
        n = sum(len(i.lesions) for i in analysis.mammography.images)
        return (f"malignancy p={m.probability:.3f} ({'positive' if m.positive else 'negative'} at "
                f"{m.threshold:.2f}); {n} lesion(s)")
    if analysis.slide:
        s: SlideResult = analysis.slide
        return (f"metastasis p={s.metastasis.probability:.3f} "
                f"({'positive' if s.metastasis.positive else 'negative'}); "
                f"{s.tiles_stage2}/{s.tiles_stage1} tiles at high magnification")
    if analysis.ultrasound:
        u: UltrasoundResult = analysis.ultrasound
        return f"ultrasound features: {len(u.radiomics)} radiomics, box from {u.box_source}"
    return "no findings"
