"""Drift statistics against references: scipy's ks_2samp, a textbook PSI, scipy's chi-square."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from checks.drift import (
    DriftRules,
    categorical_psi,
    chi_square,
    ks_from_sketches,
    ks_statistic,
    numeric_drift,
    psi,
    psi_from_sketches,
    sketch_of,
)


def reference_psi(ref, cur, bins=10):
    """PSI written out the textbook way: decile bins of the reference, right-closed, shares floored at half a count."""
    ref, cur = np.asarray(ref, float), np.asarray(cur, float)
    qs = np.quantile(ref, [k / bins for k in range(1, bins)], method="inverted_cdf")
    edges = [-np.inf] + sorted(set(qs.tolist())) + [np.inf]
    r = pd.Series(pd.cut(ref, edges, right=True)).value_counts(sort=False).to_numpy() / len(ref)
    c = pd.Series(pd.cut(cur, edges, right=True)).value_counts(sort=False).to_numpy() / len(cur)
    total = 0.0
    for a, e in zip(c, r):
        a, e = max(a, 0.5 / len(cur)), max(e, 0.5 / len(ref))
        total += (a - e) * np.log(a / e)
    return total


CASES = [
    ("normal shift", lambda g: (g.normal(0, 1, 3000), g.normal(0.3, 1.2, 2000))),
    ("same law", lambda g: (g.normal(5, 2, 1500), g.normal(5, 2, 1700))),
    ("poisson counts with ties", lambda g: (g.poisson(1.5, 4000).astype(float), g.poisson(2.0, 900).astype(float))),
    ("zero-inflated", lambda g: (np.where(g.random(3000) < 0.7, 0, g.exponential(3, 3000)),
                                 np.where(g.random(800) < 0.5, 0, g.exponential(3, 800)))),
    ("small and skewed", lambda g: (g.lognormal(0, 1, 40), g.lognormal(0.5, 1, 25))),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_exact_statistics_equal_references(name, make):
    ref, cur = make(np.random.default_rng(abs(hash(name)) % 2**32))
    assert ks_statistic(ref, cur) == pytest.approx(sps.ks_2samp(ref, cur).statistic, abs=1e-12)
    assert psi(ref, cur) == pytest.approx(reference_psi(ref, cur), rel=1e-9, abs=1e-12)
    # NaNs are not values: they are dropped on both sides
    assert ks_statistic(np.append(ref, np.nan), cur) == pytest.approx(ks_statistic(ref, cur))


def test_sketches_are_exact_while_small_and_within_the_bound_beyond():
    g = np.random.default_rng(3)
    ref, cur = g.gamma(2.0, 1.0, 180), g.gamma(2.4, 1.0, 150)  # <= k values: the sketch keeps them all
    d, bound = ks_from_sketches(sketch_of(ref), sketch_of(cur))
    assert bound == 0 and d == pytest.approx(sps.ks_2samp(ref, cur).statistic, abs=1e-12)
    assert psi_from_sketches(sketch_of(ref), sketch_of(cur)) == pytest.approx(reference_psi(ref, cur), rel=1e-9)

    for seed in range(5):
        g = np.random.default_rng(100 + seed)
        ref, cur = g.normal(0, 1, 50_000), g.normal(0.15, 1.1, 20_000)
        d, bound = ks_from_sketches(sketch_of(ref), sketch_of(cur))
        exact = sps.ks_2samp(ref, cur).statistic
        assert 0 < bound < 0.04
        assert abs(d - exact) <= bound, (d, exact, bound)
        assert psi_from_sketches(sketch_of(ref), sketch_of(cur)) == pytest.approx(psi(ref, cur), abs=0.03)


def test_categorical_psi_and_chi_square():
    ref = {"mobile": 550, "desktop": 350, "tablet": 100}
    cur = {"mobile": 700, "desktop": 220, "tablet": 70, "tv": 10}
    table = np.array([[550, 350, 100, 0], [700, 220, 70, 10]])[:, [1, 0, 2, 3]]  # sorted: desktop, mobile, tablet, tv
    stat, p = chi_square(ref, cur)
    res = sps.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(res.statistic) and p == pytest.approx(res.pvalue)
    shares_r = np.array([350, 550, 100, 0]) / 1000
    shares_c = np.array([220, 700, 70, 10]) / 1000
    r, c = np.maximum(shares_r, 0.5 / 1000), np.maximum(shares_c, 0.5 / 1000)
    assert categorical_psi(ref, cur) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    assert categorical_psi(ref, ref) == 0.0


def test_noise_floor_keeps_small_samples_quiet_and_catches_real_shifts():
    g = np.random.default_rng(11)
    rules = DriftRules()
    same = [numeric_drift(sketch_of(g.normal(0, 1, 1200)), sketch_of(g.normal(0, 1, 60)), rules) for _ in range(30)]
    # 60 values: sampling noise alone usually exceeds PSI 0.1; the noise floor keeps (nearly) all quiet
    assert sum(r["psi"] > rules.psi_warn for r in same) >= 15
    assert sum(r["severity"] == "ok" for r in same) >= 28
    shifted = numeric_drift(sketch_of(g.normal(0, 1, 4000)), sketch_of(g.normal(1.0, 1, 500)), rules)
    assert shifted["severity"] == "error" and shifted["psi"] > 0.25 and shifted["ks"] > 0.2
