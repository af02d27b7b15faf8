"""Paired phantoms: the shared latent factors really change both modalities, and seeds reproduce."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from synthetic.phantoms.paired import (
    PATCH,
    Factors,
    draw_factors,
    paired_arrays,
    patient,
    render_mammo,
    render_patch,
    split_of,
)


def _dark_fraction(patches: np.ndarray) -> float:
    """Fraction of nucleus-dark pixels (haematoxylin-rich: mean RGB under 150)."""
    return float((patches.astype(np.float32).mean(-1) < 150).mean())


def _patches(f: Factors, n: int = 12, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([render_patch(rng, f, look_seed=11) for _ in range(n)])


def test_class_and_cellularity_change_nuclear_density() -> None:
    benign = _dark_fraction(_patches(Factors("benign", 1, 0.3, True)))
    invasive = _dark_fraction(_patches(Factors("invasive", 2, 0.3, True)))
    assert invasive > 2 * benign, (benign, invasive)
    sparse = _dark_fraction(_patches(Factors("invasive", 2, 0.1, True)))
    dense = _dark_fraction(_patches(Factors("invasive", 2, 1.0, True)))
    assert dense > 1.3 * sparse, (sparse, dense)


def test_grade_enlarges_nuclei() -> None:
    low = _dark_fraction(_patches(Factors("in_situ", 1, 0.6, True)))
    high = _dark_fraction(_patches(Factors("in_situ", 3, 0.6, True)))
    assert high > low


def test_cellularity_raises_lesion_density_on_the_mammogram() -> None:
    f = Factors("invasive", 2, 0.0, True)
    # same generator state: the only difference is the cellularity -> attenuation scale
    lo, kind_lo = render_mammo(np.random.default_rng(3), f, "alpha")
    hi, kind_hi = render_mammo(np.random.default_rng(3), replace(f, cellularity=1.0), "alpha")
    assert kind_lo == kind_hi and kind_lo in ("spiculated_mass", "architectural_distortion")
    c = slice(PATCH // 2 - 6, PATCH // 2 + 6)
    assert hi[c, c].mean() > lo[c, c].mean() + 0.02


def test_class_decides_mammography_lesion_type_and_factors_follow_rules() -> None:
    rng = np.random.default_rng(0)
    for label, kinds in (("benign", {"circumscribed_mass", "asymmetry"}), ("in_situ", {"calcifications"}),
                         ("invasive", {"spiculated_mass", "architectural_distortion"})):
        f = draw_factors(rng, label)
        _, kind = render_mammo(np.random.default_rng(1), f, "bravo", rows=256, cols=208)
        assert kind in kinds
    grades = [draw_factors(rng, "invasive").grade for _ in range(200)]
    assert set(grades) == {1, 2, 3}
    assert {draw_factors(rng, "benign").grade for _ in range(20)} == {1}
    er_g1 = np.mean([f.er_positive for f in (draw_factors(rng, "invasive") for _ in range(600)) if f.grade == 1])
    er_g3 = np.mean([f.er_positive for f in (draw_factors(rng, "invasive") for _ in range(600)) if f.grade == 3])
    assert er_g1 > er_g3 + 0.2
    with pytest.raises(ValueError):
        render_patch(rng, draw_factors(rng, "normal"), 0)


def test_same_seed_same_patient_and_normal_has_no_pathology() -> None:
    a, b = patient(37, seed=4), patient(37, seed=4)
    assert a.factors == b.factors and np.array_equal(a.crop, b.crop) and np.array_equal(a.patches, b.patches)
    c = patient(37, seed=5)
    assert not np.array_equal(a.crop, c.crop)
    normal = patient(0, seed=4)
    assert normal.factors.label == "normal" and normal.patches.shape[0] == 0 and normal.patch_label == -1
    assert a.crop.shape == (48, 48) and a.crop.dtype == np.float32


def test_arrays_split_by_patient_and_keep_every_vendor() -> None:
    d = paired_arrays(32, seed=2, n_patches=2)
    assert d["patches"].shape == (32, 2, PATCH, PATCH, 3)
    for split in ("train", "calibration", "test"):
        assert set(d["vendors"][d["splits"] == split]) == {"alpha", "bravo", "charlie", "delta"}
    assert [split_of(i) for i in range(16)].count("train") == 8
    assert len(set(d["patient_ids"])) == 32
    assert (d["patch_labels"] == d["labels"] - 1).all()
