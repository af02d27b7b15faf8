"""Training cohorts: real GBSG2, and the semi-synthetic multimodal cohort built on it.

GBSG2 (German Breast Cancer Study Group 2, 686 node-positive patients, recurrence-free survival,
shipped by lifelines) is the only real cohort here. It has age, menopausal status, tumour size,
grade, positive nodes, ER and PR (fmol/l) and hormone therapy; it has no HER2 or Ki-67 (they are
missing inputs for every GBSG2 patient, so the subtype is "HR positive, HER2 unknown" or missing).

No real cohort with slides and ultrasound exists here, so the fusion model trains on a
*semi-synthetic* cohort: each GBSG2 patient keeps their real clinical values and real outcome, and
gets slide and ultrasound features generated from a documented latent-risk model:

    z = 0.6 * std(clinical Cox lp) + 0.8 * std(rank-normal martingale residual) + 0.6 * N(0, 1)

where the clinical Cox lp and the martingale residual come from a Cox model fitted on the real
clinical data. The residual term is what makes the images carry information beyond the clinical
variables (by construction, not by discovery: this cohort exercises fusion and missing-modality
handling, it does not show that real images predict recurrence). Every image feature is
``loading * z + noise`` with feature-specific loadings (fixed by a seed), some loadings zero
(pure-noise features). A random subset of patients has each modality removed (missing WSI 25 %,
missing US 25 %, missing report embedding 50 %).

Missingness modes (``semi_synthetic_arrays(..., missingness=...)``):

* ``"mcar"`` (default, what ``train_all`` uses): the removals above are missing completely at
  random, independent of everything. With standardized inputs, zero fill is then mean imputation
  of a modality whose absence says nothing, which is why a learned "missing" embedding cannot be
  expected to beat it.
* ``"informative"`` (for the ablation in bench/recurrence.py only): whether a modality exists
  depends on the patient, as in clinic. Each absence follows a stated logistic model

      P(absent_i) = sigmoid(a + slope * d_i),   d = (driver - mean) / sd over the cohort,

  with ``slope`` and driver from ``INFORMATIVE_MISSINGNESS`` and the intercept ``a`` solved so the
  cohort's absence rate stays the MCAR rate (25 %), so only WHO is missing changes, not how many:

  - WSI: driver = latent risk z, slope -1.5. Lower-risk disease less often yields a slide for
    analysis (no node dissection / re-excision specimen). z drives the slide features themselves
    and includes outcome information not in the clinical variables, so this is missing NOT at
    random: by construction the fact of absence carries outcome information beyond the observed
    inputs (how much, measured in bench/recurrence.py: little; the absence flags added to either
    model's risk score raise the test C-index by about +0.001).
  - US: driver = log tumour size (a clinical input the model always sees), slope -1.5: an
    ultrasound is done mostly when there is a palpable, larger lump. Absence depends only on an
    observed variable plus independent noise (missing at random given the inputs), so it carries
    no outcome information beyond tumour size; it still tells "not imaged" from "average image".
  - report embedding: stays MCAR at 50 % (a technical absence: the sentence encoder not exported).

  The same uniform draws as the MCAR mode are compared with these per-patient probabilities, so
  both modes share every feature value and differ only in the availability masks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import norm, rankdata

from models.recurrence.features import (
    CATEGORICAL_VARIABLES,
    CONTINUOUS_VARIABLES,
    FeatureSpec,
    clinical_raw,
    empty_batch,
)

MISSING_RATES = {"wsi": 0.25, "us": 0.25, "text_embedding": 0.5}
LATENT_WEIGHTS = {"clinical_lp": 0.6, "martingale": 0.8, "noise": 0.6}
MISSINGNESS_MODES = ("mcar", "informative")
# Logistic absence models of the "informative" mode (see module doc); fixed before any run, not tuned.
INFORMATIVE_MISSINGNESS = {
    "wsi": {"driver": "latent risk z", "slope": -1.5},
    "us": {"driver": "log tumour size", "slope": -1.5},
}


def load_gbsg2() -> pd.DataFrame:
    from lifelines.datasets import load_gbsg2 as _load

    return _load()


def gbsg2_clinical_values(df: pd.DataFrame) -> list[dict[str, float | str]]:
    """GBSG2 rows as ClinicalContext.values dicts (same keys the FHIR reader produces)."""
    rows = []
    grade = {"I": "1", "II": "2", "III": "3"}
    for r in df.itertuples(index=False):
        rows.append({
            "age_years": float(r.age),
            "tumour_size_mm": float(r.tsize),
            "positive_nodes": float(r.pnodes),
            "grade": grade[str(r.tgrade)],
            "er": float(r.estrec),
            "pr": float(r.progrec),
            "menopausal_status": "pre" if str(r.menostat).lower().startswith("pre") else "post",
            "hormone_therapy": "yes" if str(r.horTh) == "yes" else "no",
        })
    return rows


def clinical_batch(values: list[dict[str, float | str]], spec: FeatureSpec) -> dict[str, np.ndarray]:
    batch = empty_batch(spec, len(values))
    for i, v in enumerate(values):
        x, m, idx = clinical_raw(v, spec.continuous)
        batch["clin_cont"][i], batch["clin_cont_mask"][i], batch["clin_cat"][i] = x, m, idx
    return batch


def gbsg2_arrays(spec: FeatureSpec) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(unstandardized batch, time in days, event) for all 686 GBSG2 patients."""
    df = load_gbsg2()
    return clinical_batch(gbsg2_clinical_values(df), spec), df["time"].to_numpy(float), df["cens"].to_numpy(float)


