"""Property-based: any Observation shape and value gives a reading or a recorded reason, never a
crash, never an implausible or unit-less number used."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds.contracts.settings import Settings
from cds.fhir import plausibility
from cds.fhir.mcode import Reading, read_observation

TABLE = Settings().loinc.model_dump()
CODES = sorted({t for ts in TABLE.values() for t in ts}) + ["http://loinc.org|0000-0"]
UNITS = ["%", "mm", "cm", "km", "m", "fmol/L", "fmol/mg", "{count}", "1", "a", "", "mg/dL", "[in_i]"]
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**15, 10**15),
                    st.sampled_from([5, 0, 1, 3, 50, 101, 5000, -50, 1e308, 1e12, 2025]))
junk = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(st.integers(), max_size=2), st.booleans())


def coding(token: str) -> dict:
    system, code = token.split("|")
    return {"system": system, "code": code}


quantity = st.fixed_dictionaries({"value": st.one_of(numbers, junk)},
                                 optional={"code": st.one_of(st.sampled_from(UNITS), junk),
                                           "unit": st.one_of(st.sampled_from(UNITS + ["centimeters", "percent"]), junk),
                                           "system": st.sampled_from(["http://unitsofmeasure.org", "urn:x"])})
concept = st.one_of(junk, st.fixed_dictionaries({}, optional={
    "text": st.one_of(st.sampled_from(["Positive", "Negative", "2+", "3+", "grade 2", "postmenopausal",
                                       "equivocal", "not amplified"]), st.text(max_size=8)),
    "coding": st.one_of(junk, st.lists(st.one_of(junk, st.sampled_from(CODES).map(coding)), max_size=3))}))
value = st.one_of(
    st.builds(lambda q: {"valueQuantity": q}, st.one_of(quantity, junk)),
    st.builds(lambda i: {"valueInteger": i}, st.one_of(numbers, junk)),
    st.builds(lambda c: {"valueCodeableConcept": c}, concept),
    st.builds(lambda s: {"valueString": s}, st.one_of(st.text(max_size=12), st.sampled_from(["5 %", "2.2 km", "12 mm"]), junk)),
    st.builds(lambda b: {"valueBoolean": b}, st.one_of(st.booleans(), junk)),
    st.just({}),
)
component = st.builds(lambda tok, v: {"code": {"coding": [coding(tok)]}, **v}, st.sampled_from(CODES), value)
observation = st.builds(
    lambda tok, v, comps, when: {"resourceType": "Observation", "id": "x", "status": "final",
                                 "code": {"coding": [coding(tok)]}, **v, "component": comps,
                                 "effectiveDateTime": when},
    st.sampled_from(CODES), value, st.one_of(st.lists(component, max_size=3), junk), st.one_of(st.text(max_size=4), junk))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observation)
def test_any_observation_gives_a_reading_or_a_reason(obs):
    results = read_observation(obs, "Observation/x", TABLE)
    for r in results:
        if isinstance(r, Reading):
            if isinstance(r.value, float) or r.unit:
                assert isinstance(r.value, float) and math.isfinite(r.value)
                assert r.unit, f"unit-less number used: {r}"
                assert plausibility.check(r.variable, r.value, r.unit) == "", r
            else:
                assert isinstance(r.value, str) and r.value
            assert r.source.reference == "Observation/x"
        else:
            assert r.reason.startswith("Observation/x ") and r.variable in TABLE
    matched = {v for v, toks in TABLE.items() if set(toks) & {f"{c.get('system')}|{c.get('code')}"
                                                             for c in obs["code"]["coding"]}}
    assert matched <= {r.variable for r in results}  # every matching variable answered, used or not
