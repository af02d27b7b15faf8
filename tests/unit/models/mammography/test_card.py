"""The shipped mammography card: held-out metrics the issue asks for, and calibration that helps.

These read the card written by the last ``cds train synthetic`` run next to the shipped ONNX file
(the runtime refuses weights whose SHA-256 differs from the card's), so they check the numbers the
shipped model was measured with, not a re-run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cds.contracts.cards import ModelCard
from cds.contracts.domain import NOT_FOR_CLINICAL_USE

WEIGHTS = Path(__file__).resolve().parents[4] / "models" / "mammography" / "weights"


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.read(WEIGHTS / "card.json")


def test_card_matches_shipped_weights(card: ModelCard) -> None:
    onnx = WEIGHTS / "mammography.onnx"
    assert card.weights_sha256["mammography.onnx"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert onnx.stat().st_size < 20 * 1024 * 1024
    assert NOT_FOR_CLINICAL_USE in card.notice and NOT_FOR_CLINICAL_USE in card.training_data


def test_calibration_lowers_ece_on_held_out_data(card: ModelCard) -> None:
    m = card.metrics
    assert m["n_test_images"] >= 500 and m["n_calibration_images"] >= 500
    assert card.calibration["fitted_on"].startswith("calibration split")
    # the malignancy probability is what the SR, FHIR and PDF report and the thresholds act on
    assert m["ece_malignancy_after"] < m["ece_malignancy_before"], m
    # the top-label ECE is the issue's goal (<= 0.05 after calibration); it need not fall when the
    # raw model is already near it: 0.3.0 went 0.042 -> 0.045 with T = 1.57, within 15-bin noise
    assert m["ece_top_label_after"] <= 0.05, m


def test_card_reports_the_issue_metrics(card: ModelCard) -> None:
    m = card.metrics
    for key in ("malignant_auc", "accuracy_4class", "iou", "dice", "grade_qwk", "lesion_mask_threshold"):
        assert 0.0 <= m[key] <= 1.0, key
    assert set(m["iou_per_lesion_type"]) == {"circumscribed_mass", "asymmetry", "calcifications",
                                            "spiculated_mass", "architectural_distortion"}
    lovo = m["lovo"]
    # both arms (with and without MixStyle) train lovo["epochs"]: the comparison is between them
    assert 1 <= lovo["epochs"] <= card.extra["training"]["config"]["epochs"]
    assert "same epochs" in lovo["protocol"]
    assert set(lovo["per_vendor"]) == set(card.extra["training"]["vendors"])
    for row in lovo["per_vendor"].values():
        assert 0.0 <= row["mixstyle"] <= 1.0 and 0.0 <= row["no_mixstyle"] <= 1.0


def test_card_records_the_bilateral_input_and_lesion_gate(card: ModelCard) -> None:
    image = card.inputs["image"]
    assert image["shape"][1] == len(image["channels"]) == 2 and "contralateral" in image["channels"][1]
    lp = card.outputs["lesion_prob"]
    assert 0.0 < lp["report_when_p_normal_at_most"] <= 1.0
    m = card.metrics
    assert m["lesion_report_max_p_normal"] == lp["report_when_p_normal_at_most"]
    ungated, reported = m["lesion_marks_ungated"], m["lesion_marks_reported"]
    assert reported["normal_image_false_mark_rate"] <= ungated["normal_image_false_mark_rate"]
    assert reported["lesion_detection_rate"] <= ungated["lesion_detection_rate"]
