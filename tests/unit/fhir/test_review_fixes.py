"""Review fixes: coded-value reading, no PHI in error strings, upsert's create race."""

from __future__ import annotations

import httpx
import pytest

from cds.contracts.errors import PermanentError, TransientError
from cds.contracts.settings import Settings
from cds.fhir.client import FhirClient, FhirError, outcome_text
from cds.fhir.mcode import Ambiguous, _coded, _Ctx, _grade_coded, _her2_coded, posneg, words_of
from cds.fhir.upsert import upsert
from cds.writers.fhir_resources import RESULT_SYSTEM

PHI = "Jane Doe MRN 123456"


@pytest.mark.parametrize("text", ["Not present", "not detected", "Not expressed", "absent", "Negative"])
def test_negations_read_negative(text):
    assert posneg(text) == "negative"


def test_positive_and_ambiguous():
    assert posneg("Present") == "positive"
    with pytest.raises(Ambiguous):
        posneg("positive", {"http://loinc.org|LA6577-6"})


def test_her2_plus_is_not_an_ihc_score():
    assert _her2_coded("HER2+", set()) is None
    assert _her2_coded("IHC 2+", set()) == ("equivocal", "IHC 2+")
    assert _her2_coded("3+", set()) == ("positive", "IHC 3+")
    assert _her2_coded("Score 0", set()) == ("negative", "IHC 0")
    with pytest.raises(Ambiguous):
        _her2_coded("IHC 1+ 3+", set())


def test_grade_never_read_from_codes():
    assert _grade_coded("Intermediate grade LA1234-1") == 2.0
    cc = {"coding": [{"system": "http://loinc.org", "code": "LA1234-1", "display": "Intermediate grade"}]}
    assert words_of(cc) == "Intermediate grade"
    assert _grade_coded(words_of({"coding": [{"code": "LA1234-1"}]})) is None
    assert _grade_coded("G3") == 3.0 and _grade_coded("grade II") == 2.0 and _grade_coded("2") == 2.0


def test_ambiguous_grade_is_not_used_with_reason():
    ctx = _Ctx("grade", "Observation/g", "valueString", "", "grade")
    out = _coded(ctx, "grade 1, poorly differentiated", set(), "grade 1, poorly differentiated")
    assert "ambiguous" in out.reason


def _client(handler, **kw) -> FhirClient:
    s = Settings(fhir_base_url="http://fhir.test/r4", **kw)
    return FhirClient(s, http=httpx.Client(transport=httpx.MockTransport(handler)))


def test_operation_outcome_diagnostics_not_copied():
    body = {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": PHI,
                       "details": {"text": PHI}, "expression": ["RiskAssessment.status"]}]}
    assert outcome_text(body) == "error: invalid (at RiskAssessment.status)"
    c = _client(lambda r: httpx.Response(400, json=body))
    with pytest.raises(FhirError) as e:
        c.request("GET", "Patient?identifier=123456")
    assert "123456" not in str(e.value) and "Jane" not in e.value.outcome


def test_raw_body_and_token_url_withheld():
    c = _client(lambda r: httpx.Response(500, text=PHI))
    with pytest.raises(FhirError) as e:
        c.request("GET", "Patient")
    assert "Jane" not in str(e.value) and "withheld" in str(e.value)

    def token(r):
        return httpx.Response(401, json={"error": "invalid_client", "error_description": PHI})
    c = _client(token, fhir_token_url="http://127.0.0.1/token?tenant=secret")
    with pytest.raises(FhirError) as e:
        c.request("GET", "Patient")
    assert "invalid_client" in str(e.value) and "secret" not in str(e.value) and "Jane" not in str(e.value)


def test_stow_error_withholds_body_and_query(tmp_path):
    from cds.contracts.handoffs import OutboxItem
    from cds.dispatch.targets.stow import StowTarget

    t = StowTarget(Settings(dicomweb_url="http://pacs.test/dicom-web?token=secret"))
    t._http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(400, text=PHI)))
    p = tmp_path / "x.dcm"
    p.write_bytes(b"DICM")
    item = OutboxItem.model_construct(payload_path=p)
    with pytest.raises(PermanentError) as e:
        t.deliver(item)
    assert "Jane" not in str(e.value) and "secret" not in str(e.value)


class _RacingClient:
    """Search finds nothing; conditional create answers 200 (created by another writer)."""

    def __init__(self, found_after: int | None) -> None:
        self.calls, self.found_after, self.puts = 0, found_after, []

    def search(self, rtype, params):
        self.calls += 1
        if self.found_after is not None and self.calls > self.found_after:
            return [{"resourceType": rtype, "id": "1", "status": "final", "meta": {"versionId": "1"},
                     "identifier": [{"system": RESULT_SYSTEM, "value": "k"}]}]
        return []

    def create(self, resource, if_none_exist=None):
        return 200, {"id": "1"}

    def request(self, method, path, **kw):
        self.puts.append(path)
        return httpx.Response(200)


RES = {"resourceType": "RiskAssessment", "status": "final", "note": [{"text": "new"}],
       "identifier": [{"system": RESULT_SYSTEM, "value": "k"}]}


def test_create_200_compares_again_and_supersedes():
    c = _RacingClient(found_after=1)
    status, rid, done = upsert(c, RES, "identifier=x")
    assert c.puts == ["RiskAssessment/1"] and done.startswith("superseded")


def test_create_200_forever_is_transient():
    with pytest.raises(TransientError):
        upsert(_RacingClient(found_after=None), RES, "identifier=x")
