"""Out-of-domain inputs are flagged; held-out phantoms are not.

The shipped cards carry each model's training domain (:mod:`models.domain`). Here the shipped
runtime scores a few held-out phantom exams of the card's TEST split (never used for fitting or
for the threshold) and demo-size phantoms, which must stay in domain, and out-of-domain inputs of
several kinds, which must be flagged. The full counts (hundreds of inputs) are in the card
(``extra.domain.flag_rate``) and come from ``models/*/training/ood_inputs.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cds.contracts.domain import PatientRef
from cds.contracts.settings import Settings
from models.domain import DomainModel, acquisition_reasons, combine, load_domain
from models.weights import shipped_dir

PATIENT = PatientRef(patient_id="OOD-TEST", issuer="phantom")
HIGHDICOM_DX = Path(__file__).resolve().parents[4] / "shared" / "data" / "highdicom-test-files" / "dx_image.dcm"


def test_density_fit_scores_far_points_higher():
    from models.training.domain import fit_density, flag_threshold

    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.1, 3.0, 20))
    train = rng.multivariate_normal(np.zeros(20), cov, 2000)
    held = rng.multivariate_normal(np.zeros(20), cov, 500)
    dens = fit_density(train, k=8)
    thr = flag_threshold(dens.distance(held))
    assert np.mean(dens.distance(rng.multivariate_normal(np.zeros(20), cov, 500)) > thr) < 0.03
    # shifted along a LOW-variance axis: invisible to a Euclidean check, obvious to Mahalanobis
    shifted = rng.multivariate_normal(np.zeros(20), cov, 200)
    shifted[:, 0] += 2.0
    assert np.mean(dens.distance(shifted) > thr) > 0.9
    assert np.allclose(dens.to_dict()["mean"], dens.mean, atol=1e-6)


def test_acquisition_reasons_name_the_value_and_range():
    ranges = {"bits_stored": {"min": 10, "max": 16, "unit": "", "label": "bits stored"},
              "pixel_spacing_mm": {"min": 0.04, "max": 0.62, "unit": "mm"}}
    reasons = acquisition_reasons(ranges, {"bits_stored": 8.0, "pixel_spacing_mm": None})
    assert reasons == ["bits stored 8 outside the training domain 10-16"]
    check = DomainModel(acquisition=ranges, density=None, threshold=None).check({"bits_stored": 12.0}, None)
    assert check.in_domain and check.reasons == []
    both = combine([check, DomainModel(ranges, None, None).check({"bits_stored": 8.0}, None)])
    assert both is not None and not both.in_domain and both.reasons == reasons


@pytest.mark.parametrize("model", ["mammography", "slides"])
def test_shipped_card_describes_its_domain(model):
    from cds.contracts.cards import ModelCard

    card = ModelCard.read(shipped_dir(model) / "card.json")
    dom = card.extra["domain"]
    assert dom["file"] in card.weights_sha256
    assert load_domain(card, shipped_dir(model)) is not None
    rates = dom["flag_rate"]
    assert rates["calibration_split"] <= 0.02  # 99th percentile of the calibration split
    assert rates["test_split"] <= 0.05, "held-out test phantoms must rarely be flagged"


@pytest.fixture(scope="module")
def mammo_model():
    from models.mammography.runtime import load

    return load(Settings())


def _checks(model, paths: list[Path]):
    from models.mammography.domain import image_check
    from models.mammography.preprocess import read_mg
    from models.mammography.runtime import exam_input

    images = [read_mg(p) for p in paths]
    *_, feats = model.run_outputs(exam_input(images))
    return [image_check(model.domain, im, f) for im, f in zip(images, feats)]


def test_held_out_and_demo_size_mammography_phantoms_stay_in_domain(mammo_model, tmp_path):
    from synthetic.phantoms.mammography import generate_exam

    checks = []
    # test-split exams of the card's data set (exam i % 5 == 4, seed i), at training size
    for i in (4, 9, 14, 19, 24, 29):
        truth = generate_exam(tmp_path / f"t{i}", i, PATIENT, rows=512, columns=416)
        checks += _checks(mammo_model, [im.path for im in truth.images])
    # the demo's size (1024x832) and a larger one: same field of view, finer pixels
    for seed, rows, cols in ((101, 1024, 832), (102, 2048, 1664)):
        truth = generate_exam(tmp_path / f"d{seed}", seed, PATIENT, rows=rows, columns=cols)
        checks += _checks(mammo_model, [im.path for im in truth.images])
    flagged = [c for c in checks if not c.in_domain]
    assert len(checks) == 32
    assert len(flagged) <= 1, [c.reasons for c in flagged]  # card: ~1 % on the test split
    assert all(c.score is not None and c.threshold is not None for c in checks)


def test_out_of_domain_mammography_inputs_are_flagged(mammo_model, tmp_path):
    from pydicom.data import get_testdata_file

    from models.mammography.training.ood_inputs import gray, matched, write_mg
    from synthetic.phantoms.slide_tissue import render_tissue
    from synthetic.phantoms.ultrasound import generate_ultrasound

    real = [Path(get_testdata_file(n)) for n in ("CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm")]
    if HIGHDICOM_DX.is_file():
        real.append(HIGHDICOM_DX)
    as_is, family = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, f in enumerate(real):
            ds = pydicom.dcmread(f)
            sp = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
            as_is.append(write_mg(gray(ds), tmp_path / f"real{k}.dcm", bits=int(ds.BitsStored),
                                  spacing_mm=float(sp[0]) if sp else None, seed=k))
    for k in range(3):  # other phantom families in the training geometry (only the content differs)
        rgb, _, _ = render_tissue(50_000 + k, 512, k % 2 == 0, False)
        family.append(write_mg(matched(255.0 - rgb.mean(axis=-1)), tmp_path / f"slide{k}.dcm", bits=14,
                               spacing_mm=0.56, seed=k))
        us = generate_ultrasound(tmp_path / "us", 60_000 + k, PATIENT)
        family.append(write_mg(matched(gray(pydicom.dcmread(us.path))), tmp_path / f"us{k}.dcm", bits=14,
                               spacing_mm=0.56, seed=k))
    real_checks = [_checks(mammo_model, [p])[0] for p in as_is]
    family_checks = [_checks(mammo_model, [p])[0] for p in family]
    assert all(not c.in_domain for c in real_checks), [c.reasons for c in real_checks]
    assert all(not c.in_domain for c in family_checks)
    # the phantom families pass every acquisition check: the embedding distance catches them
    assert all(c.score > c.threshold for c in family_checks), [(c.score, c.reasons) for c in family_checks]


def test_out_of_domain_result_has_no_plain_decision_downstream(mammo_model, tmp_path):
    """A real CT slice presented as a mammogram: the analysis marks every image out of domain."""
    from pydicom.data import get_testdata_file

    from cds.contracts.domain import InstanceRecord, StudyInput
    from models.mammography.training.ood_inputs import gray, write_mg
    from reports.quality import analysis_domain

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    path = write_mg(gray(ds), tmp_path / "ct.dcm", bits=int(ds.BitsStored), spacing_mm=float(ds.PixelSpacing[0]), seed=0)
    h = pydicom.dcmread(path, stop_before_pixels=True)
    study = StudyInput(study_instance_uid=h.StudyInstanceUID, modality="MG", patient=PATIENT, instances=[
        InstanceRecord(sop_instance_uid=h.SOPInstanceUID, sop_class_uid=h.SOPClassUID,
                       study_instance_uid=h.StudyInstanceUID, series_instance_uid=h.SeriesInstanceUID,
                       modality="MG", path=path)])
    analysis = mammo_model.analyze(study, tmp_path / "work")
    img = analysis.mammography.images[0]
    assert img.domain is not None and not img.domain.in_domain
    assert analysis.mammography.exam_malignancy.operating_point.name == "youden"
    assert analysis.mammography.grade_labels == ["grade 0", "grade 1", "grade 2", "grade 3"]
    assert not analysis_domain(analysis).in_domain


@pytest.fixture(scope="module")
def slide_model():
    from models.slides.runtime import load

    return load(Settings())


def test_held_out_slides_stay_in_domain_and_other_content_is_flagged(slide_model, tmp_path):
    from models.slides.training.ood_inputs import KINDS, write_ood_slide
    from synthetic.phantoms.slides import generate_slide

    inside = []
    for seed, pos in ((20_000, True), (20_001, False)):  # the card's test split (seed offset 20 000)
        truth = generate_slide(tmp_path / f"t{seed}", seed, PATIENT, metastasis=pos, size=2048)
        result, _ = slide_model.analyze_series(truth.level_paths, tmp_path / "work")
        inside.append(result.domain)
    assert all(d is not None and d.in_domain for d in inside), [d.reasons for d in inside if d]
    for kind in KINDS:
        truth = write_ood_slide(tmp_path, kind, 70_000, size=2048)  # as evaluated (1024 px differ)
        result, _ = slide_model.analyze_series(truth.level_paths, tmp_path / "work")
        assert result.domain is not None and not result.domain.in_domain, kind
        assert result.metastasis.operating_point is not None


def test_inverted_encoding_gives_the_statistics_of_the_image_the_model_sees() -> None:
    """A MONOCHROME1 image is the MONOCHROME2 one stored the other way: after inversion both give
    the same intensity statistics, so the encoding alone never makes an image out of domain."""
    import numpy as np

    from models.mammography.domain import acquisition_values

    rng = np.random.default_rng(0)
    mono2 = (rng.random((256, 200)) ** 3 * 4095).astype(np.uint16)  # dark background, bright tissue
    mono1 = (4095 - mono2).astype(np.uint16)
    a = acquisition_values(mono2, 12, (0.1, 0.1))
    b = acquisition_values(mono1, 12, (0.1, 0.1), invert=True)
    raw = acquisition_values(mono1, 12, (0.1, 0.1))
    assert abs(a["intensity_mean"] - b["intensity_mean"]) < 1e-3
    assert abs(a["intensity_std"] - b["intensity_std"]) < 1e-3
    assert abs(raw["intensity_mean"] - a["intensity_mean"]) > 0.3  # what was compared before
