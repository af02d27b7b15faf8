"""The semi-synthetic cohort's missingness modes: default MCAR unchanged, informative mode as stated."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models.recurrence.features import FeatureSpec
from models.recurrence.training import cohort

# Fingerprint of the default (MCAR) cohort for seed 0, taken before the informative mode existed.
# The availability counts come from the seeded uniform draws alone, so they are exact.
DEFAULT_SEED0_PRESENT = [530.0, 507.0, 246.0]  # patients with slides, ultrasound, report embedding
DEFAULT_SEED0_WSI_DEEP_SUM = -9959.3134765625
DEFAULT_SEED0_Z_STD = 1.1923550247064783


@pytest.fixture(scope="module")
def cohorts():
    spec = FeatureSpec()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = cohort.semi_synthetic_arrays(spec, seed=0)
        mcar = cohort.semi_synthetic_arrays(spec, seed=0, missingness="mcar")
        informative = cohort.semi_synthetic_arrays(spec, seed=0, missingness="informative")
        full = cohort.semi_synthetic_arrays(spec, seed=0, missing=False)
    return default, mcar, informative, full


def _tertile(x: np.ndarray) -> np.ndarray:
    return np.digitize(x, np.quantile(x, [1 / 3, 2 / 3]))


def test_default_mode_is_unchanged_mcar(cohorts):
    (batch, t, e, z), (mcar, t2, e2, z2), _, _ = cohorts
    assert batch["modality_mask"].sum(0).tolist() == DEFAULT_SEED0_PRESENT
    assert float(batch["wsi_deep"].sum()) == pytest.approx(DEFAULT_SEED0_WSI_DEEP_SUM, rel=1e-4)
    assert float(z.std()) == pytest.approx(DEFAULT_SEED0_Z_STD, rel=1e-6)
    assert set(mcar) == set(batch)
    for key in batch:
        np.testing.assert_array_equal(mcar[key], batch[key], err_msg=key)
    np.testing.assert_array_equal(z2, z)
    np.testing.assert_array_equal(t2, t)
    np.testing.assert_array_equal(e2, e)


def test_informative_absence_rises_with_its_driver(cohorts):
    _, _, (batch, _, _, z), _ = cohorts
    absent = 1.0 - batch["modality_mask"]
    size = cohort.load_gbsg2()["tsize"].to_numpy(float)
    # Slides: absent mostly for low latent risk (tertile 0 = lowest z).
    wsi = [absent[_tertile(z) == k, 0].mean() for k in range(3)]
    assert wsi[0] > wsi[1] > wsi[2], wsi
    assert wsi[0] - wsi[2] > 0.2, wsi
    # Ultrasound: absent mostly for small tumours.
    us = [absent[_tertile(size) == k, 1].mean() for k in range(3)]
    assert us[0] > us[1] > us[2], us
    assert us[0] - us[2] > 0.2, us
    # Same overall rates as the MCAR mode (sampling noise only).
    for j, col in enumerate(("wsi", "us")):
        assert abs(absent[:, j].mean() - cohort.MISSING_RATES[col]) < 0.05


def test_informative_probabilities_follow_the_stated_logistic_model(cohorts):
    _, _, (_, _, _, z), _ = cohorts
    size = cohort.load_gbsg2()["tsize"].to_numpy(float)
    p = cohort.informative_absence_probability(z, size)
    for col, driver in (("wsi", z), ("us", np.log(size))):
        assert p[col].mean() == pytest.approx(cohort.MISSING_RATES[col], abs=1e-6)
        order = np.argsort(driver, kind="stable")
        assert np.all(np.diff(p[col][order]) <= 1e-12)  # slope < 0: absence falls as the driver rises
        d = (driver - driver.mean()) / driver.std()
        logit = np.log(p[col] / (1 - p[col]))
        slope = np.polyfit(d, logit, 1)[0]
        assert slope == pytest.approx(cohort.INFORMATIVE_MISSINGNESS[col]["slope"], rel=1e-6)


def test_informative_mode_changes_only_who_is_missing(cohorts):
    (mcar, _, _, _), _, (inf, _, _, z_inf), (full, _, _, z_full) = cohorts
    np.testing.assert_array_equal(z_inf, z_full)
    assert not np.array_equal(inf["modality_mask"], mcar["modality_mask"])
    present = inf["modality_mask"][:, 0] > 0
    np.testing.assert_array_equal(inf["wsi_deep"][present], full["wsi_deep"][present])
    assert not inf["wsi_deep"][~present].any()
    # The report embedding stays MCAR: same draws, same mask wherever the ultrasound exists in both.
    both_us = (inf["modality_mask"][:, 1] > 0) & (mcar["modality_mask"][:, 1] > 0)
    np.testing.assert_array_equal(inf["modality_mask"][both_us, 2], mcar["modality_mask"][both_us, 2])


def test_unknown_missingness_mode_is_refused():
    with pytest.raises(ValueError, match="missingness mode 'mnar'"):
        cohort.semi_synthetic_arrays(FeatureSpec(), seed=0, missingness="mnar")
