"""The clinical-context logic, independent of where the resources come from (server or folder).

Finds the Patient by identifier (two Patients carrying it: nothing is used, and the reason is
recorded), reads every final Observation of the patient whose code (or a component's code) is in
``settings.loinc`` through :mod:`cds.fhir.mcode`, the primary cancer Condition and its stage,
and the latest ultrasound DiagnosticReport. Every value keeps its unit and source; every value
found and not used is a :class:`NotUsed` with its reason, and a log line names the resource (no
patient data: resource ids and keyed patient keys only).
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, date, datetime
from typing import Any, Protocol

from cds.audit.trail import audit_query
from cds.contracts.domain import ClinicalContext, NotUsed, PatientRef, SourceRef
from cds.contracts.settings import Settings
from cds.fhir import plausibility
from cds.fhir.assemble import assemble
from cds.fhir.mcode import Reading, codes_of, display_of, read_observation, text_of, when_of
from cds.fhir.references import resource_name

log = logging.getLogger(__name__)

USABLE = ("final", "amended", "corrected", "preliminary")
US_WORDS = ("ultrasound", "ultrason", "sonograph", "echograph", "us breast", "breast us")
US_CODES = {"RUS", "US", "24601-7", "26294-9", "38082-0"}
PRIMARY_CANCER_PROFILE = "mcode-primary-cancer-condition"

Found = list[tuple[dict[str, Any], str]]  # (resource, its name: "Type/id" or fullUrl)


class Source(Protocol):
    def find_patients(self, system: str, value: str) -> Found: ...
    def for_patient(self, rtype: str, patient: dict[str, Any], ref: str, codes: list[str] | None) -> Found: ...


class ServerSource:
    """A FHIR server: Patient by identifier; resources by ``patient`` and ``code`` on the server."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def find_patients(self, system: str, value: str) -> Found:
        ident = f"{system}|{value}" if system else value
        return [(p, resource_name(p)) for p in self.client.search("Patient", {"identifier": ident})]

    def for_patient(self, rtype: str, patient: dict[str, Any], ref: str, codes: list[str] | None) -> Found:
        params = {"patient": ref, "_count": "200"}
        if codes:
            params["code"] = ",".join(codes)
        return [(r, resource_name(r)) for r in self.client.search(rtype, params)]


def _age(pat: dict[str, Any], name: str, fallback: str, today: date) -> Reading | NotUsed | None:
    birth = pat.get("birthDate") or fallback
    if not birth:
        return None
    src = SourceRef(kind="Patient", reference=name, display="Patient.birthDate")
    try:
        b = (date.fromisoformat(birth[:10]) if "-" in birth else datetime.strptime(birth, "%Y%m%d").date())
    except (TypeError, ValueError):
        return NotUsed(variable="age_years", reason=f"{name} birthDate is not a full date", source=name)
    age = round((today - b).days / 365.25, 2)
    why = plausibility.check("age_years", age, "a")
    if why:
        return NotUsed(variable="age_years", reason=f"{name} birthDate: {why}", source=name)
    shown = src.model_copy(update={"display": f"age {age:g} a (Patient.birthDate)"})
    return Reading("age_years", age, "a", f"{age:g} a", shown, "", f"{age:g}")


def _is_primary_cancer(cond: dict[str, Any]) -> bool:
    meta = cond.get("meta") if isinstance(cond.get("meta"), dict) else {}
    profiles = meta.get("profile") if isinstance(meta.get("profile"), list) else []
    if any(isinstance(p, str) and PRIMARY_CANCER_PROFILE in p for p in profiles):
        return True
    text = text_of(cond.get("code")).lower()
    return "breast" in text and any(w in text for w in ("malignant", "carcinoma", "cancer"))


def _conditions(found: Found) -> list[Reading]:
    out: list[Reading] = []
    for cond, name in found:
        if not isinstance(cond, dict) or not _is_primary_cancer(cond):
            continue
        when = str(cond.get("recordedDate") or cond.get("onsetDateTime") or "")
        src = SourceRef(kind="Condition", reference=name, display="primary cancer condition")
        dx = display_of(cond.get("code"))
        if dx:
            out.append(Reading("primary_cancer", dx, "", dx, src.model_copy(update={"display": dx}), when, dx))
        stages = cond.get("stage") if isinstance(cond.get("stage"), list) else []
        for st in stages:
            summary = display_of(st.get("summary")) if isinstance(st, dict) else ""
            if summary:
                shown = src.model_copy(update={"display": f"stage {summary} (Condition.stage)"})
                out.append(Reading("stage_group", summary, "", summary, shown, "0000-condition", summary))
                break
    return out


