"""FHIR write-back of one result resource, idempotently.

Resources we write carry an identifier (or, for Provenance, a meta.tag) in the result system
naming the question they answer. A resource with such an identifier is upserted: created when
absent (conditional create), left alone when the server holds the same or a newer evaluation,
else replaced in place and marked amended (``cds.fhir.upsert``). A Provenance (tag only) is a
conditional create (``If-None-Exist``): created once per evaluation. A resource that has an
``id`` but no such handle is PUT instead.

A clinician's review changes the status of a resource already written (IHE AIRA: preliminary ->
final, amended or entered-in-error). A conditional create would leave the existing resource as
it is and the upsert would call the same evaluation "already present", so a resource tagged with
a review (``urn:breast-cds:review``) takes a third path: a conditional update
(``PUT RiskAssessment?identifier=system|value``), which replaces the resource that carries the
identifier, or creates it when the AI's own resource has not arrived yet. A later review already
on the server is never overwritten by an earlier one delivered late, and the AI's own
RiskAssessment delivered after its review (an outage reorders the outbox) does not undo it.
"""

from __future__ import annotations

import json
from typing import Any

from cds.contracts.errors import PermanentError
from cds.fhir.client import FhirClient, FhirError, token_query
from cds.fhir.upsert import result_identifier, upsert
from cds.writers.fhir_resources import RESULT_SYSTEM, review_of, without_review
from cds.writers.supersession import evaluation_of


def conditional_query(resource: dict[str, Any]) -> str | None:
    """The If-None-Exist query that makes re-sending ``resource`` a no-op."""
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == RESULT_SYSTEM and ident.get("value"):
            return token_query("identifier", ident["system"], ident["value"])
    for tag in (resource.get("meta") or {}).get("tag", []):
        if tag.get("system") == RESULT_SYSTEM and tag.get("code"):
            return token_query("_tag", tag["system"], tag["code"])
    return None


def conditional_update(client: FhirClient, resource: dict[str, Any]) -> tuple[int, str, str]:
    """PUT ``resource`` onto whatever resource carries its result identifier (created when none
    does). Left alone (200, nothing written): a resource there set by a later review, or a newer
    evaluation of the same question (the review was of an answer since superseded)."""
    rtype, ident = resource["resourceType"], result_identifier(resource)
    if ident is None:
        raise PermanentError(f"{rtype}: a reviewed resource needs a {RESULT_SYSTEM} identifier to be updated")
    ours = review_of(resource) or 0
    found = client.search(rtype, {"identifier": ident})
    if len(found) > 1:
        raise FhirError(f"{len(found)} {rtype} resources carry one result identifier; expected one", status=409)
    if found and (review_of(found[0]) or 0) > ours:
        return 200, f"{rtype}/{found[0].get('id', '?')}", "a later review is present"
    if found and evaluation_of(found[0]) > evaluation_of(resource):  # a review of a superseded evaluation
        return 200, f"{rtype}/{found[0].get('id', '?')}", "a newer evaluation is present; review not applied"
    r = client.request("PUT", rtype, params={"identifier": ident}, json=resource)
    body = r.json() if r.content else {}
    return r.status_code, f"{rtype}/{body.get('id', '?')}", f"status set to {resource.get('status', '?')}"


def _already_reviewed(client: FhirClient, resource: dict[str, Any]) -> str | None:
    """"Type/id" when the server holds this very AI RiskAssessment already reviewed (the review
    arrived first); None otherwise, and for anything but an unreviewed RiskAssessment."""
    if resource.get("resourceType") != "RiskAssessment" or review_of(resource) is not None:
        return None
    ident = result_identifier(resource)
    found = client.search("RiskAssessment", {"identifier": ident}) if ident else []
    if len(found) != 1 or review_of(found[0]) is None:
        return None
    same = json.dumps(without_review(found[0]), sort_keys=True) == json.dumps(without_review(resource), sort_keys=True)
    return f"RiskAssessment/{found[0].get('id', '?')}" if same else None


def write_back(client: FhirClient, resource: dict[str, Any]) -> tuple[int, str, str]:
    """Send one resource; returns (HTTP status, "Type/id", what was done: created, already
    present, superseded). A resource with a result identifier is upserted (one current resource
    per identifier, see ``cds.fhir.upsert``). Raises FhirError on failure."""
    if review_of(resource) is not None:
        return conditional_update(client, resource)
    reviewed = _already_reviewed(client, resource)
    if reviewed:
        return 200, reviewed, "already present and reviewed"
    query = conditional_query(resource)
    if "id" in resource and query is None:
        status, body = client.update(resource)
        return status, f"{body.get('resourceType', resource['resourceType'])}/{body.get('id', '?')}", "updated"
    if result_identifier(resource):
        return upsert(client, resource, query)
    status, body = client.create(resource, if_none_exist=query)
    rid = f"{body.get('resourceType', resource['resourceType'])}/{body.get('id', '?')}"
    return status, rid, "created" if status == 201 else "already present"
