"""The Cox loss is the partial likelihood lifelines maximizes, and Breslow ties are handled right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from models.recurrence.survival import BaselineHazard, cox_partial_loglik, fit_shrinkage
from models.recurrence.training.network import cox_loss


def _breslow_bruteforce(lp: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    ll = 0.0
    for i in range(len(lp)):
        if event[i]:
            ll += lp[i] - np.log(np.sum(np.exp(lp[time >= time[i]])))
    return ll


def test_cox_loss_equals_lifelines_partial_likelihood() -> None:
    rng = np.random.default_rng(0)
    n = 40
    x = rng.standard_normal((n, 2))
    time = rng.permutation(np.arange(1, n + 1)).astype(float)  # no ties: Breslow == Efron
    event = (rng.random(n) < 0.7).astype(float)
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "t": time, "e": event})
    cph = CoxPHFitter().fit(df, "t", "e")
    lp = x @ cph.params_[["a", "b"]].to_numpy()
    loss = cox_loss(torch.tensor(lp), torch.tensor(time), torch.tensor(event))
    assert float(-loss * event.sum()) == pytest.approx(cph.log_likelihood_, abs=1e-6)
    assert cox_partial_loglik(lp, time, event) == pytest.approx(cph.log_likelihood_, abs=1e-6)


def test_breslow_ties_match_bruteforce_and_differ_from_nothing() -> None:
    rng = np.random.default_rng(1)
    n = 30
    time = rng.integers(1, 8, n).astype(float)  # many ties
    event = (rng.random(n) < 0.6).astype(float)
    lp = rng.standard_normal(n)
    ref = _breslow_bruteforce(lp, time, event)
    got = -float(cox_loss(torch.tensor(lp), torch.tensor(time), torch.tensor(event))) * event.sum()
    assert got == pytest.approx(ref, abs=1e-9)
    assert cox_partial_loglik(lp, time, event) == pytest.approx(ref, abs=1e-9)
    # A wrong tie handling (risk set = strictly later + self only) gives another value.
    wrong = sum(lp[i] - np.log(np.exp(lp[(time > time[i]) | (np.arange(n) == i)]).sum())
                for i in range(n) if event[i])
    assert abs(wrong - ref) > 1e-3


def test_shrinkage_recovers_scale_and_baseline_is_monotone() -> None:
    rng = np.random.default_rng(2)
    n = 800
    lp_true = rng.standard_normal(n)
    time = rng.exponential(1.0 / np.exp(lp_true))
    censor = rng.exponential(2.0, n)
    event = (time <= censor).astype(float)
    time = np.minimum(time, censor)
    assert fit_shrinkage(2.0 * lp_true, time, event) == pytest.approx(0.5, abs=0.08)
    base = BaselineHazard.fit(lp_true, time, event)
    assert np.all(np.diff(base.cumhaz) > 0)
    risk = [base.absolute_risk(np.array([0.3]), t)[0] for t in (0.2, 0.5, 1.0)]
    assert risk[0] < risk[1] < risk[2]
