"""Benchmark of the recurrence model on real GBSG2, against lifelines CoxPH and a random survival forest.

Run: ``nice .venv/bin/python -m bench.recurrence`` (``--repeats 1`` for a quick look).

Part 1 (real data): GBSG2, R repeats x 5-fold CV stratified on event status and early/late time.
In every training fold the clinical MRRP branch runs the shipped recipe
(``models.recurrence.training.train.fit_clinical``): weight decay, width and epochs chosen by an inner 3-fold
CV on that training fold only (validation partial likelihood), calibration slope from the inner
out-of-fold predictions, an ensemble of 5 seeds, Breslow baseline on the training fold; the peers are trained on the same folds (CoxPH: lifelines defaults on
the raw GBSG2 covariates; RSF: scikit-survival, 100 trees, min 15 samples per leaf, sqrt features,
fixed in advance, never tuned on test folds). Metrics on each test fold: Harrell's C-index,
integrated Brier score (1 to 6 years), cumulative/dynamic AUC at 3, 5, 7 years (where the test fold
has follow-up; on GBSG2 the last recurrence is at 6.7 years, so the 7-year AUC is not estimable
and prints NaN), and the 5-year calibration slope (Cox slope of outcome on cloglog predicted risk).

Part 2 (semi-synthetic cohort, see models/recurrence/cohort.py): 5-fold CV x 3 training seeds; the
fusion model and its ablations (learned missing embedding vs zero fill = mean imputation on the
standardized inputs; cross-attention vs concatenation) are trained identically (same folds, seeds,
epochs and modality dropout) on folds with random missing modalities, and tested with every
modality present, with the slides (or the ultrasound) removed from every test patient, and from a
random half of them. Learned vs zero fill is reported as a paired difference per (fold, seed).

Part 2, second block (informative missingness): the MCAR removal above is the case where a learned
"missing" embedding cannot beat zero fill (standardized zero IS the mean, the best constant, and
the absence carries no information). The block repeats learned embedding vs zero fill
(cross-attention, same folds, seeds, epochs and modality dropout as the MCAR block) on the cohort's
``missingness="informative"`` mode (cohort.py: slides absent mostly for low latent risk, which is
missing not at random; ultrasound absent mostly for small tumours, missing at random given tumour
size; same 25 % rates). Test patients are scored with their natural informative missingness, with
every modality present, and with the slides or the ultrasound removed from all of them. Nothing
was tuned on these results: the absence models were fixed before the first run. A headroom line
says how much the bare absence flags, added to each variant's risk score by a Cox model fitted on
the training fold, still improve the test C-index (if it is ~0 for zero fill too, the absence
carries little information beyond what the clinical inputs already give, and no missing-modality
mechanism can win by much).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sklearn.model_selection import StratifiedKFold
from sksurv.ensemble import RandomSurvivalForest
from sksurv.metrics import cumulative_dynamic_auc, integrated_brier_score
from sksurv.util import Surv

from models.recurrence.features import FeatureSpec, fit_scalers, standardize
from models.recurrence.survival import DAYS_PER_YEAR, HORIZONS_YEARS, calibration_slope
from models.recurrence.training import cohort
from models.recurrence.training.train import TrainConfig, fit_clinical, fit_network, predict

IBS_YEARS = np.linspace(1.0, 6.0, 21)


def _strata(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return event.astype(int) * 2 + (time > np.median(time)).astype(int)


def _peer_frame(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "age": df.age.astype(float), "tsize": df.tsize.astype(float), "pnodes": df.pnodes.astype(float),
        "progrec": df.progrec.astype(float), "estrec": df.estrec.astype(float),
        "grade": df.tgrade.map({"I": 1, "II": 2, "III": 3}).astype(float),
        "horTh": (df.horTh == "yes").astype(float), "post": (df.menostat == "Post").astype(float),
    })


def _metrics(risk_lp: np.ndarray, surv_at: np.ndarray, risk_at: dict[int, np.ndarray], t_tr, e_tr, t_te, e_te) -> dict:
    """Metrics of one model on one test fold. surv_at: (n, len(IBS_YEARS)) survival probabilities."""
    y_tr, y_te = Surv.from_arrays(e_tr.astype(bool), t_tr), Surv.from_arrays(e_te.astype(bool), t_te)
    out = {"cindex": concordance_index(t_te, -risk_lp, e_te)}
    times = IBS_YEARS * DAYS_PER_YEAR
    ok = times < min(t_te.max(), t_tr.max())
    out["ibs"] = integrated_brier_score(y_tr, y_te, surv_at[:, ok], times[ok])
    for y in HORIZONS_YEARS:
        t = y * DAYS_PER_YEAR
        if t < t_te[e_te > 0].max() and t < t_tr.max() and t > t_te.min():
            out[f"auc{y}"] = float(cumulative_dynamic_auc(y_tr, y_te, risk_at[y], [t])[0][0])
        else:
            out[f"auc{y}"] = np.nan
    out["slope5"] = calibration_slope(risk_at[5], t_te, e_te)
    return out


def real_data(repeats: int, seed: int) -> pd.DataFrame:
    spec = FeatureSpec()
    batch, t, e = cohort.gbsg2_arrays(spec)
    peer = _peer_frame(cohort.load_gbsg2())
    rows = []
    grid_days = IBS_YEARS * DAYS_PER_YEAR
    for rep in range(repeats):
        skf = StratifiedKFold(5, shuffle=True, random_state=seed + rep)
        for fold, (tr, te) in enumerate(skf.split(t, _strata(t, e))):
            t0 = time.perf_counter()
            # --- ours: clinical MRRP branch
            m = fit_clinical(spec, cohort.subset(batch, tr), t[tr], e[tr], seed=seed + rep * 10 + fold)
            lp = m.risk_score(cohort.subset(batch, te))
            surv = np.stack([1 - m.baseline.absolute_risk(lp, d) for d in grid_days], 1)
            risk = m.absolute_risk(lp)
            rows.append({"model": "MRRP clinical", "rep": rep, "fold": fold,
                         **_metrics(lp, surv, risk, t[tr], e[tr], t[te], e[te]),
                         "fit_s": time.perf_counter() - t0})
            # --- lifelines CoxPH
            t0 = time.perf_counter()
            cph = CoxPHFitter().fit(peer.iloc[tr].assign(time=t[tr], cens=e[tr]), "time", "cens")
            lp_c = cph.predict_log_partial_hazard(peer.iloc[te]).to_numpy()
            sf = cph.predict_survival_function(peer.iloc[te], times=grid_days).to_numpy().T
            risk_c = {y: 1 - cph.predict_survival_function(peer.iloc[te], times=[y * DAYS_PER_YEAR]).to_numpy()[0]
                      for y in HORIZONS_YEARS}
            rows.append({"model": "lifelines CoxPH", "rep": rep, "fold": fold,
                         **_metrics(lp_c, sf, risk_c, t[tr], e[tr], t[te], e[te]),
                         "fit_s": time.perf_counter() - t0})
            # --- scikit-survival RSF
            t0 = time.perf_counter()
            rsf = RandomSurvivalForest(n_estimators=100, min_samples_leaf=15, max_features="sqrt",
                                       n_jobs=1, random_state=seed + rep * 10 + fold)
            rsf.fit(peer.iloc[tr].to_numpy(), Surv.from_arrays(e[tr].astype(bool), t[tr]))
            xte = peer.iloc[te].to_numpy()
            fns = rsf.predict_survival_function(xte)
            sf = np.stack([np.clip(fn(np.clip(grid_days, fn.x[0], fn.x[-1])), 0, 1) for fn in fns])
            risk_r = {y: np.array([1 - fn(min(max(y * DAYS_PER_YEAR, fn.x[0]), fn.x[-1])) for fn in fns])
                      for y in HORIZONS_YEARS}
            rows.append({"model": "sksurv RSF", "rep": rep, "fold": fold,
                         **_metrics(rsf.predict(xte), sf, risk_r, t[tr], e[tr], t[te], e[te]),
                         "fit_s": time.perf_counter() - t0})
            print(f"  repeat {rep + 1} fold {fold + 1}: " + ", ".join(
                f"{r['model']} C={r['cindex']:.3f}" for r in rows[-3:]), flush=True)
    return pd.DataFrame(rows)


ABLATIONS = {
    "cross-attention, learned missing": {"fusion": "attention", "missing_mode": "learned"},
    "cross-attention, zero fill": {"fusion": "attention", "missing_mode": "zero"},
    "concatenation, learned missing": {"fusion": "concat", "missing_mode": "learned"},
}
LEARNED, ZERO = "cross-attention, learned missing", "cross-attention, zero fill"
SCENARIOS = ("full", "WSI absent", "US absent", "WSI absent in half", "US absent in half")


def _scenario(batch: dict[str, np.ndarray], scen: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Test inputs of one scenario: a modality removed from every patient, or from a random half."""
    out = {k: v.copy() for k, v in batch.items()}
    col = 0 if "WSI" in scen else 1
    if scen.endswith("absent"):
        out["modality_mask"][:, col] = 0
    elif scen.endswith("in half"):
        out["modality_mask"][:, col] *= (rng.random(len(out["modality_mask"])) < 0.5)
    cohort.apply_modality_mask(out)
    return out


