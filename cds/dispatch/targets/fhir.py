"""The FHIR server: conditional create on the resource's identifier (or its result tag); a
clinician review's status change as a conditional update (see :mod:`cds.fhir.writeback`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from cds.contracts.errors import PeerUnreachable, PermanentError
from cds.contracts.handoffs import OutboxItem
from cds.contracts.settings import Settings
from cds.fhir.client import FhirClient, FhirError
from cds.fhir.writeback import write_back

log = logging.getLogger(__name__)


def resolve_subject(client: FhirClient, resource: dict[str, Any]) -> None:
    """Turn a logical patient reference (identifier only) into ``Patient/<id>`` when the server
    knows the patient, so ``RiskAssessment?subject=Patient/<id>`` finds study-level results too.
    Left logical when the patient is not (yet) on the server, or when the server refuses the
    search (a 4xx: said in the log). A server that does not answer is an outage: the delivery
    waits for it rather than writing a reference it could have resolved, which a later
    conditional create would never correct."""
    subject = resource.get("subject")
    if not isinstance(subject, dict) or subject.get("reference") or not subject.get("identifier"):
        return
    ident = subject["identifier"]
    try:
        found = client.search("Patient", {"identifier": f"{ident.get('system', '')}|{ident.get('value', '')}"})
    except FhirError as exc:
        if not exc.permanent:
            raise PeerUnreachable("fhir", f"patient search before writing {resource.get('resourceType')}: {exc}") from exc
        log.warning("FHIR server refused the patient search (%s); %s keeps its logical subject reference",
                    exc.status, resource.get("resourceType"))
        return
    if len(found) == 1 and found[0].get("id"):
        subject["reference"] = f"Patient/{found[0]['id']}"


class FhirTarget:
    def __init__(self, settings: Settings) -> None:
        self.client = FhirClient(settings)

    def deliver(self, item: OutboxItem) -> str:
        try:
            resource = json.loads(item.read_bytes())
        except (OSError, ValueError) as exc:
            raise PermanentError(f"payload {item.payload_path} is not readable JSON: {exc}") from exc
        resolve_subject(self.client, resource)
        try:
            status, rid, done = write_back(self.client, resource)
        except FhirError as exc:
            if exc.permanent:
                raise PermanentError(f"FHIR server answered {exc.status}: {exc.outcome}" if exc.outcome
                                     else str(exc)) from exc
            raise PeerUnreachable("fhir", str(exc)) from exc
        return f"{status} {done} {rid}"

    def close(self) -> None:
        self.client.close()
