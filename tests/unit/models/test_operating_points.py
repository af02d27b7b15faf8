"""Operating points come from the card and a site chooses one per model in settings."""

from __future__ import annotations

import pytest

from cds.contracts.cards import ModelCard
from cds.contracts.errors import ModelUnavailable
from cds.contracts.settings import Settings
from models.operating_points import canonical, resolve
from models.weights import shipped_dir


@pytest.fixture(scope="module")
def mammo_card() -> ModelCard:
    return ModelCard.read(shipped_dir("mammography") / "card.json")


@pytest.fixture(scope="module")
def slide_card() -> ModelCard:
    return ModelCard.read(shipped_dir("slides") / "card.json")


def test_shipped_cards_carry_three_operating_points_with_held_out_rates(mammo_card, slide_card):
    for card in (mammo_card, slide_card):
        points = card.extra["operating_points"]
        assert set(points) == {"youden", "sensitivity_0.90", "specificity_0.90"}
        for p in points.values():
            assert 0.0 <= p["threshold"] <= 1.0
            assert 0.0 <= p["expected_sensitivity"] <= 1.0 and 0.0 <= p["expected_specificity"] <= 1.0
            assert p["n_test"] > 0
    # the card's own Youden threshold is kept, and its test-split rates are the card's metrics
    youden = mammo_card.extra["operating_points"]["youden"]
    assert youden["threshold"] == mammo_card.thresholds["youden"]
    assert youden["expected_sensitivity"] == pytest.approx(mammo_card.metrics["sensitivity_at_youden"], abs=0.02)
    assert youden["expected_specificity"] == pytest.approx(mammo_card.metrics["specificity_at_youden"], abs=0.02)


def test_default_is_youden(mammo_card):
    op = resolve(mammo_card, Settings(), "mammography")
    assert op.name == "youden" and op.source == "card"
    assert op.threshold == mammo_card.thresholds["youden"]
    assert op.expected_sensitivity is not None and op.expected_specificity is not None


def test_named_point_from_the_environment(monkeypatch, mammo_card):
    monkeypatch.setenv("CDS_OPERATING_POINT__MAMMOGRAPHY", "sensitivity_0.9")
    op = resolve(mammo_card, Settings(), "mammography")
    assert op.name == "sensitivity_0.90"
    assert op.threshold == mammo_card.extra["operating_points"]["sensitivity_0.90"]["threshold"]
    assert op.expected_sensitivity == mammo_card.extra["operating_points"]["sensitivity_0.90"]["expected_sensitivity"]


def test_site_number_and_per_model_choice(mammo_card, slide_card):
    settings = Settings(operating_point={"mammography": "0.42", "slides": "specificity_0.90"})
    op = resolve(mammo_card, settings, "mammography")
    assert (op.name, op.threshold, op.source, op.expected_sensitivity) == ("site", 0.42, "site", None)
    assert resolve(slide_card, settings, "slides").name == "specificity_0.90"


@pytest.mark.parametrize("value", ["1.5", "-0.1", "youdenn", "sensitivity_0.99"])
def test_bad_setting_is_a_start_up_error_naming_the_setting(mammo_card, value):
    with pytest.raises(ModelUnavailable, match="CDS_OPERATING_POINT__MAMMOGRAPHY"):
        resolve(mammo_card, Settings(operating_point={"mammography": value}), "mammography")


def test_runtime_load_uses_the_setting_and_refuses_a_bad_one():
    from models.mammography.runtime import load

    model = load(Settings(operating_point={"mammography": "specificity_0.90"}))
    assert model.operating_point.name == "specificity_0.90"
    assert model.threshold == model.operating_point.threshold
    with pytest.raises(ModelUnavailable, match="CDS_OPERATING_POINT__MAMMOGRAPHY"):
        load(Settings(operating_point={"mammography": "7"}))


def test_canonical_names():
    assert canonical("Sensitivity_0.9") == canonical("sensitivity_0.90") == "sensitivity_0.90"
    assert canonical("youden") == "youden"
