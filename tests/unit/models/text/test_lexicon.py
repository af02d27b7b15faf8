"""The BI-RADS US lexicon reader on written report sentences, negations included."""

from __future__ import annotations

import pytest

from models.text.lexicon import extract_lexicon

CASES = [
    (
        "Irregular hypoechoic mass with spiculated margins, not parallel to the skin, measuring "
        "1.8 x 1.2 cm, with posterior acoustic shadowing. Microcalcifications are present. BI-RADS 5.",
        dict(shape="irregular", orientation="not_parallel", margin="spiculated", echo_pattern="hypoechoic",
             posterior_features="shadowing", calcifications=True, size_mm=18.0, birads="5"),
    ),
    (
        "An oval, circumscribed, parallel hypoechoic mass measuring 9 x 6 x 7 mm with posterior "
        "enhancement. No calcifications. BI-RADS category 3.",
        dict(shape="oval", orientation="parallel", margin="circumscribed", echo_pattern="hypoechoic",
             posterior_features="enhancement", calcifications=False, size_mm=9.0, birads="3"),
    ),
    (
        "Round anechoic lesion, well-defined, without posterior shadowing; no posterior acoustic "
        "features. Assessment: BI-RADS 2.",
        dict(shape="round", margin="circumscribed", echo_pattern="anechoic", posterior_features="none",
             calcifications=None, birads="2"),
    ),
    (
        "Heterogeneous mass with indistinct margins, taller than wide, 22 mm. There is no evidence of "
        "calcification. BI-RADS 4B.",
        dict(shape=None, orientation="not_parallel", margin="indistinct", echo_pattern="heterogeneous",
             calcifications=False, size_mm=22.0, birads="4B"),
    ),
    (
        "Complex cystic and solid mass with microlobulated margins, not circumscribed elsewhere. BIRADS 4c",
        dict(echo_pattern="complex_cystic_solid", margin="microlobulated", birads="4C"),
    ),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_lexicon_fields(text: str, expected: dict) -> None:
    lex = extract_lexicon(text)
    for field, value in expected.items():
        assert getattr(lex, field) == value, (field, text)


def test_negated_shadowing_is_not_shadowing() -> None:
    lex = extract_lexicon("Oval mass without posterior acoustic shadowing.")
    assert lex.posterior_features != "shadowing"
    assert extract_lexicon("Oval mass with posterior acoustic shadowing.").posterior_features == "shadowing"


def test_numeric_fields_for_the_model() -> None:
    lex = extract_lexicon(CASES[0][0])
    num = lex.model_fields_numeric()
    assert num["shape_irregular"] == 1.0 and num["posterior_shadowing"] == 1.0
    assert num["birads_category"] == 5.0 and num["size_mm"] == 18.0
    assert extract_lexicon("BI-RADS 4A").model_fields_numeric() == {"birads_category": 4.25}
    assert extract_lexicon("").model_fields_numeric() == {}
