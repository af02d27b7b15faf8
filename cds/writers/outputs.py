"""Turn analyses into the files the dispatcher delivers (the pipeline's one entry point).

:func:`study_outputs` writes, per study analysis, the DICOM SEG(s), the TID 1500 SR and the FHIR
RiskAssessment (mammography malignancy or lymph-node metastasis); for ultrasound, only a TID 1500
SR of the lesion region whose features the recurrence model uses. :func:`case_outputs` writes,
per patient case, the recurrence RiskAssessment (and a TID 1500 SR with it in the slide's
study), the clinician PDF inside a DiagnosticReport, a Provenance, and the Encapsulated PDF when
settings ask for it. Every artifact has an idempotency key built from the study (or the case's
inputs), the model name and version and the output type; the outbox and the FHIR conditional
create use it so that a re-run delivers nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from cds.contracts.domain import (
    ClinicalContext,
    ModelIdentity,
    PatientRef,
    RecurrenceResult,
    StudyAnalysis,
)
from cds.contracts.errors import PermanentError
from cds.contracts.settings import Settings
from cds.writers import fhir_resources as fr
from cds.writers import seg as segw
from cds.writers import sr as srw
from cds.writers.common import output_key, read_headers
from cds.writers.supersession import add_predecessor, question_key, stamp, supporting_info, why_they_differ
from reports.quality import OUT_OF_DOMAIN, analysis_domain, out_of_domain

log = logging.getLogger(__name__)


class OutputArtifact(BaseModel):
    """One file for the outbox."""

    kind: Literal["dicom", "fhir", "pdf"]  # "pdf": the readable report, always to the output folder
    path: Path
    key: str  # idempotency key: study (or case inputs) / model / version / output type
    resource_type: str = ""  # FHIR resourceType, or the DICOM Modality (SEG, SR, DOC)
    description: str = ""


def _need(sources: dict[str, Path], uid: str, study_uid: str) -> Path:
    if uid not in sources:
        raise PermanentError(f"source instance {uid} of study {study_uid} is not in the spool; "
                             "cannot reference it from the results")
    return sources[uid]


def study_outputs(settings: Settings, analysis: StudyAnalysis, out_dir: Path,
                  sources: dict[str, Path]) -> list[OutputArtifact]:
    """SEG + TID 1500 SR + RiskAssessment for one study analysis.

    ``sources`` (SOP Instance UID -> file) comes from the caller, never from the store: the
    writers see only what the pipeline hands them.
    """
    return list(iter_study_outputs(settings, analysis, out_dir, sources))


def iter_study_outputs(settings: Settings, analysis: StudyAnalysis, out_dir: Path,
                       sources: dict[str, Path]) -> Iterator[OutputArtifact]:
    """:func:`study_outputs` one artifact at a time, each as soon as it is written: the caller
    queues the SEG for delivery while the SR that references it is still being built."""
    src_paths = sources
    study = analysis.study_instance_uid
    model = analysis.model
    out_dir = out_dir / "study" / hashlib.sha256(output_key(study, model, "").encode()).hexdigest()[:16]
    if analysis.mammography is not None:
        images = analysis.mammography.images
        headers = dict(zip([i.sop_instance_uid for i in images],
                           read_headers([_need(src_paths, i.sop_instance_uid, study) for i in images])))
        segs = segw.mammography_seg(analysis, {u: src_paths[u] for u in headers})
        outcome, cal = "Breast malignancy (in situ or invasive carcinoma)", analysis.mammography.exam_malignancy
    elif analysis.slide is not None:
        base_uid = analysis.slide.base_sop_instance_uid
        map_uid = analysis.slide.map_level_sop_instance_uid or base_uid  # the SEG's source level
        level_paths = {u: _need(src_paths, u, study) for u in dict.fromkeys((base_uid, map_uid))}
        headers = dict(zip(level_paths, read_headers(list(level_paths.values()))))
        segs = [segw.slide_seg(analysis, level_paths[map_uid])]
        outcome, cal = "Lymph node metastasis", analysis.slide.metastasis
    elif analysis.ultrasound is not None:  # features for the recurrence model: the region, no diagnosis
        uid = analysis.ultrasound.sop_instance_uid
        headers = {uid: read_headers([_need(src_paths, uid, study)])[0]}
        segs, outcome, cal = [], "", None
    else:
        log.info("study %s (%s, %s): no DICOM/FHIR result writer for this kind of analysis",
                 study, analysis.modality, model.name)
        return
    for n, seg in enumerate(segs, start=1):
        key = output_key(study, model, f"seg-{n}")
        path = segw.save(seg, out_dir / f"seg-{n}.dcm")
        yield (OutputArtifact(kind="dicom", path=path, key=key, resource_type="SEG",
                                   description=f"SEG {seg.SOPInstanceUID} ({model.name})"))
    report = srw.study_sr(analysis, headers, segs)
    path = srw.save(report, out_dir / "sr.dcm")
    yield (OutputArtifact(kind="dicom", path=path, key=output_key(study, model, "sr"), resource_type="SR",
                               description=f"TID 1500 SR {report.SOPInstanceUID} ({model.name})"))
    if cal is None:  # no diagnosis, so no RiskAssessment
        return
    key = output_key(study, model, "fhir-riskassessment")
    ra = fr.risk_assessment_binary(key=key, settings=settings, patient=analysis.patient, model=model,
                                   outcome=outcome, calibrated=cal, study_uid=study,
                                   sr_uid=str(report.SOPInstanceUID), when=analysis.created_at,
                                   domain=analysis_domain(analysis))
    yield (OutputArtifact(kind="fhir", path=fr.write(ra, out_dir / "riskassessment.json"), key=key,
                               resource_type="RiskAssessment", description=f"RiskAssessment: {outcome}"))


def _case_digest(patient: PatientRef, analyses: list[StudyAnalysis], clinical: ClinicalContext,
                 recurrence: RecurrenceResult | None) -> str:
    body = {"patient": patient.key,
            "analyses": sorted(f"{a.study_instance_uid}/{a.model.name}/{a.model.version}/{a.created_at.isoformat()}"
                               for a in analyses),
            "clinical": clinical.model_dump(mode="json"),
            "recurrence": recurrence.model_dump(mode="json", exclude={"created_at"}) if recurrence else None}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _conclusion(analyses: list[StudyAnalysis], recurrence: RecurrenceResult | None) -> str:
    parts = []
    for a in analyses:
        if a.mammography:
            m = a.mammography.exam_malignancy
            parts.append(f"Mammography malignancy probability {m.probability:.2f} "
                         f"({OUT_OF_DOMAIN if out_of_domain(analysis_domain(a)) else ('above' if m.positive else 'below')} threshold {m.threshold:.2f}).")
        if a.slide:
            s = a.slide.metastasis
            parts.append(f"Lymph-node metastasis probability {s.probability:.2f} "
                         f"({OUT_OF_DOMAIN if out_of_domain(analysis_domain(a)) else ('above' if s.positive else 'below')} threshold {s.threshold:.2f}).")
    if recurrence:
        risks = ", ".join(f"{y} y {p:.0%}" for y, p in sorted(recurrence.absolute_risk.items()))
        parts.append(f"Recurrence risk group {recurrence.risk_group} ({risks}).")
    models = [a.model for a in analyses] + ([recurrence.model] if recurrence else [])
    notice = next((m.notice for m in models if m.notice), "")
    return " ".join(parts + ([notice] if notice else []))


def case_outputs(settings: Settings, patient: PatientRef, analyses: list[StudyAnalysis],
                 clinical: ClinicalContext, recurrence: RecurrenceResult | None, out_dir: Path,
                 sources: dict[str, Path], alternatives: list[RecurrenceResult] | None = None,
                 replaces: dict[str, Path] | None = None) -> list[OutputArtifact]:
    """Recurrence RiskAssessment (+ case SR), PDF in a DiagnosticReport, Provenance, optional
    Encapsulated PDF, for one patient case. ``alternatives``: other recurrence variants, shown
    beside the primary one; ``replaces``: the previous evaluation's DICOM outputs by role, which
    the new ones reference (see :mod:`cds.writers.supersession`)."""
    from reports.pdf import render_pdf, report_context
    from reports.recurrence_pair import add_alternatives

    if not analyses and recurrence is None:
        return []
    src_paths = sources
    digest = _case_digest(patient, analyses, clinical, recurrence)
    case_id = f"case/{patient.key}/{digest}"
    out_dir = out_dir / "case" / digest
    when = recurrence.created_at if recurrence else max(a.created_at for a in analyses)
    arts: list[OutputArtifact] = []
    targets: list[dict] = []
    models = [a.model for a in analyses] + ([recurrence.model] if recurrence else [])
    # the alignment model that chose the similar reference patches shown in the report
    models += list({sp.model.device_uid: sp.model for a in analyses if a.mammography
                    for sp in a.mammography.similar_pathology}.values())
    inputs: list[dict] = [fr.dicom_reference(a.study_instance_uid, "ImagingStudy", f"{a.modality} study")
                          for a in analyses]
    if recurrence is not None:
        rec_arts, rec_key = _recurrence_outputs(settings, patient, analyses, clinical, recurrence,
                                                case_id, out_dir, src_paths, replaces or {})
        arts += rec_arts
        targets.append({"type": "RiskAssessment", "identifier": fr.identifier(rec_key)})
        inputs += [fr.source_reference(s) for s in recurrence.inputs]
    else:
        inputs += [fr.source_reference(s) for s in clinical.sources.values()]
    targets += _study_risk_assessment_targets(analyses)

    others = [why_they_differ(recurrence, o) for o in alternatives or []] if recurrence else []
    pdf = render_pdf(add_alternatives(report_context(patient, analyses, clinical, recurrence, src_paths),
                                      recurrence, alternatives or [], others))
    lead = recurrence.model if recurrence else analyses[0].model
    arts.append(_pdf_output(pdf, out_dir, case_id, lead))
    dr_art = _diagnostic_report_output(settings, patient, analyses, clinical, recurrence, pdf,
                                       case_id, lead, when, out_dir, targets, others)
    arts.append(dr_art)
    targets.append({"type": "DiagnosticReport", "identifier": fr.identifier(question_key(patient, "report"))})
    arts.append(_provenance_output(case_id, lead, targets, models, inputs, when, out_dir))
    if settings.encapsulated_pdf and analyses:
        arts += _encapsulated_pdf_outputs(patient, analyses, pdf, case_id, lead, models, when, out_dir, src_paths)
    return arts


def _recurrence_outputs(settings: Settings, patient: PatientRef, analyses: list[StudyAnalysis],
                        clinical: ClinicalContext, recurrence: RecurrenceResult, case_id: str, out_dir: Path,
                        src_paths: dict[str, Path], replaces: dict[str, Path]) -> tuple[list[OutputArtifact], str]:
    """The recurrence RiskAssessment, preceded by a case SR in the slide's study when the slide's
    base image is on disk; returns the artifacts and the RiskAssessment's idempotency key."""
    model = recurrence.model
    arts: list[OutputArtifact] = []
    extra_basis = []
    slide = next((a for a in analyses if a.slide is not None), None)
    if slide is not None:
        base = src_paths.get(slide.slide.base_sop_instance_uid)  # type: ignore[union-attr]
        if base is not None:
            case_sr = srw.case_sr(recurrence, read_headers([base]), f"{case_id}/{slide.study_instance_uid}")
            if "case-sr" in replaces:  # the PACS keeps both: the new SR names the one it replaces
                add_predecessor(case_sr, replaces["case-sr"])
            path = srw.save(case_sr, out_dir / "recurrence-sr.dcm")
            arts.append(OutputArtifact(kind="dicom", path=path, resource_type="SR",
                                       key=output_key(case_id, model, "case-sr"),
                                       description=f"TID 1500 SR (recurrence) {case_sr.SOPInstanceUID}"))
            extra_basis.append(fr.dicom_reference(str(case_sr.SOPInstanceUID), None,
                                                  "DICOM SR (TID 1500) with the recurrence risk"))
        extra_basis.append(fr.dicom_reference(slide.study_instance_uid, "ImagingStudy", "Slide study"))
    key, ident = output_key(case_id, model, "fhir-recurrence"), question_key(patient, "recurrence")
    ra = stamp(fr.risk_assessment_recurrence(key=ident, settings=settings, patient=patient, rec=recurrence,
                                             clinical=clinical, extra_basis=extra_basis), recurrence.created_at)
    arts.append(OutputArtifact(kind="fhir", path=fr.write(ra, out_dir / "recurrence-riskassessment.json"),
                               key=key, resource_type="RiskAssessment", description="RiskAssessment: recurrence"))
    return arts, ident


