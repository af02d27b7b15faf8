"""The hand-written ultrasound radiomics (models/ultrasound/radiomics.py) against mirp, an
IBSI-compliant library, on the same image, mask and discretisation.

mirp is a TEST dependency only (it needs pandas >= 3 and ITK; the runtime stays light). Settings
made equal: 2D (``by_slice``), fixed bin number 32 over the ROI's own min..max (IBSI FBN, the
hand-written ``_quantize``), GLCM at distance 1 over 4 directions with features averaged per
direction ("2d_average", as the hand-written mean over angles), GLRLM likewise, GLSZM per slice
with 8-connected zones, 1 mm pixels. Each hand-written feature is paired with the IBSI feature of
the same definition in :data:`IBSI_PAIRS`; :data:`CONVENTION` holds those that follow
pyradiomics where IBSI differs by a documented constant; :data:`NO_IBSI_COUNTERPART` lists the rest.
The images: synthetic US lesions (synthetic/phantoms/ultrasound.py) and hand-made masks (a ring,
an L shape, a thin diagonal band) on speckle.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models.ultrasound import radiomics

mirp = pytest.importorskip("mirp", reason="mirp (IBSI reference) is in the test extra: pip install -e .[test]")

# hand-written "<class>_<feature>" -> mirp (IBSI) feature name
IBSI_PAIRS = {
    "firstorder_Mean": "stat_mean", "firstorder_Median": "stat_median", "firstorder_Variance": "stat_var",
    "firstorder_Skewness": "stat_skew", "firstorder_Energy": "stat_energy", "firstorder_10Percentile": "stat_p10",
    "firstorder_90Percentile": "stat_p90", "firstorder_InterquartileRange": "stat_iqr",
    "firstorder_RobustMeanAbsoluteDeviation": "stat_rmad",
    "firstorder_Entropy": "ih_entropy_fbn_n32", "firstorder_Uniformity": "ih_uniformity_fbn_n32",
    "glcm_Contrast": "cm_contrast_d1_2d_avg_fbn_n32", "glcm_Correlation": "cm_corr_d1_2d_avg_fbn_n32",
    "glcm_JointEnergy": "cm_energy_d1_2d_avg_fbn_n32", "glcm_JointEntropy": "cm_joint_entr_d1_2d_avg_fbn_n32",
    "glcm_Idm": "cm_inv_diff_mom_d1_2d_avg_fbn_n32", "glcm_ClusterShade": "cm_clust_shade_d1_2d_avg_fbn_n32",
    "glcm_DifferenceEntropy": "cm_diff_entr_d1_2d_avg_fbn_n32",
    "glrlm_ShortRunEmphasis": "rlm_sre_2d_avg_fbn_n32", "glrlm_LongRunEmphasis": "rlm_lre_2d_avg_fbn_n32",
    "glrlm_GrayLevelNonUniformity": "rlm_glnu_2d_avg_fbn_n32",
    "glrlm_RunLengthNonUniformity": "rlm_rlnu_2d_avg_fbn_n32", "glrlm_RunPercentage": "rlm_r_perc_2d_avg_fbn_n32",
    "glszm_SmallAreaEmphasis": "szm_sze_2d_fbn_n32", "glszm_LargeAreaEmphasis": "szm_lze_2d_fbn_n32",
    "glszm_ZonePercentage": "szm_z_perc_2d_fbn_n32", "glszm_SizeZoneNonUniformity": "szm_zsnu_2d_fbn_n32",
    "shape2D_MajorAxisLength": "morph_pca_maj_axis", "shape2D_MinorAxisLength": "morph_pca_min_axis",
    "shape2D_Elongation": "morph_pca_elongation",
}
# pyradiomics' Kurtosis is not excess kurtosis; IBSI's (stat_kurt) is: they differ by exactly 3
CONVENTION = {"firstorder_Kurtosis": ("stat_kurt", 3.0)}
# IBSI defines morphology in 3D (mesh-based) only; these 2D shape features have no IBSI feature
NO_IBSI_COUNTERPART = ("shape2D_PixelSurface", "shape2D_Perimeter", "shape2D_PerimeterSurfaceRatio",
                       "shape2D_Sphericity", "shape2D_MaximumDiameter", "shape2D_Solidity",
                       "shape2D_AspectRatioDepthWidth")
RTOL = 1e-6


def _mirp(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = mirp.extract_features(
            image=image[None].astype(float), mask=mask[None].astype(bool), by_slice=True, ibsi_compliant=True,
            base_feature_families=["statistics", "intensity_histogram", "glcm", "glrlm", "glszm", "morphology"],
            base_discretisation_method="fixed_bin_number", base_discretisation_n_bins=32,
            glcm_distance=1.0, glcm_spatial_method="2d_average", glrlm_spatial_method="2d_average",
            glszm_spatial_method="2d")[0]
    return {k: float(v) for k, v in table.iloc[0].items() if isinstance(v, (int, float, np.floating, np.integer))}


def _us_lesion(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from synthetic.phantoms import ultrasound as us

    rng = np.random.default_rng(seed)
    z = float(rng.uniform(-1, 1))
    features = us._draw_features(rng, z)
    yy, xx, tissue = us._background_tissue(rng)
    lesion = us._place_lesion(rng, z, features)
    us._insert_lesion(rng, tissue, yy, xx, lesion, z, features)
    pixels = us._speckle_image(rng, tissue, yy)
    ys, xs = np.nonzero(lesion.mask)
    r0, r1, c0, c1 = max(ys.min() - 4, 0), ys.max() + 5, max(xs.min() - 4, 0), xs.max() + 5
    return pixels[r0:r1, c0:c1].astype(float), lesion.mask[r0:r1, c0:c1].astype(bool)


def _hand_made(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(len(kind))
    image = np.round(rng.gamma(2.0, 30.0, (48, 48)))
    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 24, xx - 24)
    if kind == "ring":
        mask = (r >= 8) & (r <= 16)
    elif kind == "l_shape":
        mask = np.zeros((48, 48), bool)
        mask[8:40, 8:16] = True
        mask[32:40, 8:36] = True
    else:  # thin diagonal band: runs and zones along the diagonals
        mask = np.abs(yy - xx) <= 2
        mask &= (yy > 4) & (yy < 44)
    return image, mask


CASES = {**{f"us_seed_{s}": (lambda s=s: _us_lesion(s)) for s in (1, 7, 23)},
         **{k: (lambda k=k: _hand_made(k)) for k in ("ring", "l_shape", "diagonal_band")}}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request) -> tuple[dict[str, float], dict[str, float]]:
    image, mask = CASES[request.param]()
    ours = radiomics.radiomics_features(image, mask, spacing_mm=1.0)
    return {k.removeprefix("original_"): v for k, v in ours.items() if k.startswith("original_")}, _mirp(image, mask)


def test_every_hand_written_feature_is_classified() -> None:
    image, mask = _hand_made("ring")
    names = {k.removeprefix("original_") for k in radiomics.radiomics_features(image, mask, 1.0) if k.startswith("original_")}
    assert names == set(IBSI_PAIRS) | set(CONVENTION) | set(NO_IBSI_COUNTERPART)


@pytest.mark.parametrize("ours_name", sorted(IBSI_PAIRS))
def test_feature_equals_ibsi(pair, ours_name: str) -> None:
    ours, ibsi = pair
    assert ours[ours_name] == pytest.approx(ibsi[IBSI_PAIRS[ours_name]], rel=RTOL, abs=1e-9), ours_name


def test_convention_differences_are_the_documented_constants(pair) -> None:
    ours, ibsi = pair
    for name, (ibsi_name, offset) in CONVENTION.items():
        assert ours[name] == pytest.approx(ibsi[ibsi_name] + offset, rel=RTOL), name


def test_filtered_image_first_order_equals_ibsi() -> None:
    """The LoG and wavelet images run through the same first-order code: check it on a LoG image
    (the filters themselves are scipy/PyWavelets and are not compared to IBSI's filter definitions)."""
    from scipy import ndimage

    image, mask = _us_lesion(5)
    log_image = ndimage.gaussian_laplace(image, 2)
    ours = radiomics.radiomics_features(image, mask, 1.0)
    ibsi = _mirp(log_image, mask)
    for name, ibsi_name in IBSI_PAIRS.items():
        if name.startswith(("firstorder", "glcm", "glrlm", "glszm")):
            assert ours[f"log_sigma_2_{name}"] == pytest.approx(ibsi[ibsi_name], rel=RTOL, abs=1e-9), name
