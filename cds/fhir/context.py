"""The patient's clinical context for the recurrence model, from FHIR (server or offline folder).

Finds the Patient by identifier (DICOM Patient ID, with Issuer of Patient ID mapped to an
identifier system by ``settings.fhir_issuer_systems``, else ``fhir_patient_identifier_system``),
then reads the latest final Observation for each variable in ``settings.loinc`` and the latest
ultrasound DiagnosticReport (its conclusion, else its text/plain presentedForm). Values are
normalised to the keys and units the recurrence model reads (see :data:`KEYS`), each with the
SourceRef it came from. With neither a server nor an offline folder configured, the context is
empty and the recurrence model reports the inputs as missing.
"""

from __future__ import annotations

import base64
import logging
import re
from datetime import UTC, date, datetime
from typing import Any, Protocol

from cds.contracts.domain import ClinicalContext, PatientRef, SourceRef
from cds.contracts.settings import Settings

log = logging.getLogger(__name__)

KEYS = ("age_years", "tumour_size_mm", "positive_nodes", "grade", "er", "pr", "her2", "ki67",
        "menopausal_status")
US_WORDS = ("ultrasound", "ultrason", "sonograph", "echograph", "us breast", "breast us")
US_CODES = {"RUS", "US", "24601-7", "26294-9", "38082-0"}


class _Source(Protocol):
    def find_patient(self, system: str, value: str) -> dict[str, Any] | None: ...
    def for_patient(self, rtype: str, patient_ref: str) -> list[dict[str, Any]]: ...


class _ServerSource:
    """Adapter giving the FHIR client the offline source's three questions."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def find_patient(self, system: str, value: str) -> dict[str, Any] | None:
        ident = f"{system}|{value}" if system else value
        found = self.client.search("Patient", {"identifier": ident})
        if len(found) > 1:
            log.warning("%d Patients match one identifier; using the first", len(found))
        return found[0] if found else None

    def for_patient(self, rtype: str, patient_ref: str) -> list[dict[str, Any]]:
        return self.client.search(rtype, {"subject": patient_ref, "_count": "200"})


def _codes(concept: dict[str, Any] | None) -> set[str]:
    out = set()
    for c in (concept or {}).get("coding", []):
        out.add(f"{c.get('system', '')}|{c.get('code', '')}")
    return out


def _when(res: dict[str, Any]) -> str:
    return str(res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
               or res.get("issued") or (res.get("meta") or {}).get("lastUpdated") or "")


def _text_of(concept: dict[str, Any]) -> str:
    parts = [concept.get("text", "")] + [c.get("display", "") or c.get("code", "") for c in concept.get("coding", [])]
    return " ".join(p for p in parts if p).lower()


def _number(obs: dict[str, Any]) -> float | None:
    if "valueQuantity" in obs and "value" in obs["valueQuantity"]:
        return float(obs["valueQuantity"]["value"])
    if "valueInteger" in obs:
        return float(obs["valueInteger"])
    if "valueString" in obs:
        m = re.search(r"-?\d+(\.\d+)?", obs["valueString"])
        return float(m.group()) if m else None
    if "valueCodeableConcept" in obs:
        m = re.search(r"\d+(\.\d+)?", _text_of(obs["valueCodeableConcept"]))
        return float(m.group()) if m else None
    return None


def _word(obs: dict[str, Any]) -> str:
    if "valueCodeableConcept" in obs:
        return _text_of(obs["valueCodeableConcept"])
    if "valueString" in obs:
        return obs["valueString"].lower()
    if "valueBoolean" in obs:
        return "positive" if obs["valueBoolean"] else "negative"
    return ""


def _posneg(text: str) -> str | None:
    if re.search(r"\bneg|not detected|absent|\b0\b|1\+", text):
        return "negative"
    if re.search(r"\bpos|detected|present|3\+|amplified", text):
        return "positive"
    return None


def _value(key: str, obs: dict[str, Any]) -> float | str | None:
    """Normalise one Observation's value to the unit/vocabulary the model expects."""
    if key in ("er", "pr"):
        num = _number(obs) if "valueQuantity" in obs or "valueInteger" in obs else None
        return num if num is not None else _posneg(_word(obs))
    if key == "her2":
        return _posneg(_word(obs)) if _word(obs) else (
            "positive" if (_number(obs) or 0) >= 3 else "negative" if _number(obs) is not None else None)
    if key == "menopausal_status":
        w = _word(obs).lower()
        codes = {c.get("code") for c in (obs.get("valueCodeableConcept") or {}).get("coding", [])}
        if "307429007" in codes or "post" in w or "after" in w:  # SNOMED "After menopause"
            return "post"
        if "309606002" in codes or "pre" in w or "peri" in w or "before" in w:  # "Before menopause"
            return "pre"
        return None
    num = _number(obs)
    if num is None:
        return None
    if key == "tumour_size_mm":
        unit = str((obs.get("valueQuantity") or {}).get("code") or (obs.get("valueQuantity") or {}).get("unit") or "mm")
        return num * 10 if unit.lower() == "cm" else num
    if key == "positive_nodes":
        return int(num)
    if key == "grade":
        g = int(num)
        return g if 1 <= g <= 3 else None
    return num