def _study_risk_assessment_targets(analyses: list[StudyAnalysis]) -> list[dict]:
    """Provenance targets for the study-level RiskAssessments written by study_outputs."""
    return [{"type": "RiskAssessment",
             "identifier": fr.identifier(output_key(a.study_instance_uid, a.model, "fhir-riskassessment"))}
            for a in analyses]


def _pdf_output(pdf: bytes, out_dir: Path, case_id: str, lead: ModelIdentity) -> OutputArtifact:
    """Write the clinician PDF to the case folder."""
    pdf_path = out_dir / "report.pdf"
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    pdf_path.write_bytes(pdf)
    return OutputArtifact(kind="pdf", path=pdf_path, key=output_key(case_id, lead, "pdf"),
                          resource_type="PDF", description="Clinician report (PDF)")


def _diagnostic_report_output(settings: Settings, patient: PatientRef, analyses: list[StudyAnalysis],
                              clinical: ClinicalContext, recurrence: RecurrenceResult | None, pdf: bytes,
                              case_id: str, lead: ModelIdentity, when: datetime, out_dir: Path,
                              risk_targets: list[dict], others: list[str]) -> OutputArtifact:
    """The patient's one current DiagnosticReport: the PDF, a one-paragraph conclusion (the other
    recurrence answer beside the primary one) and every RiskAssessment it summarises."""
    key = output_key(case_id, lead, "fhir-diagnosticreport")
    dr = fr.diagnostic_report(key=question_key(patient, "report"), settings=settings, patient=patient,
                              clinical=clinical, conclusion=" ".join([_conclusion(analyses, recurrence), *others]),
                              pdf=pdf, study_uids=sorted({a.study_instance_uid for a in analyses}), when=when,
                              results_basis=[])
    dr = stamp({**dr, "extension": supporting_info(risk_targets)}, when)
    return OutputArtifact(kind="fhir", path=fr.write(dr, out_dir / "diagnosticreport.json"), key=key,
                          resource_type="DiagnosticReport", description="DiagnosticReport with PDF")