def _latent_risk(df: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    from lifelines import CoxPHFitter

    x = pd.DataFrame({
        "age": df.age, "tsize": df.tsize, "pnodes": np.log1p(df.pnodes),
        "progrec": np.log1p(df.progrec), "estrec": np.log1p(df.estrec),
        "grade": df.tgrade.map({"I": 1, "II": 2, "III": 3}).astype(float),
        "horTh": (df.horTh == "yes").astype(float), "time": df.time, "cens": df.cens,
    })
    cph = CoxPHFitter().fit(x, "time", "cens")
    lp = cph.predict_log_partial_hazard(x).to_numpy()
    h0 = cph.baseline_cumulative_hazard_
    cum = np.interp(x.time, h0.index.to_numpy(), h0.iloc[:, 0].to_numpy()) * np.exp(lp)
    mart = x.cens.to_numpy() - cum
    mart_n = norm.ppf((rankdata(mart) - 0.5) / len(mart))
    std = lambda a: (a - a.mean()) / a.std()  # noqa: E731
    w = LATENT_WEIGHTS
    return w["clinical_lp"] * std(lp) + w["martingale"] * mart_n + w["noise"] * rng.standard_normal(len(lp))


def _features_from_latent(z: np.ndarray, n_feat: int, rng: np.random.Generator, zero_frac: float,
                          noise: float) -> np.ndarray:
    loadings = rng.normal(0.0, 1.0, n_feat)
    loadings[rng.random(n_feat) < zero_frac] = 0.0
    offsets = rng.normal(0.0, 2.0, n_feat)
    scales = np.exp(rng.normal(0.0, 1.0, n_feat))
    x = z[:, None] * loadings[None, :] + noise * rng.standard_normal((len(z), n_feat))
    return ((x + offsets) * scales).astype(np.float32)


def informative_absence_probability(z: np.ndarray, tumour_size_mm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patient probability that the slides / the ultrasound are absent (informative mode).

    Logistic in the standardized driver (``INFORMATIVE_MISSINGNESS``), intercept solved so the
    cohort mean equals the MCAR rate: the comparison with the MCAR mode then changes who is
    missing, never how many.
    """
    drivers = {"wsi": np.asarray(z, float), "us": np.log(np.asarray(tumour_size_mm, float))}
    out = {}
    for col, rule in INFORMATIVE_MISSINGNESS.items():
        d = drivers[col]
        d = (d - d.mean()) / d.std()
        slope, rate = rule["slope"], MISSING_RATES[col]
        a = brentq(lambda c: float(expit(c + slope * d).mean()) - rate, -30.0, 30.0)  # noqa: B023
        out[col] = expit(a + slope * d)
    return out


def semi_synthetic_arrays(
    spec: FeatureSpec, seed: int = 0, missing: bool = True, missingness: str = "mcar"
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """(unstandardized batch, time, event, latent z) of the semi-synthetic cohort (see module doc).

    ``missingness`` picks who lacks a modality when ``missing`` is true: ``"mcar"`` (default,
    random) or ``"informative"`` (stated logistic models of risk and tumour size); the feature
    values are the same in both modes.
    """
    if missingness not in MISSINGNESS_MODES:
        raise ValueError(f"unknown missingness mode {missingness!r} (expected one of {MISSINGNESS_MODES})")
    rng = np.random.default_rng(seed)
    df = load_gbsg2()
    batch = clinical_batch(gbsg2_clinical_values(df), spec)
    n = len(df)
    z = _latent_risk(df, rng)
    batch["wsi_deep"] = _features_from_latent(z, spec.wsi_embedding_dim, rng, 0.5, 1.5)
    batch["morph"] = _features_from_latent(z, len(spec.morphology), rng, 0.3, 1.0)
    batch["topo"] = _features_from_latent(z, len(spec.topology), rng, 0.3, 1.0)
    batch["us_deep"] = _features_from_latent(z, spec.us_deep_dim, rng, 0.5, 1.5)
    batch["rad"] = _features_from_latent(z, len(spec.radiomics), rng, 0.3, 1.0)
    # Report lexicon fields: binary descriptors thresholded on z + noise, category 3-5, size mm.
    tf = np.zeros((n, len(spec.text_fields)), np.float32)
    for j, name in enumerate(spec.text_fields):
        s = z + rng.standard_normal(n)
        if name == "birads_category":
            tf[:, j] = np.digitize(s, [-0.5, 0.8]) + 3
        elif name == "size_mm":
            tf[:, j] = np.asarray(df.tsize, np.float32) * np.exp(0.15 * rng.standard_normal(n))
        else:
            tf[:, j] = (s > rng.normal(0.0, 0.5)).astype(np.float32)
    batch["text_fields"] = tf
    batch["text_emb"] = _features_from_latent(z, spec.text_embedding_dim, rng, 0.8, 2.0) / 10.0
    for key, mkey in (("morph", "morph_mask"), ("topo", "topo_mask"), ("rad", "rad_mask"),
                      ("text_fields", "text_fields_mask")):
        batch[mkey] = np.ones_like(batch[key])
    mm = np.ones((n, 3), np.float32)
    if missing:
        p_absent: dict[str, np.ndarray | float] = dict(MISSING_RATES)
        if missingness == "informative":
            p_absent.update(informative_absence_probability(z, df["tsize"].to_numpy(float)))
        for j, col in enumerate(("wsi", "us", "text_embedding")):
            mm[:, j] = (rng.random(n) >= p_absent[col]).astype(np.float32)
    batch["modality_mask"] = mm
    apply_modality_mask(batch)
    return batch, df["time"].to_numpy(float), df["cens"].to_numpy(float), z


def apply_modality_mask(batch: dict[str, np.ndarray]) -> None:
    """Zero the inputs of absent modalities (in place), as a real case without them would be."""
    mm = batch["modality_mask"]
    wsi, us, emb = mm[:, 0:1], mm[:, 1:2], mm[:, 2:3]
    for key in ("wsi_deep", "morph", "morph_mask", "topo", "topo_mask"):
        batch[key] = batch[key] * wsi
    for key in ("us_deep", "rad", "rad_mask", "text_fields", "text_fields_mask"):
        batch[key] = batch[key] * us
    batch["text_emb"] = batch["text_emb"] * emb * us
    batch["modality_mask"] = np.concatenate([wsi, us, emb * us], axis=1).astype(np.float32)


def subset(batch: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in batch.items()}


__all__ = [
    "CATEGORICAL_VARIABLES", "CONTINUOUS_VARIABLES", "gbsg2_arrays", "semi_synthetic_arrays",
    "informative_absence_probability", "INFORMATIVE_MISSINGNESS", "MISSINGNESS_MODES",
    "apply_modality_mask", "subset", "load_gbsg2", "gbsg2_clinical_values",
]
