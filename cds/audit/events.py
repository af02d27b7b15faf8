"""FHIR R4 AuditEvent resources following IHE BALP (Basic Audit Log Patterns).

- receipt: DICOM ``DCM#110104`` "DICOM Instances Transferred", action C, at the receiver;
- query: ``audit-event-type#rest`` with subtype ``restful-interaction#search-type`` (BALP
  PatientQuery), action E; client = Source Role ID ``DCM#110153``, server = Destination Role ID
  ``DCM#110152``;
- disclosure: ``DCM#110106`` "Export" with subtype ``iso-21089-lifecycle#disclose`` (BALP
  PrivacyDisclosure.Source), action R;
- read: ``rest`` + ``restful-interaction#read`` (BALP PatientRead), action R.

The patient entity is ``audit-entity-type#1`` Person in ``object-role#1`` Patient, identified by
the keyed patient key (system :data:`PATIENT_KEY_SYSTEM`), never by name, ID or birth date; the
FHIR Patient reference is added when the server's logical id is known. Studies are
``audit-entity-type#2`` System Object in ``object-role#3`` Report, identified by Study Instance
UID (``DCM#110180``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
REST = "http://hl7.org/fhir/restful-interaction"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
ENTITY_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PATIENT_KEY_SYSTEM = "urn:breast-cds:patient-key"
STUDY_UID_SYSTEM = "urn:dicom:uid"

SOURCE_ROLE = {"system": DCM, "code": "110153", "display": "Source Role ID"}
DESTINATION_ROLE = {"system": DCM, "code": "110152", "display": "Destination Role ID"}
APPLICATION = {"system": DCM, "code": "110150", "display": "Application"}


def agent(role: dict[str, str], who: str, *, requestor: bool = False, network: str = "",
          network_type: str = "5") -> dict[str, Any]:
    """An agent; ``network_type`` 1 machine name, 2 IP address, 5 URI."""
    a: dict[str, Any] = {"type": {"coding": [role]}, "who": {"display": who}, "requestor": requestor}
    if network:
        a["network"] = {"address": network, "type": network_type}
    return a


def patient_entity(patient_key: str, fhir_ref: str = "") -> dict[str, Any]:
    what: dict[str, Any] = {"identifier": {"system": PATIENT_KEY_SYSTEM, "value": patient_key}}
    if fhir_ref:
        what["reference"] = fhir_ref
    return {"what": what, "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": ENTITY_ROLE, "code": "1", "display": "Patient"}}


def unknown_patient_entity(why: str) -> dict[str, Any]:
    """A patient entity for a disclosure whose patient could not be determined (``why``, no PHI)."""
    return {"what": {"display": "patient unknown"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": ENTITY_ROLE, "code": "1", "display": "Patient"},
            "description": f"patient unknown: {why}"[:200]}


def study_entity(study_uid: str, instances: int = 0) -> dict[str, Any]:
    e: dict[str, Any] = {
        "what": {"identifier": {"type": {"coding": [{"system": DCM, "code": "110180",
                                                      "display": "Study Instance UID"}]},
                                "system": STUDY_UID_SYSTEM, "value": study_uid}},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": ENTITY_ROLE, "code": "3", "display": "Report"}}
    if instances:
        e["detail"] = [{"type": "NumberOfInstances", "valueString": str(instances)}]
    return e


def object_entity(name: str, description: str, role: str = "4", role_display: str = "Domain Resource") -> dict[str, Any]:
    return {"what": {"display": name}, "description": description,
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": ENTITY_ROLE, "code": role, "display": role_display}}


def audit_event(*, type_: dict[str, str], subtypes: list[dict[str, str]], action: str,
                observer: str, agents: list[dict[str, Any]], entities: list[dict[str, Any]],
                outcome: str = "0", outcome_desc: str = "", profile: str = "") -> dict[str, Any]:
    ev: dict[str, Any] = {
        "resourceType": "AuditEvent", "id": str(uuid.uuid4()),
        "type": type_, "subtype": subtypes, "action": action,
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": outcome, "agent": agents,
        "source": {"observer": {"display": observer},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
        "entity": entities,
    }
    if outcome_desc:
        ev["outcomeDesc"] = outcome_desc
    if profile:
        ev["meta"] = {"profile": [f"https://profiles.ihe.net/ITI/BALP/StructureDefinition/{profile}"]}
    return ev


INSTANCES_TRANSFERRED = {"system": DCM, "code": "110104", "display": "DICOM Instances Transferred"}
EXPORT = {"system": DCM, "code": "110106", "display": "Export"}
REST_TYPE = {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
SEARCH = {"system": REST, "code": "search-type", "display": "search type"}
READ = {"system": REST, "code": "read", "display": "read"}
CREATE = {"system": REST, "code": "create", "display": "create"}
DISCLOSE = {"system": LIFECYCLE, "code": "disclose", "display": "Disclose Record Lifecycle Event"}
