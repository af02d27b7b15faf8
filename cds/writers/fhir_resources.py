"""FHIR R4 resources for the results: RiskAssessment, DiagnosticReport (with the PDF), Provenance.

Every resource carries an identifier in :data:`RESULT_SYSTEM` built from study, model, version
and output type: the dispatcher's conditional create (``If-None-Exist: identifier=...``) makes a
re-send a no-op on the server. References to things that may not exist as resources on the
server (the ImagingStudy, the DICOM SR, the algorithm as a Device) are *logical* references by
identifier (``urn:dicom:uid`` / ``urn:oid:``), which any R4 server stores without resolving.
Each resource is validated with fhir.resources (R4B) before it is written.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from cds.contracts.domain import (
    Calibrated,
    ClinicalContext,
    DomainCheck,
    ModelIdentity,
    PatientRef,
    RecurrenceResult,
    SourceRef,
)
from cds.contracts.settings import Settings
from reports.quality import domain_text, operating_point_text, out_of_domain

RESULT_SYSTEM = "urn:breast-cds:result"
DICOM_UID_SYSTEM = "urn:dicom:uid"
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
MODEL_SYSTEM = "urn:breast-cds:model"
REVIEW_SYSTEM = "urn:breast-cds:review"  # meta.tag: which clinician review set the status
V3_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# An AI result no clinician has reviewed is preliminary; a review moves it on (IHE AIRA): accepted
# -> final, modified -> amended (the clinician's change is in the resource), rejected ->
# entered-in-error (the result must not be used).
UNREVIEWED_STATUS = "preliminary"
REVIEW_STATUS = {"accepted": "final", "modified": "amended", "rejected": "entered-in-error"}


class FhirValidationError(ValueError):
    """An outgoing resource failed validation; names the resource and the failing field."""


def validate(resource: dict[str, Any]) -> dict[str, Any]:
    """Validate with fhir.resources R4B and return the resource as the model serialises it."""
    rtype = resource.get("resourceType", "")
    try:
        cls = get_fhir_model_class(rtype)
        model = cls.model_validate(resource)
    except Exception as exc:
        ident = (resource.get("identifier") or [{}])[0].get("value", "?")
        raise FhirValidationError(f"{rtype} {ident} is not a valid FHIR R4 resource: {exc}") from exc
    return json.loads(model.model_dump_json(exclude_none=True))


def result_tag(key: str) -> dict[str, str]:
    """A meta.tag derived from the output key: the conditional-create handle for resources
    without an ``identifier`` element (Provenance), searchable everywhere as ``_tag``."""
    return {"system": RESULT_SYSTEM, "code": hashlib.sha256(key.encode()).hexdigest()[:32]}


def _clean(value: Any) -> Any:
    """Drop None values and empty lists so optional parts can be written inline."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write(resource: dict[str, Any], path: Path) -> Path:
    """Validate, then write the resource as JSON (the outbox payload)."""
    body = validate(_clean(resource))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1))
    return path


def identifier(key: str) -> dict[str, str]:
    return {"system": RESULT_SYSTEM, "value": key}


def patient_reference(settings: Settings, patient: PatientRef, clinical: ClinicalContext | None = None
                      ) -> dict[str, Any]:
    """A reference to the patient: the server's Patient when known, else a logical one."""
    if clinical is not None and clinical.fhir_patient_ref:
        return {"reference": clinical.fhir_patient_ref}
    system = settings.fhir_issuer_systems.get(patient.issuer, settings.fhir_patient_identifier_system)
    return {"type": "Patient", "identifier": {"system": system, "value": patient.patient_id or "unknown"}}


def dicom_reference(uid: str, rtype: str | None, display: str) -> dict[str, Any]:
    ref: dict[str, Any] = {"identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"},
                           "display": display}
    if rtype:
        ref["type"] = rtype
    return ref


def device_reference(model: ModelIdentity) -> dict[str, Any]:
    return {"type": "Device", "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{model.device_uid}"},
            "display": f"{model.name} {model.version}"}


def source_reference(src: SourceRef) -> dict[str, Any]:
    if src.kind in ("Observation", "DiagnosticReport", "Patient", "Condition"):
        if "/" in src.reference and not src.reference.startswith("urn:"):
            return {"reference": src.reference, "display": src.display or src.kind}
        return {"display": f"{src.display or src.kind} ({src.reference})"}  # urn:uuid of an offline Bundle
    if src.kind == "ImagingStudy":
        return dicom_reference(src.reference, "ImagingStudy", src.display or "Imaging study")
    return dicom_reference(src.reference, None, src.display or "DICOM object")


def _method(model: ModelIdentity) -> dict[str, Any]:
    return {"coding": [{"system": MODEL_SYSTEM, "code": f"{model.name}|{model.version}",
                        "display": f"{model.name} {model.version}"}],
            "text": f"{model.name} version {model.version}"}


