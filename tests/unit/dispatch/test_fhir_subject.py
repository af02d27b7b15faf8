"""Resolving a logical patient reference before a FHIR write: an outage waits, a refusal is said."""

from __future__ import annotations

import logging

import pytest

from cds.contracts.errors import PeerUnreachable
from cds.dispatch.targets.fhir import resolve_subject
from cds.fhir.client import FhirError


class Client:
    """A boundary fake: the FHIR server's answer to the patient search."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]


def _resource() -> dict:
    return {"resourceType": "RiskAssessment", "subject": {"identifier": {"system": "urn:mrn", "value": "X1"}}}


def test_known_patient_becomes_a_literal_reference() -> None:
    r = _resource()
    resolve_subject(Client([{"id": "p7"}]), r)
    assert r["subject"]["reference"] == "Patient/p7"


def test_a_server_that_does_not_answer_makes_the_delivery_wait() -> None:
    r = _resource()
    with pytest.raises(PeerUnreachable):
        resolve_subject(Client(FhirError("FHIR GET http://h/Patient: ConnectError", status=0)), r)
    with pytest.raises(PeerUnreachable):
        resolve_subject(Client(FhirError("busy", status=503)), r)
    assert "reference" not in r["subject"]


def test_a_refused_search_keeps_the_logical_reference_and_says_so(caplog) -> None:
    r = _resource()
    with caplog.at_level(logging.WARNING):
        resolve_subject(Client(FhirError("bad search", status=400)), r)
    assert "reference" not in r["subject"]
    assert "refused the patient search" in caplog.text and "X1" not in caplog.text
