"""Job handlers: study analysis and patient-case evaluation.

Data flows one way: a study job reads the study's instances from the store, runs the models
registered for its modality, writes their results to the store, renders outputs into the outbox,
and queues a case job for the patient. A case job reads the patient's latest study results and
clinical context, runs the case models (recurrence) when any input changed, and renders the
case outputs (recurrence RiskAssessment, PDF report, Provenance). Both are idempotent: a re-run
replaces the job's results and the outbox keys stop duplicate deliveries.

What happens to a job is decided by the error taxonomy (``cds.contracts.errors``): a model that
cannot read its input raises ``InputError`` (dead-letter), a case model short of inputs raises
``InsufficientInput`` (recorded, re-evaluated when an input arrives).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from cds.contracts.domain import CaseInput, PatientRef, RecurrenceResult, StudyAnalysis, StudyInput
from cds.contracts.errors import InsufficientInput, NothingToAnalyse, PermanentError
from cds.contracts.handoffs import CaseJobPayload, Job, JobHandler, NewResult
from cds.contracts.settings import Settings
from cds.fhir.context import fetch_clinical_context
from cds.pipeline import outbox
from cds.pipeline.registry import ModelRegistry
from cds.pipeline.summary import summarize, summarize_recurrence
from cds.pipeline.supersede import choose_recurrence, previous_dicom_outputs
from cds.store import Store

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry

    @property
    def handlers(self) -> dict[str, JobHandler]:
        return {"study": self.run_study_job, "case": self.run_case_job}

    def _job_dir(self, job: Job) -> Path:
        d = self.settings.work_dir / f"job-{job.id}"
        d.mkdir(parents=True, exist_ok=True)
        for part in d.iterdir():  # an earlier attempt of this job: start clean (idempotent re-run)
            if part.name == "out":  # rendered outputs stay: queued outbox items point at them
                continue
            if part.is_dir():
                shutil.rmtree(part)
            else:
                part.unlink()
        return d

    def _out_dir(self, job: Job) -> Path:
        d = self.settings.work_dir / f"job-{job.id}" / "out"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- study ------------------------------------------------------------------------------
    def _study_input(self, job: Job) -> StudyInput:
        p = job.study
        instances = self.store.study_instances(p.study_uid, p.modality)
        if not instances:
            raise PermanentError(f"study {p.study_uid} has no {p.modality} instances in the store")
        study_row = self.store.study(p.study_uid)
        return StudyInput(
            study_instance_uid=p.study_uid, modality=p.modality,
            patient=self.store.patient(p.patient_key) or PatientRef(),
            instances=instances, accession_number=(study_row.accession or "") if study_row else "",
            companions=[] if p.modality == "SR" else self.store.study_instances(p.study_uid, "SR"),
        )

    @staticmethod
    def warm_up() -> None:
        """Load the output writers' libraries before the first job needs them (highdicom's code
        tables and WeasyPrint's fonts cost ~1.5 s once per process). Never fails the service."""
        try:
            import highdicom.sr  # noqa: F401

            from reports.pdf import warm_up

            warm_up()
        except Exception:  # a writer that cannot load fails the first job instead, with its error
            log.warning("warming up the output writers failed", exc_info=True)

    def run_study_job(self, job: Job) -> str:
        study = self._study_input(job)
        patient_key, study_uid, modality = study.patient.key, study.study_instance_uid, study.modality
        base = {"kind": "study_analysis", "patient_key": patient_key, "study_uid": study_uid,
                "modality": modality}
        models = self.registry.for_modality(modality)
        if not models:
            why = "; ".join(f"{k}: {v}" for k, v in self.registry.unavailable.items())
            summary = f"no model registered for modality {modality}"
            self.store.replace_results(job.id, [NewResult(
                **base, status="no_model", summary=summary, body={"unavailable": why} if why else None)])
            log.info("study %s: %s", study_uid, summary)
            self.enqueue_case(patient_key)  # the case still groups this study for the patient
            return summary

        work = self._job_dir(job)
        rows, analyses = [], []
        switches = self.store.model_switches()
        for model in models:
            ident = {"model": model.identity.name, "model_version": model.identity.version}
            if not switches.get(model.identity.name, True):
                rows.append(self._disabled(base, ident, f"study {study_uid}"))
                continue
            started = time.perf_counter()
            try:
                analysis = model.analyze(study, work / model.identity.name)
            except NothingToAnalyse as exc:  # recognised, deliberately unread: a result, not a failure
                rows.append(NewResult(**base, **ident, status="not_analysed", summary=str(exc)))
                log.info("study %s: %s analysed no instance", study_uid, model.identity.name)
                continue
            analyses.append(analysis)
            rows.append(NewResult(**base, **ident, status="ok", summary=summarize(analysis),
                                  body=analysis.model_dump(mode="json"),
                                  seconds=time.perf_counter() - started))
        self.store.replace_results(job.id, rows)
        # The case (recurrence, PDF, FHIR report) reads these results, not the SEG or SR: it runs
        # on its own lane while this job writes and queues them.
        self.enqueue_case(patient_key)
        queued = outbox.queue_study_outputs(self.settings, self.store, job.id, self._out_dir(job),
                                            analyses)
        return f"{len(analyses)} model(s) ran; {queued} output(s) queued"

    @staticmethod
    def _disabled(base: dict[str, str], ident: dict[str, str], what: str) -> NewResult:
        """An operator switched the model off: recorded as a result so the record says why nothing ran."""
        summary = f"model {ident['model']} is disabled by an operator; not run"
        log.info("%s: %s", what, summary)
        return NewResult(**base, **ident, status="disabled", summary=summary)

    # -- case -------------------------------------------------------------------------------
    def enqueue_case(self, patient_key: str, *, force: bool = False) -> int:
        """Queue a case evaluation keyed by the current inputs: unchanged inputs, no new job.

        ``force`` (an operator's re-evaluation): a new job even when the inputs did not change,
        which runs the case models again instead of stopping at the unchanged fingerprint.
        """
        ids = sorted(r.id for r in self.store.results(patient_key=patient_key, kind="study_analysis"))
        digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
        key = f"case:{patient_key}:{digest}" + (f":forced:{time.time_ns()}" if force else "")
        return self.store.enqueue("case", key, CaseJobPayload(patient_key=patient_key, force=force),
                                  self.settings.job_max_attempts)

    def latest_analyses(self, patient_key: str) -> list[StudyAnalysis]:
        """The newest result per (study, model) for one patient."""
        seen: set[tuple[str | None, str | None]] = set()
        out = []
        for r in self.store.results(patient_key=patient_key, kind="study_analysis"):
            if (r.study_uid, r.model) in seen or r.status != "ok" or r.body is None:
                continue  # "no model" / "not analysed" rows carry no analysis
            seen.add((r.study_uid, r.model))
            out.append(StudyAnalysis.model_validate(r.body))
        return out

    def _run_case_models(self, case: CaseInput) -> tuple[list[RecurrenceResult], list[NewResult]]:
        results: list[RecurrenceResult] = []
        base = {"kind": "recurrence", "patient_key": case.patient.key}
        if not self.registry.case_models:
            return [], [NewResult(**base, status="no_model",
                                  summary="no case model registered (recurrence model not available)")]
        rows = []
        switches = self.store.model_switches()
        for model in self.registry.case_models:
            ident = {"model": model.identity.name, "model_version": model.identity.version}
            if not switches.get(model.identity.name, True):
                rows.append(self._disabled(base, ident, "case"))
                continue
            every = getattr(model, "analyze_case_all", None)  # a model with several variants
            started = time.perf_counter()
            try:
                found = every(case) if callable(every) else [model.analyze_case(case)]
            except InsufficientInput as exc:  # e.g. a mammogram and no clinical record yet:
                rows.append(NewResult(**base, **ident, status="insufficient_input", summary=str(exc)))
                continue  # the case is evaluated again when an input arrives
            seconds = (time.perf_counter() - started) / max(1, len(found))
            for result in found:
                results.append(result)
                rows.append(NewResult(**base, model=result.model.name, model_version=result.model.version,
                                      status="ok", summary=summarize_recurrence(result),
                                      body=result.model_dump(mode="json"), seconds=seconds))
        return results, rows

    def run_case_job(self, job: Job) -> str:
        patient_key = job.case.patient_key
        patient = self.store.patient(patient_key) or PatientRef()
        analyses = self.latest_analyses(patient_key)
        clinical = fetch_clinical_context(self.settings, patient)
        fingerprint = hashlib.sha256(
            json.dumps([sorted(a.created_at.isoformat() + a.study_instance_uid for a in analyses),
                        clinical.model_dump(mode="json")], sort_keys=True, default=str).encode()
        ).hexdigest()[:24]
        if self.store.case_fingerprint(patient_key) == fingerprint and not job.case.force:
            return "case inputs unchanged since the last evaluation"
        work = self._job_dir(job)
        slide = next(((a.slide, a.study_instance_uid) for a in analyses if a.slide), (None, ""))
        us = next(((a.ultrasound, a.study_instance_uid) for a in analyses if a.ultrasound), (None, ""))
        case = CaseInput(patient=patient, clinical=clinical, slide=slide[0], ultrasound=us[0],
                         slide_study_uid=slide[1], ultrasound_study_uid=us[1], work_dir=work)
        results, rows = self._run_case_models(case)
        self.store.replace_results(job.id, rows)
        queued = 0
        if analyses or results:
            primary, others = choose_recurrence(results, self.settings.recurrence_primary)
            queued = outbox.queue_case_outputs(
                self.settings, self.store, job.id, self._out_dir(job), patient=patient,
                analyses=analyses, clinical=clinical, recurrence=primary, alternatives=others,
                replaces=previous_dicom_outputs(self.store, patient_key, job.id))
        self.store.set_case(patient_key, fingerprint, job.id)
        return f"case evaluated ({len(results)} case model(s)); {queued} output(s) queued"