def _is_ultrasound(dr: dict[str, Any]) -> bool:
    concepts = [dr.get("code")] + (dr.get("category") if isinstance(dr.get("category"), list) else [])
    for c in concepts:
        if any(token.split("|")[-1] in US_CODES for token in codes_of(c)):
            return True
        if any(w in text_of(c).lower() for w in US_WORDS):
            return True
    return False


def _report_text(dr: dict[str, Any]) -> str:
    if isinstance(dr.get("conclusion"), str) and dr["conclusion"]:
        return dr["conclusion"]
    for form in dr.get("presentedForm") if isinstance(dr.get("presentedForm"), list) else []:
        if isinstance(form, dict) and str(form.get("contentType", "")).startswith("text/plain") and form.get("data"):
            try:
                return base64.b64decode(form["data"]).decode("utf-8", errors="replace")
            except (binascii.Error, TypeError, ValueError):
                continue
    return ""


def _ultrasound(found: Found) -> tuple[str, SourceRef | None]:
    reports = [(d, n) for d, n in found if isinstance(d, dict) and d.get("status") in USABLE and _is_ultrasound(d)]
    reports.sort(key=lambda dn: when_of(dn[0]), reverse=True)
    for d, name in reports:
        text = _report_text(d)
        if text:
            return text, SourceRef(kind="DiagnosticReport", reference=name, display="Ultrasound report")
    return "", None


def _observations(found: Found, table: dict[str, list[str]]) -> tuple[list[Reading], list[NotUsed]]:
    readings: list[Reading] = []
    refused: list[NotUsed] = []
    for obs, name in found:
        if not isinstance(obs, dict):
            refused.append(NotUsed(variable="?", reason=f"{name}: not a JSON object", source=name))
            continue
        if obs.get("status") not in USABLE:
            continue
        for r in read_observation(obs, name, table):
            (readings if isinstance(r, Reading) else refused).append(r)  # type: ignore[arg-type]
    return readings, refused


def _audit(settings: Settings, patient: PatientRef, types: list[str], ref: str) -> None:
    """BALP PatientQuery record of this context read (server base URL or offline folder)."""
    server = settings.fhir_base_url or f"file:{settings.fhir_offline_dir or ''}"
    audit_query(settings, patient_key=patient.key, server=server, resource_types=types,
                fhir_patient_ref=ref)


def read_context(source: Source, settings: Settings, patient: PatientRef, today: date | None = None) -> ClinicalContext:
    system = settings.fhir_issuer_systems.get(patient.issuer, settings.fhir_patient_identifier_system)
    if not patient.patient_id:
        log.info("patient %s has no Patient ID: clinical context is empty", patient.key)
        return ClinicalContext()
    problems = [NotUsed(variable="?", reason=p, source=p.split(":")[0]) for p in getattr(source, "problems", [])]
    found = source.find_patients(system, patient.patient_id)
    _audit(settings, patient, ["Patient"] + (["Observation", "Condition", "DiagnosticReport"]
                                             if len(found) == 1 else []), found[0][1] if len(found) == 1 else "")
    if not found:
        log.info("patient %s not found in FHIR by identifier system %s", patient.key, system)
        return ClinicalContext(not_used=problems)
    if len(found) > 1:
        names = ", ".join(n for _, n in found)
        log.warning("patient %s: %d Patients (%s) carry the identifier; no clinical value used",
                    patient.key, len(found), names)
        return ClinicalContext(not_used=problems + [NotUsed(
            variable="patient", source=names,
            reason=f"ambiguous patient match: {len(found)} Patients ({names}) carry the identifier "
                   f"(system {system or 'any'}); no clinical value was used")])
    pat, ref = found[0]
    table = settings.loinc.model_dump()
    tokens = sorted({t for ts in table.values() for t in ts})
    readings, refused = _observations(source.for_patient("Observation", pat, ref, tokens), table)
    age = _age(pat, ref, patient.birth_date, today or datetime.now(UTC).date())
    if age is not None:
        (readings if isinstance(age, Reading) else refused).append(age)  # type: ignore[arg-type]
    conds = _conditions(source.for_patient("Condition", pat, ref, None))
    has_stage = any(r.variable == "stage_group" for r in readings)
    readings += [r for r in conds if not (has_stage and r.variable == "stage_group")]
    values, sources, measured, not_used = assemble(readings, problems + refused)
    for n in not_used:
        log.warning("patient %s: %s not used (%s)", patient.key, n.variable, n.source or "-")
    us_text, us_ref = _ultrasound(source.for_patient("DiagnosticReport", pat, ref, None))
    return ClinicalContext(values=values, sources=sources, measured=measured, not_used=not_used,
                           ultrasound_report_text=us_text, ultrasound_report_ref=us_ref, fhir_patient_ref=ref)