def _qualitative(high: bool) -> dict[str, Any]:
    code = "high" if high else "low"
    return {"coding": [{"system": RISK_PROBABILITY_SYSTEM, "code": code,
                        "display": "High likelihood" if high else "Low likelihood"}]}


def _notes(model: ModelIdentity, extra: str = "") -> list[dict[str, str]]:
    notes = [n for n in (model.notice, extra) if n]
    return [{"text": n} for n in notes]


def risk_assessment_binary(*, key: str, settings: Settings, patient: PatientRef, model: ModelIdentity,
                           outcome: str, calibrated: Calibrated, study_uid: str, sr_uid: str | None,
                           when: datetime, clinical: ClinicalContext | None = None,
                           domain: DomainCheck | None = None) -> dict[str, Any]:
    """RiskAssessment for a calibrated binary prediction (mammography malignancy, LN metastasis).

    Out of the training domain: no qualitativeRisk, and the rationale and a note say why."""
    ood = out_of_domain(domain)
    basis = [dicom_reference(study_uid, "ImagingStudy", "Imaging study analysed")]
    if sr_uid:
        basis.append(dicom_reference(sr_uid, None, "DICOM SR (TID 1500) with the findings"))
    return {
        "resourceType": "RiskAssessment",
        "identifier": [identifier(key)],
        "status": UNREVIEWED_STATUS,
        "subject": patient_reference(settings, patient, clinical),
        "occurrenceDateTime": when.isoformat(),
        "method": _method(model),
        "performer": device_reference(model),
        "basis": basis,
        "prediction": [{
            "outcome": {"text": outcome},
            "probabilityDecimal": round(float(calibrated.probability), 6),
            "qualitativeRisk": None if ood else _qualitative(calibrated.positive),
            "rationale": ("UNRELIABLE, no decision: input out of the model's training domain; " if ood else "")
            + f"calibrated probability {calibrated.probability:.3f}; decision threshold "
              f"{calibrated.threshold:.3f} ({calibrated.threshold_name}); {operating_point_text(calibrated)}",
        }],
        "note": _notes(model) + ([{"text": "Training domain: " + domain_text(domain)}] if domain else []),
    }


def risk_assessment_recurrence(*, key: str, settings: Settings, patient: PatientRef,
                               rec: RecurrenceResult, clinical: ClinicalContext,
                               extra_basis: list[dict[str, Any]]) -> dict[str, Any]:
    """RiskAssessment for recurrence: one prediction per horizon (whenRange 0..N years)."""
    preds = []
    for years, p in sorted(rec.absolute_risk.items()):
        preds.append({
            "outcome": {"text": "Breast cancer recurrence"},
            "probabilityDecimal": round(float(p), 6),
            "qualitativeRisk": _qualitative(rec.risk_group == "high"),
            "whenRange": {"low": {"value": 0, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
                          "high": {"value": int(years), "unit": "a", "system": "http://unitsofmeasure.org",
                                   "code": "a"}},
            "rationale": f"risk score {rec.risk_score:.3f}; group {rec.risk_group} "
                         f"(cut-off {rec.cutoff:.3f}, training median)",
        })
    basis = [source_reference(s) for s in rec.inputs] + extra_basis
    missing = ", ".join(rec.modalities_missing)
    return {
        "resourceType": "RiskAssessment",
        "identifier": [identifier(key)],
        "status": UNREVIEWED_STATUS,
        "subject": patient_reference(settings, patient, clinical),
        "occurrenceDateTime": rec.created_at.isoformat(),
        "method": _method(rec.model),
        "performer": device_reference(rec.model),
        "basis": basis or None,
        "prediction": preds,
        "note": _notes(rec.model, f"inputs missing: {missing}" if missing else "")
        + [{"text": f"Input not used: {n.variable}: {n.reason}"} for n in rec.not_used]
        + [{"text": f"Input encoding: {line}"} for line in rec.input_encoding],
    }


def diagnostic_report(*, key: str, settings: Settings, patient: PatientRef, clinical: ClinicalContext,
                      conclusion: str, pdf: bytes, study_uids: list[str], when: datetime,
                      results_basis: list[dict[str, Any]]) -> dict[str, Any]:
    """A DiagnosticReport carrying the clinician PDF (presentedForm) and a one-line conclusion."""
    return {
        "resourceType": "DiagnosticReport",
        "identifier": [identifier(key)],
        "status": "preliminary",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "OTH",
                                  "display": "Other"}], "text": "AI decision support"}],
        "code": {"coding": [{"system": MODEL_SYSTEM, "code": "breast-cds-report",
                             "display": "Breast cancer decision-support report"}],
                 "text": "Breast cancer decision-support report (AI)"},
        "subject": patient_reference(settings, patient, clinical),
        "effectiveDateTime": when.isoformat(),
        "issued": when.isoformat(),
        "imagingStudy": [dicom_reference(u, "ImagingStudy", "Imaging study") for u in study_uids] or None,
        "conclusion": conclusion,
        "presentedForm": [{"contentType": "application/pdf", "language": "en",
                           "data": base64.b64encode(pdf).decode(), "title": "Decision-support report",
                           "creation": when.isoformat()}],
    }


