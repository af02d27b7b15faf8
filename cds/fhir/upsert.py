"""Write a result resource so that the server holds exactly one current answer per identifier.

The resource's result identifier (``urn:breast-cds:result``) names the question it answers (a
study's malignancy, a patient's recurrence, a patient's report). Writing it:

- nothing on the server has that identifier: conditional create (``If-None-Exist``), so two
  writers racing still create one resource (201); when the create answers 200 (another writer
  created it after the search) the search and decision are taken again, so a newer evaluation is
  not lost (bounded; then :class:`TransientError`);
- the server's resource is the same evaluation (same evaluation stamp, or the same content when
  unstamped) or a *newer* one (an old evaluation delivered late): nothing is written (200);
- otherwise the server's resource is replaced in place by the new evaluation with ``PUT`` and
  ``If-Match`` on its version (a concurrent change answers 412 and the decision is taken again).
  Its status says so: a RiskAssessment or DiagnosticReport that was ``final`` becomes
  ``amended``; a ``preliminary`` DiagnosticReport stays ``preliminary`` (R4: amended applies only
  after final). The earlier version stays in the resource's ``_history``.

Every step is idempotent: sending the same item twice, or after a crash between steps, ends in
the same server state.
"""

from __future__ import annotations

import json
from typing import Any

from cds.contracts.errors import TransientError
from cds.fhir.client import FhirClient, FhirError
from cds.writers.fhir_resources import RESULT_SYSTEM
from cds.writers.supersession import evaluation_of

_VOLATILE = ("id", "meta", "status", "text")
_AMENDABLE = {"final", "amended", "corrected"}


def result_identifier(resource: dict[str, Any]) -> str | None:
    """``system|value`` of the resource's result identifier, if it has one."""
    for ident in resource.get("identifier", []) or []:
        if ident.get("system") == RESULT_SYSTEM and ident.get("value"):
            return f"{RESULT_SYSTEM}|{ident['value']}"
    return None


def _content(resource: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in resource.items() if k not in _VOLATILE}, sort_keys=True)


def decide(current: dict[str, Any], new: dict[str, Any]) -> str:
    """'same', 'stale' (the server holds a newer evaluation) or 'update'."""
    old_when, new_when = evaluation_of(current), evaluation_of(new)
    if old_when and new_when:
        return "same" if old_when == new_when else "stale" if old_when > new_when else "update"
    return "same" if _content(current) == _content(new) else "update"


def amended_status(rtype: str, old_status: str, new_status: str) -> str:
    """"amended" only when a final answer replaces a final one: a new AI evaluation is
    preliminary until a clinician reviews it, and must not look like a clinician's amendment."""
    amend = new_status == "final" and old_status in _AMENDABLE and rtype in ("RiskAssessment", "DiagnosticReport")
    return "amended" if amend else new_status


def upsert(client: FhirClient, resource: dict[str, Any], create_query: str | None,
           tries: int = 3) -> tuple[int, str, str]:
    """Write ``resource``; returns (HTTP status, "Type/id", what was done)."""
    rtype, ident = resource["resourceType"], result_identifier(resource)
    raced = False
    for _ in range(tries):
        found = client.search(rtype, {"identifier": ident or ""}) if ident else []
        if not found:
            status, body = client.create(resource, if_none_exist=create_query)
            if status == 201 or not ident:
                return status, f"{rtype}/{body.get('id', '?')}", "created" if status == 201 else "already present"
            # 200: another writer created it since the search; compare evaluations (look again)
            raced = True
            continue
        raced = False
        if len(found) > 1:
            raise FhirError(f"{len(found)} {rtype} resources carry one result identifier; expected one",
                            status=409)
        current = found[0]
        rid, verdict = f"{rtype}/{current['id']}", decide(current, resource)
        if verdict != "update":
            return 200, rid, "already present" if verdict == "same" else "a newer evaluation is present"
        body = {**resource, "id": current["id"],
                "status": amended_status(rtype, str(current.get("status", "")), str(resource.get("status", "")))}
        version = (current.get("meta") or {}).get("versionId")
        try:
            r = client.request("PUT", rid, json=body, headers={"If-Match": f'W/"{version}"'} if version else None)
        except FhirError as exc:
            if exc.status == 412:  # changed under us: look again
                continue
            raise
        return r.status_code, rid, f"superseded (now {body['status']})"
    if raced:
        raise TransientError(f"{rtype}: conditional create found an existing resource that a search "
                             f"did not ({tries} tries); retry later")
    raise FhirError(f"{rtype} kept changing while being superseded ({tries} tries)", status=503)