def _unique_references(refs: list[dict]) -> list[dict]:
    """``refs`` without duplicates (compared as sorted JSON), first occurrence kept."""
    seen, uniq = set(), []
    for ref in refs:
        token = json.dumps(ref, sort_keys=True)
        if token not in seen:
            seen.add(token)
            uniq.append(ref)
    return uniq


def _provenance_output(case_id: str, lead: ModelIdentity, targets: list[dict], models: list[ModelIdentity],
                       inputs: list[dict], when: datetime, out_dir: Path) -> OutputArtifact:
    """The Provenance of the case's results: targets, the distinct models, the distinct inputs."""
    key = output_key(case_id, lead, "fhir-provenance")
    prov = fr.provenance(key=key, targets=targets, models=list({m.device_uid: m for m in models}.values()),
                         inputs=_unique_references(inputs), when=when)
    return OutputArtifact(kind="fhir", path=fr.write(prov, out_dir / "provenance.json"), key=key,
                          resource_type="Provenance", description="Provenance of the case results")


def _encapsulated_pdf_outputs(patient: PatientRef, analyses: list[StudyAnalysis], pdf: bytes, case_id: str,
                              lead: ModelIdentity, models: list[ModelIdentity], when: datetime, out_dir: Path,
                              src_paths: dict[str, Path]) -> list[OutputArtifact]:
    """The Encapsulated PDF, placed in the newest analysed study (none if no source image is on disk)."""
    from cds.writers.encapsulated_pdf import encapsulated_pdf, save

    newest = max(analyses, key=lambda a: a.created_at)
    uid = (newest.mammography.images[0].sop_instance_uid if newest.mammography
           else newest.slide.base_sop_instance_uid if newest.slide else None)
    if uid and uid in src_paths:
        pkey = output_key(f"{case_id}/{newest.study_instance_uid}", lead, "encapsulated-pdf")
        ds = encapsulated_pdf(pdf, read_headers([src_paths[uid]])[0], models, pkey, when)
        return [OutputArtifact(kind="dicom", path=save(ds, out_dir / "report-pdf.dcm"), key=pkey,
                               resource_type="DOC", description="Encapsulated PDF report")]
    log.warning("case %s: no source image on disk to place the Encapsulated PDF in its study", patient.key)
    return []


__all__ = ["OutputArtifact", "case_outputs", "study_outputs"]
