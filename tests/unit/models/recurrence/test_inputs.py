"""Clinical input transforms, deep-vector standardization and the zero-fill (mean imputation) variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.recurrence.features import (
    CONTINUOUS_VARIABLES,
    FeatureSpec,
    age_spline,
    clinical_raw,
    fit_scalers,
    standardize,
)
from models.recurrence.training import cohort
from models.recurrence.training.network import MRRPNet
from models.recurrence.training.train import TrainConfig, _augment, _clinical_columns, _tensors


def test_age_spline_and_log_transforms() -> None:
    assert age_spline(38.0) == pytest.approx([0.7, 0.0])
    assert age_spline(50.0) == [0.0, 0.0]
    assert age_spline(70.0) == pytest.approx([0.0, 1.5])
    x, m, _ = clinical_raw({"age_years": 38, "tumour_size_mm": 20, "positive_nodes": 3, "er": 99.0})
    got = dict(zip(CONTINUOUS_VARIABLES, x))
    assert got["age_below_45"] == pytest.approx(0.7) and got["tumour_size_mm"] == pytest.approx(np.log1p(20))
    assert got["positive_nodes"] == pytest.approx(np.log1p(3)) and got["er"] == pytest.approx(np.log1p(99))
    # Missing age: age and both of its spline terms are missing together.
    _, m, _ = clinical_raw({"tumour_size_mm": 20})
    mask = dict(zip(CONTINUOUS_VARIABLES, m))
    assert mask["age_years"] == mask["age_below_45"] == mask["age_above_55"] == 0 and mask["tumour_size_mm"] == 1
    with pytest.raises(ValueError, match="different versions"):
        clinical_raw({"age_years": 50}, ("age_years", "bmi"))


def test_training_augmentation_hides_spline_terms_with_age() -> None:
    spec = FeatureSpec()
    batch, _, _ = cohort.gbsg2_arrays(spec)
    cols = _clinical_columns(spec)
    out = _augment(batch, TrainConfig(image_branches=False, clinical_dropout=0.5), np.random.default_rng(0), cols)
    names = list(spec.continuous)
    age, lo, hi = (out["clin_cont_mask"][:, names.index(n)] for n in ("age_years", "age_below_45", "age_above_55"))
    assert 0.3 < age.mean() < 0.7  # dropout happened
    assert np.array_equal(age, lo) and np.array_equal(age, hi)


def test_deep_vectors_are_standardized_on_present_patients_only() -> None:
    spec = FeatureSpec()
    batch, _, _, _ = cohort.semi_synthetic_arrays(spec, seed=1)
    std = standardize(batch, fit_scalers(batch))
    present = batch["modality_mask"][:, 0] > 0
    assert 0 < present.sum() < len(present)
    assert np.allclose(std["wsi_deep"][present].mean(0), 0, atol=1e-4)
    assert np.allclose(std["wsi_deep"][present].std(0), 1, atol=1e-3)
    assert np.all(std["wsi_deep"][~present] == 0)  # absent = the training mean


def test_zero_fill_is_mean_imputation_and_learned_differs() -> None:
    torch.manual_seed(0)
    spec = FeatureSpec()
    batch, _, _, _ = cohort.semi_synthetic_arrays(spec, seed=2, missing=False)
    batch = cohort.subset(batch, np.arange(40))
    spec.scalers = fit_scalers(batch)
    absent = {k: v.copy() for k, v in batch.items()}
    absent["modality_mask"][:, 0] = 0
    cohort.apply_modality_mask(absent)
    absent = standardize(absent, spec.scalers)
    # The same patients with the slide inputs observed and equal to the training mean (0).
    imputed = {k: v.copy() for k, v in absent.items()}
    imputed["modality_mask"][:, 0] = 1
    imputed["morph_mask"][:] = 1
    imputed["topo_mask"][:] = 1
    for mode, same in (("zero", True), ("learned", False)):
        net = MRRPNet(spec, 8, 0.0, True, "attention", mode).eval()
        with torch.no_grad():
            a, b = net(*_tensors(absent)).numpy(), net(*_tensors(imputed)).numpy()
        assert np.allclose(a, b, atol=1e-6) == same, mode