def _age_years(birth: str, today: date) -> float | None:
    try:
        b = date.fromisoformat(birth[:10]) if "-" in birth else datetime.strptime(birth, "%Y%m%d").date()
    except ValueError:
        return None
    return round((today - b).days / 365.25, 2)


def _is_ultrasound(dr: dict[str, Any]) -> bool:
    concepts = [dr.get("code") or {}] + list(dr.get("category") or [])
    for c in concepts:
        if any(token.split("|")[1] in US_CODES for token in _codes(c)):
            return True
        if any(w in _text_of(c) for w in US_WORDS):
            return True
    return False


def _report_text(dr: dict[str, Any]) -> str:
    if dr.get("conclusion"):
        return str(dr["conclusion"])
    for form in dr.get("presentedForm", []):
        if str(form.get("contentType", "")).startswith("text/plain") and form.get("data"):
            return base64.b64decode(form["data"]).decode("utf-8", errors="replace")
    return ""


def clinical_context_from(source: _Source, settings: Settings, patient: PatientRef,
                          today: date | None = None) -> ClinicalContext:
    """The context logic, independent of where the resources come from."""
    system = settings.fhir_issuer_systems.get(patient.issuer, settings.fhir_patient_identifier_system)
    if not patient.patient_id:
        log.info("patient %s has no Patient ID: clinical context is empty", patient.key)
        return ClinicalContext()
    pat = source.find_patient(system, patient.patient_id)
    if pat is None:
        log.info("patient %s not found in FHIR by identifier system %s", patient.key, system)
        return ClinicalContext()
    ref = f"Patient/{pat['id']}"
    values: dict[str, float | str] = {}
    sources: dict[str, SourceRef] = {}
    today = today or datetime.now(UTC).date()
    age = _age_years(pat.get("birthDate", "") or patient.birth_date, today)
    if age is not None:
        values["age_years"] = age
        sources["age_years"] = SourceRef(kind="Patient", reference=ref, display="Patient.birthDate")
    wanted = settings.loinc.model_dump()
    observations = [o for o in source.for_patient("Observation", ref)
                    if o.get("status") in ("final", "amended", "corrected", "preliminary")]
    observations.sort(key=_when, reverse=True)
    for key, tokens in wanted.items():
        for obs in observations:
            codes = _codes(obs.get("code"))
            if not any(t in codes for t in tokens):
                continue
            val = _value(key, obs)
            if val is None:
                log.warning("Observation/%s (%s): value not understood; skipped", obs.get("id"), key)
                continue
            values[key] = val
            sources[key] = SourceRef(kind="Observation", reference=f"Observation/{obs.get('id')}",
                                     display=(obs.get("code") or {}).get("text", key))
            break
    reports = [d for d in source.for_patient("DiagnosticReport", ref)
               if _is_ultrasound(d) and d.get("status") in ("final", "amended", "corrected", "preliminary")]
    reports.sort(key=_when, reverse=True)
    us_text, us_ref = "", None
    for d in reports:
        us_text = _report_text(d)
        if us_text:
            us_ref = SourceRef(kind="DiagnosticReport", reference=f"DiagnosticReport/{d.get('id')}",
                               display="Ultrasound report")
            break
    return ClinicalContext(values=values, sources=sources, ultrasound_report_text=us_text,
                           ultrasound_report_ref=us_ref, fhir_patient_ref=ref)


def fetch_clinical_context(settings: Settings, patient: PatientRef) -> ClinicalContext:
    """Server when ``fhir_base_url`` is set, else ``fhir_offline_dir``, else an empty context."""
    if settings.fhir_base_url:
        from cds.fhir.client import FhirClient

        with FhirClient(settings) as client:
            return clinical_context_from(_ServerSource(client), settings, patient)
    if settings.fhir_offline_dir:
        from cds.fhir.offline import OfflineFhirSource

        return clinical_context_from(OfflineFhirSource(settings.fhir_offline_dir), settings, patient)
    return ClinicalContext()
