"""FHIR write-back of one result resource, idempotently.

Resources we write carry an identifier (or, for Provenance, a meta.tag) in the result system
naming the question they answer. A resource with such an identifier is upserted: created when
absent (conditional create), left alone when the server holds the same or a newer evaluation,
else replaced in place and marked amended (``cds.fhir.upsert``). A Provenance (tag only) is a
conditional create (``If-None-Exist``): created once per evaluation. A resource that has an
``id`` but no such handle is PUT instead.
"""

from __future__ import annotations

from typing import Any

from cds.fhir.client import FhirClient, token_query
from cds.fhir.upsert import result_identifier, upsert
from cds.writers.fhir_resources import RESULT_SYSTEM


def conditional_query(resource: dict[str, Any]) -> str | None:
    """The If-None-Exist query that makes re-sending ``resource`` a no-op."""
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == RESULT_SYSTEM and ident.get("value"):
            return token_query("identifier", ident["system"], ident["value"])
    for tag in (resource.get("meta") or {}).get("tag", []):
        if tag.get("system") == RESULT_SYSTEM and tag.get("code"):
            return token_query("_tag", tag["system"], tag["code"])
    return None


def write_back(client: FhirClient, resource: dict[str, Any]) -> tuple[int, str, str]:
    """Send one resource; returns (HTTP status, "Type/id", what was done: created, already
    present, superseded). A resource with a result identifier is upserted (one current resource
    per identifier, see ``cds.fhir.upsert``). Raises FhirError on failure."""
    query = conditional_query(resource)
    if "id" in resource and query is None:
        status, body = client.update(resource)
        return status, f"{body.get('resourceType', resource['resourceType'])}/{body.get('id', '?')}", "updated"
    if result_identifier(resource):
        return upsert(client, resource, query)
    status, body = client.create(resource, if_none_exist=query)
    rid = f"{body.get('resourceType', resource['resourceType'])}/{body.get('id', '?')}"
    return status, rid, "created" if status == 201 else "already present"