def provenance(*, key: str, targets: list[dict[str, Any]], models: list[ModelIdentity],
               inputs: list[dict[str, Any]], when: datetime) -> dict[str, Any]:
    """Provenance naming each algorithm (Device, logical) and every input used."""
    return {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": when.isoformat(),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": "CREATE", "display": "create"}]},
        "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                        "code": "assembler", "display": "Assembler"}]},
                   "who": device_reference(m)} for m in models],
        "entity": [{"role": "source", "what": ref} for ref in inputs] or None,
        "meta": {"tag": [result_tag(key)]},
    }


def review_tag(review_id: int) -> dict[str, str]:
    """The meta.tag naming the review that set a resource's status; zero-padded so that the
    later review compares greater as text (the write-back never lets an older review win)."""
    return {"system": REVIEW_SYSTEM, "code": f"{review_id:012d}", "display": "clinician review"}


def review_of(resource: dict[str, Any]) -> int | None:
    """The id of the review that set ``resource``'s status, or None (not reviewed)."""
    for tag in (resource.get("meta") or {}).get("tag", []) or []:
        if tag.get("system") == REVIEW_SYSTEM and str(tag.get("code", "")).isdigit():
            return int(tag["code"])
    return None


def reviewed_risk_assessment(resource: dict[str, Any], *, review_id: int, outcome: str, reviewer: str,
                             reason: str, decision: str | None, removed: list[str],
                             when: datetime) -> dict[str, Any]:
    """The AI's RiskAssessment after a clinician's review: the status the outcome maps to, a note
    saying who decided what and why, and (modified) the clinician's decision beside each
    prediction. The AI's probabilities are kept as they were: they are what was assessed."""
    ra = json.loads(json.dumps(resource))
    ra.pop("id", None)
    ra["status"] = REVIEW_STATUS[outcome]
    meta = ra.setdefault("meta", {})
    meta["tag"] = [t for t in meta.get("tag", []) if t.get("system") != REVIEW_SYSTEM] + [review_tag(review_id)]
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    said = f"{outcome.capitalize()} by {reviewer} on {when.isoformat()}"
    if decision:
        said += f"; clinician's decision: {decision}"
        for pred in ra.get("prediction", []) or []:
            pred["rationale"] = f"Clinician's decision: {decision}. AI: {pred.get('rationale', '')}".strip()
    if removed:
        said += f"; findings removed: {', '.join(removed)}"
    if reason:
        said += f"; reason: {reason}"
    ra["note"] = [n for n in ra.get("note", []) or [] if not str(n.get("text", "")).startswith("Clinician review:")]
    ra["note"].append({"text": f"Clinician review: {said}", "time": when.isoformat()})
    return validate(_clean(ra))


def without_review(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` as the AI wrote it, before any review: what :func:`reviewed_risk_assessment`
    added (status, review tag, the clinician's note and decision) taken out again, so the
    write-back can tell whether a late AI resource is the one already reviewed."""
    ra = json.loads(json.dumps(resource))
    for key in ("id", "meta", "status", "text"):
        ra.pop(key, None)
    ra["note"] = [n for n in ra.get("note", []) or [] if not str(n.get("text", "")).startswith("Clinician review:")]
    for pred in ra.get("prediction", []) or []:
        why = str(pred.get("rationale", ""))
        if why.startswith("Clinician's decision: ") and ". AI: " in why:
            pred["rationale"] = why.split(". AI: ", 1)[1]
    return _clean(ra)


def review_provenance(*, key: str, target: dict[str, Any], reviewer: str, outcome: str, when: datetime,
                      sr_uid: str = "", reason: str = "") -> dict[str, Any]:
    """Provenance of a status change made by a clinician's review: the clinician as verifier,
    the activity UPDATE, the RiskAssessment by identifier, the assessment SR as its source."""
    return validate(_clean({
        "resourceType": "Provenance",
        "target": [target],
        "recorded": when.isoformat(),
        "activity": {"coding": [{"system": V3_DATA_OPERATION, "code": "UPDATE", "display": "revise"}],
                     "text": f"AI result {outcome} by a clinician (status {REVIEW_STATUS[outcome]})"},
        "reason": [{"text": reason}] if reason else None,
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "verifier", "display": "Verifier"}]},
                   "who": {"display": reviewer}}],
        "entity": [{"role": "source", "what": dicom_reference(sr_uid, None, "DICOM SR with the assessment")}]
        if sr_uid else None,
        "meta": {"tag": [result_tag(key)]},
    }))
