"""FHIR write-back of one result resource, idempotently.

Resources we write carry an identifier (or, for Provenance, a meta.tag) in the result system
derived from study, model, version and output type. Writing is a conditional create on it
(``If-None-Exist``): the first send creates (201), any later send of the same result finds it
(200) and creates nothing. A resource that has an ``id`` but no such handle is PUT instead.
"""

from __future__ import annotations

from typing import Any

from cds.fhir.client import FhirClient, token_query
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


def write_back(client: FhirClient, resource: dict[str, Any]) -> tuple[int, str]:
    """Send one resource; returns (HTTP status, "Type/id"). Raises FhirError on failure."""
    query = conditional_query(resource)
    if "id" in resource and query is None:
        status, body = client.update(resource)
    else:
        status, body = client.create(resource, if_none_exist=query)
    return status, f"{body.get('resourceType', resource['resourceType'])}/{body.get('id', '?')}"