def semi_synthetic(seed: int, seeds: int = 3, epochs: int = 150) -> pd.DataFrame:
    """Ablations: 5-fold CV x ``seeds`` training seeds; every variant trained identically.

    Same folds, same training seed (initialisation stream and modality-dropout draws), same
    epochs, same standardization for every variant, so each (fold, seed) gives a paired
    comparison. Test patients have every modality (full), or one modality removed from all of
    them, or from a random half (the same half for every variant).
    """
    spec = FeatureSpec()
    train_batch, t, e, _ = cohort.semi_synthetic_arrays(spec, seed=seed, missing=True)
    full_batch, _, _, _ = cohort.semi_synthetic_arrays(spec, seed=seed, missing=False)
    clin_only, _, _ = cohort.gbsg2_arrays(spec)
    rows = []
    skf = StratifiedKFold(5, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(skf.split(t, _strata(t, e))):
        btr = cohort.subset(train_batch, tr)
        scalers = fit_scalers(btr)
        tests = {scen: standardize(_scenario(cohort.subset(full_batch, te), scen, np.random.default_rng(seed + fold)),
                                   scalers) for scen in SCENARIOS}
        for s in range(seeds):
            run_seed = seed + 1000 * s + 31 * fold
            for name, override in ABLATIONS.items():
                cfg = TrainConfig(image_branches=True, epochs=epochs, **override)
                net = fit_network(spec, standardize(btr, scalers), t[tr], e[tr], cfg, run_seed)
                for scen, bte in tests.items():
                    lp = predict([net], bte)
                    rows.append({"model": name, "scenario": scen, "fold": fold, "seed": s,
                                 "cindex": concordance_index(t[te], -lp, e[te])})
            ctr = cohort.subset(clin_only, tr)
            cs = fit_scalers(ctr)
            cfg = TrainConfig(image_branches=False, epochs=epochs)
            net = fit_network(spec, standardize(ctr, cs), t[tr], e[tr], cfg, run_seed)
            lp = predict([net], standardize(cohort.subset(clin_only, te), cs))
            rows.append({"model": "clinical only (reference)", "scenario": "no imaging", "fold": fold, "seed": s,
                         "cindex": concordance_index(t[te], -lp, e[te])})
        print(f"  semi-synthetic fold {fold + 1} done", flush=True)
    return pd.DataFrame(rows)


INFORMATIVE_SCENARIOS = ("natural", "full", "WSI absent", "US absent")


def semi_synthetic_informative(seed: int, seeds: int = 3, epochs: int = 150) -> pd.DataFrame:
    """Learned missing embedding vs zero fill under informative missingness (see module doc).

    Everything but the cohort's missingness mode is as in :func:`semi_synthetic`: same folds (the
    outcome is the same, so the same stratified split), same run seeds, epochs, modality dropout
    and standardization (scalers fitted on the training fold's observed values).
    """
    spec = FeatureSpec()
    train_batch, t, e, _ = cohort.semi_synthetic_arrays(spec, seed=seed, missing=True, missingness="informative")
    full_batch, _, _, _ = cohort.semi_synthetic_arrays(spec, seed=seed, missing=False)
    rows = []
    skf = StratifiedKFold(5, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(skf.split(t, _strata(t, e))):
        btr = cohort.subset(train_batch, tr)
        scalers = fit_scalers(btr)
        tests = {"natural": standardize(cohort.subset(train_batch, te), scalers)}
        for scen in INFORMATIVE_SCENARIOS[1:]:
            raw = _scenario(cohort.subset(full_batch, te), scen, np.random.default_rng(seed + fold))
            tests[scen] = standardize(raw, scalers)
        for s in range(seeds):
            run_seed = seed + 1000 * s + 31 * fold
            for name in (LEARNED, ZERO):
                cfg = TrainConfig(image_branches=True, epochs=epochs, **ABLATIONS[name])
                net = fit_network(spec, standardize(btr, scalers), t[tr], e[tr], cfg, run_seed)
                for scen, bte in tests.items():
                    lp = predict([net], bte)
                    rows.append({"model": name, "scenario": scen, "fold": fold, "seed": s,
                                 "cindex": concordance_index(t[te], -lp, e[te])})
                rows.append({"model": name, "scenario": FLAGS, "fold": fold, "seed": s,
                             **_with_absence_flags(predict([net], standardize(btr, scalers)), btr, t[tr], e[tr],
                                                   predict([net], tests["natural"]), tests["natural"], t[te], e[te])})
        print(f"  informative-missingness fold {fold + 1} done", flush=True)
    return pd.DataFrame(rows)


FLAGS = "natural + absence flags"


def _with_absence_flags(lp_tr, btr, t_tr, e_tr, lp_te, bte, t_te, e_te) -> dict:
    """Headroom diagnostic: what the bare FACT of absence still adds to a variant's risk score.

    A Cox model of outcome on (lp, slides absent, ultrasound absent) is fitted on the TRAINING
    fold (the network's own predictions there, natural missingness) and applied to the test fold.
    If the variant already uses the absence information, the flags add nothing; the gain is an
    upper-bound-like estimate of what any missingness-aware model could add on top of it.
    """
    def frame(lp, b):
        return pd.DataFrame({"lp": lp, "wsi_absent": 1 - b["modality_mask"][:, 0],
                             "us_absent": 1 - b["modality_mask"][:, 1]})

    cph = CoxPHFitter().fit(frame(lp_tr, btr).assign(T=t_tr, E=e_tr), "T", "E")
    lp2 = cph.predict_log_partial_hazard(frame(lp_te, bte)).to_numpy()
    return {"cindex": concordance_index(t_te, -lp2, e_te),
            "coef_wsi_absent": float(cph.params_["wsi_absent"]), "coef_us_absent": float(cph.params_["us_absent"])}


def _cindex_table(ab: pd.DataFrame, columns: tuple[str, ...]) -> None:
    n_runs = ab[(ab.model == LEARNED) & (ab.scenario == columns[0])].shape[0]
    print(f"C-index, mean +- sd over {n_runs} runs (5 folds x {ab.seed.nunique()} training seeds)")
    cell = ab.groupby(["model", "scenario"]).cindex.agg(["mean", "std"])
    table = cell.apply(lambda r: f"{r['mean']:.4f} +- {r['std']:.4f}", axis=1).unstack("scenario")
    print(table[[c for c in columns if c in table.columns]].fillna("").to_string())


def _paired_learned_vs_zero(ab: pd.DataFrame, scenarios: tuple[str, ...]) -> None:
    from scipy.stats import ttest_rel

    print("\npaired difference learned missing embedding - zero fill (same fold, seed, test inputs):")
    for scen in scenarios:
        la = ab[(ab.model == LEARNED) & (ab.scenario == scen)].sort_values(["fold", "seed"]).cindex.to_numpy()
        za = ab[(ab.model == ZERO) & (ab.scenario == scen)].sort_values(["fold", "seed"]).cindex.to_numpy()
        d = la - za
        p = ttest_rel(la, za).pvalue if len(d) > 1 and np.std(d) > 0 else float("nan")
        verdict = ("learned better" if d.mean() > 0 and p < 0.05 else
                   "zero fill better" if d.mean() < 0 and p < 0.05 else "no significant difference")
        print(f"  {scen:20s} {d.mean():+.4f} +- {d.std(ddof=1):.4f} (learned wins {int((d > 0).sum())}/{len(d)}, "
              f"paired t p={p:.3f}) -> {verdict}")


def report_informative(ab: pd.DataFrame) -> None:
    rules = "; ".join(f"{k} absent: logistic in {v['driver']}, slope {v['slope']} per sd"
                      for k, v in cohort.INFORMATIVE_MISSINGNESS.items())
    print(f"({rules}; rates as MCAR; report embedding MCAR)")
    _cindex_table(ab, INFORMATIVE_SCENARIOS)
    _paired_learned_vs_zero(ab, INFORMATIVE_SCENARIOS)
    print("\nheadroom: test C-index gain from adding the absence flags to each variant's risk score "
          "(Cox weights fitted on the training fold; natural missingness):")
    for name in (LEARNED, ZERO):
        sel = ab[ab.model == name]
        nat = sel[sel.scenario == "natural"].sort_values(["fold", "seed"])
        flg = sel[sel.scenario == FLAGS].sort_values(["fold", "seed"])
        g = flg.cindex.to_numpy() - nat.cindex.to_numpy()
        print(f"  {name:34s} {g.mean():+.4f} +- {g.std(ddof=1):.4f}; mean training-fold log HR of "
              f"slides absent {flg.coef_wsi_absent.mean():+.3f}, ultrasound absent {flg.coef_us_absent.mean():+.3f}")


def report_ablations(ab: pd.DataFrame) -> None:
    _cindex_table(ab, ("full", *SCENARIOS[1:], "no imaging"))
    _paired_learned_vs_zero(ab, SCENARIOS)
    att = ab[(ab.model == LEARNED)].groupby("scenario").cindex.mean()
    cat = ab[(ab.model == "concatenation, learned missing")].groupby("scenario").cindex.mean()
    print("cross-attention - concatenation: " + ", ".join(f"{k} {att[k] - cat[k]:+.4f}" for k in SCENARIOS))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ablations", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--skip-mcar", action="store_true", help="Part 2: run only the informative-missingness block")
    ap.add_argument("--ablation-seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    if not args.skip_real:
        part1(args)
    if not args.skip_ablations:
        print("\nPart 2 - semi-synthetic cohort (GBSG2 clinical + outcomes, generated imaging), 5-fold CV")
        t1 = time.perf_counter()
        if not args.skip_mcar:
            print("missing completely at random (training folds: random 25 % without slides, 25 % without US)")
            ab = semi_synthetic(args.seed, seeds=args.ablation_seeds)
            report_ablations(ab)
            print(f"MCAR block time {time.perf_counter() - t1:.0f} s")
        t1 = time.perf_counter()
        print("\ninformative missingness (who lacks a modality depends on the patient; see cohort.py)")
        inf = semi_synthetic_informative(args.seed, seeds=args.ablation_seeds)
        report_informative(inf)
        print(f"informative-missingness block time {time.perf_counter() - t1:.0f} s")
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")


def part1(args: argparse.Namespace) -> None:
    print(f"GBSG2 (686 real patients), {args.repeats} x 5-fold stratified CV")
    real = real_data(args.repeats, args.seed)
    cols = ["cindex", "ibs", "auc3", "auc5", "auc7", "slope5", "fit_s"]
    summary = real.groupby("model")[cols].agg(["mean", "median"])
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    print("\nPart 1 - real GBSG2 (mean / median over folds)")
    print(summary.round(4).to_string())
    per_rep = real.pivot_table(index="rep", columns="model", values="cindex", aggfunc="mean")
    per_rep.loc["mean"] = per_rep.mean()
    per_rep["MRRP clinical / RSF"] = per_rep["MRRP clinical"] / per_rep["sksurv RSF"]
    print("\nC-index per repeat (mean of 5 folds)")
    print(per_rep.round(4).to_string())
    print("5-year calibration slope of MRRP clinical: mean {:.3f}, median {:.3f} over folds".format(
        real[real.model == "MRRP clinical"].slope5.mean(), real[real.model == "MRRP clinical"].slope5.median()))
    ours = real[real.model == "MRRP clinical"]
    for peer in ("sksurv RSF", "lifelines CoxPH"):
        p = real[real.model == peer]
        print(f"ratio MRRP clinical / {peer}: C-index {ours.cindex.mean() / p.cindex.mean():.3f}, "
              f"IBS {ours.ibs.mean() / p.ibs.mean():.3f}")
    rsf_c = real[real.model == "sksurv RSF"].cindex.mean()
    cox_ibs = real[real.model == "lifelines CoxPH"].ibs.mean()
    print("goals: C-index >= RSF: {}; IBS < CoxPH: {}; 5-y calibration slope in [0.9, 1.1]: {} ({:.3f})".format(
        "MET" if ours.cindex.mean() >= rsf_c else "NOT MET", "MET" if ours.ibs.mean() < cox_ibs else "NOT MET",
        "MET" if 0.9 <= ours.slope5.median() <= 1.1 else "NOT MET", ours.slope5.median()))


if __name__ == "__main__":
    main()
