"""The synthetic patient's EHR data as FHIR R4 resources (a Bundle or an NDJSON bulk export).

Used by ``cds demo`` / ``cds analyze`` (offline FHIR source) and by the tests that load a real FHIR
server. Every value here is synthetic and says so in ``meta.tag``; the Observation codes come
from ``Settings().loinc`` so that the reader and the writer agree on one table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cds.contracts.domain import PatientRef
from cds.contracts.settings import Settings

SYNTHETIC_TAG = {"system": "urn:breast-cds:tag", "code": "synthetic", "display": "Synthetic data"}

# The synthetic patient's clinical variables (an HR+/HER2- early breast cancer, as MRRP targets).
DEFAULT_VALUES: dict[str, Any] = {
    "er": 180.0,  # fmol/l
    "pr": 95.0,  # fmol/l
    "her2": "negative",
    "ki67": 22.0,  # %
    "tumour_size_mm": 24.0,
    "positive_nodes": 2,
    "grade": 2,
    "menopausal_status": "post",
}
ULTRASOUND_CONCLUSION = (
    "Irregular hypoechoic mass at 10 o'clock left breast, 22 mm, angular margins, posterior "
    "shadowing. BI-RADS 4C. Synthetic report."
)


def synthetic_patient() -> PatientRef:
    """The phantom patient every synthetic study of the demo belongs to."""
    return PatientRef(patient_id="SYN-0001", issuer="BREASTCDS", name="Phantom^Patricia",
                      birth_date="19640312", sex="F")


def _split(token: str) -> tuple[str, str]:
    system, _, code = token.partition("|")
    return system, code


def _observation(key: str, value: Any, settings: Settings, patient_ref: str, idx: int) -> dict:
    system, code = _split(getattr(settings.loinc, key)[0])
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"syn-obs-{idx}",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [{"system": "urn:breast-cds:synthetic-observation", "value": f"SYN-0001-{key}"}],
        "status": "final",
        "code": {"coding": [{"system": system, "code": code, "display": key}], "text": key},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": "2026-01-10T09:00:00Z",
    }
    if isinstance(value, str):
        obs["valueCodeableConcept"] = {"text": value}
    elif key in ("positive_nodes", "grade"):
        obs["valueInteger"] = int(value)
    else:
        unit = {"er": "fmol/L", "pr": "fmol/L", "ki67": "%", "tumour_size_mm": "mm"}[key]
        obs["valueQuantity"] = {"value": float(value), "unit": unit,
                                "system": "http://unitsofmeasure.org", "code": unit}
    return obs


def clinical_resources(settings: Settings | None = None, patient: PatientRef | None = None,
                       values: dict[str, Any] | None = None) -> list[dict]:
    """Patient, one Observation per clinical variable, and the ultrasound DiagnosticReport."""
    settings = settings or Settings()
    patient = patient or synthetic_patient()
    values = DEFAULT_VALUES if values is None else values
    system = settings.fhir_issuer_systems.get(patient.issuer, settings.fhir_patient_identifier_system)
    family, _, given = patient.name.partition("^")
    bd = patient.birth_date
    pat = {
        "resourceType": "Patient",
        "id": "syn-patient-1",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [{"system": system, "value": patient.patient_id}],
        "name": [{"family": family, "given": [given] if given else []}],
        "gender": {"F": "female", "M": "male"}.get(patient.sex, "unknown"),
        "birthDate": f"{bd[:4]}-{bd[4:6]}-{bd[6:8]}" if len(bd) == 8 else None,
    }
    pat = {k: v for k, v in pat.items() if v is not None}
    ref = "Patient/syn-patient-1"
    out: list[dict] = [pat]
    for i, (k, v) in enumerate(values.items()):
        out.append(_observation(k, v, settings, ref, i))
    out.append({
        "resourceType": "DiagnosticReport",
        "id": "syn-us-report-1",
        "meta": {"tag": [SYNTHETIC_TAG]},
        "identifier": [{"system": "urn:breast-cds:synthetic-report", "value": "SYN-0001-US"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                  "code": "RUS", "display": "Radiology Ultrasound"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "24601-7",
                             "display": "US Breast"}], "text": "US Breast"},
        "subject": {"reference": ref},
        "effectiveDateTime": "2026-01-08T10:00:00Z",
        "conclusion": ULTRASOUND_CONCLUSION,
    })
    return out


def write_bundle(path: Path, resources: list[dict] | None = None) -> Path:
    """Write a FHIR collection Bundle (what ``fhir_offline_dir`` may hold)."""
    resources = resources if resources is not None else clinical_resources()
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r}
                        for r in resources]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle, indent=1))
    return path


def write_ndjson(folder: Path, resources: list[dict] | None = None) -> Path:
    """Write a bulk-export style folder: one ``<Type>.ndjson`` per resource type."""
    resources = resources if resources is not None else clinical_resources()
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[dict]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(r)
    for t, rs in by_type.items():
        (folder / f"{t}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in rs))
    return folder
