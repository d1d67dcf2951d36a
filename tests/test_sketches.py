"""The vectorised HLL: exact below HLL_EXACT_MAX, within its error bound above, and
unions identical for any grouping; cross-checked against Apache DataSketches' HLL."""

from __future__ import annotations

import datasketches as ds
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore import sketches


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 3000), parts=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_union_in_any_grouping_equals_one_sketch(n, parts, seed):
    """Splitting the values into parts, sketching and merging them in any order gives the
    same bytes as one sketch of everything; the estimate is exact in exact mode."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, max(n, 1) * 2, n).astype(str)
    whole = sketches.hll_of(values)
    cut = np.sort(rng.integers(0, n + 1, parts - 1))
    pieces = [sketches.hll_of(p) for p in np.split(values, cut)]
    rng.shuffle(pieces)
    left = sketches.hll_merge(pieces)
    nested = None
    for p in pieces:
        nested = sketches.hll_merge([nested, p])
    assert left == whole and nested == whole
    true = len(set(values.tolist()))
    est = sketches.hll_estimate(whole)
    if true <= sketches.HLL_EXACT_MAX:
        assert est == true
    else:
        assert abs(est - true) <= 4 * sketches.HLL_RSE * true


@pytest.mark.parametrize("n", [300, 2_000, 20_000, 200_000])
def test_estimates_agree_with_datasketches(n):
    """Same values into DataSketches' HLL (lg_k 12) and ours: both near the truth, and near each other."""
    rng = np.random.default_rng(n)
    errs_ours, errs_ds = [], []
    for rep in range(8 if n < 100_000 else 3):
        values = rng.integers(0, 2**60, n)
        ref = ds.hll_sketch(sketches.HLL_LG_K, ds.tgt_hll_type.HLL_8)
        for v in values.astype(np.float64).tolist():
            ref.update(v)
        errs_ours.append(sketches.hll_estimate(sketches.hll_of(values)) / n - 1)
        errs_ds.append(ref.get_estimate() / n - 1)
    # each estimate within 4 RSE; the spread of ours no wider than 1.6x DataSketches' + 1 RSE
    assert np.max(np.abs(errs_ours)) <= 4 * sketches.HLL_RSE, errs_ours
    assert np.std(errs_ours) <= 1.6 * np.std(errs_ds) + sketches.HLL_RSE, (errs_ours, errs_ds)


def test_by_group_equals_per_group_sketches_and_rejects_foreign_bytes():
    """hll_by_group / hll_merge_by_group equal the one-sketch-per-group functions; bytes of
    another format (e.g. tiles of an older engine) raise instead of being misread."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 50, 20_000)
    values = rng.zipf(1.3, 20_000) % 5000
    by_group = sketches.hll_by_group(codes, values, 52)
    for gi in range(52):
        vals = values[codes == gi]
        assert by_group[gi] == (sketches.hll_of(vals) if len(vals) else None)
    halves = np.r_[np.arange(52), np.arange(52)]
    merged = sketches.hll_merge_by_group(halves, np.r_[by_group, by_group[::-1]], 52)
    for gi in range(52):
        assert merged[gi] == sketches.hll_merge([by_group[gi], by_group[51 - gi]])
    with pytest.raises(ValueError, match="older engine"):
        sketches.hll_estimates([b"\x02\x01\x07"])


@settings(max_examples=40, deadline=None)
@given(groups=st.integers(1, 12), sketches_per=st.integers(1, 5), top=st.sampled_from([5, 200, 5000]),
       seed=st.integers(0, 2**31 - 1))
def test_union_estimates_equal_estimates_of_the_merged_sketches(groups, sketches_per, top, seed):
    """The fused union-and-estimate gives the estimates of the serialized unions exactly, in exact and
    register mode (a union crossing HLL_EXACT_MAX included) and with absent sketches."""
    rng = np.random.default_rng(seed)
    n = groups * sketches_per
    rows = rng.integers(0, n, int(rng.integers(0, 600 * n)))
    values = rng.integers(0, top, len(rows))
    sk = sketches.hll_by_group(rows, values.astype(str), n)  # None where a row got no value
    codes = rng.integers(0, groups, n)
    merged = sketches.hll_merge_by_group(codes, sk, groups)
    want = sketches.hll_estimates(merged)
    got = sketches.hll_union_estimates(codes, sk, groups)
    assert got.dtype == np.float64 and np.array_equal(got, want)


def test_union_estimates_cover_register_mode():
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 8, 40_000)
    sk = sketches.hll_by_group(rows, rng.integers(0, 50_000, len(rows)).astype(str), 8)
    codes = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    want = sketches.hll_estimates(sketches.hll_merge_by_group(codes, sk, 4))
    assert (want > sketches.HLL_EXACT_MAX).all()
    assert np.array_equal(sketches.hll_union_estimates(codes, sk, 4), want)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 20_000), pieces=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_kll_quantiles_within_bound_and_exact_below_k(n, pieces, seed):
    """Quantiles of a sketch merged from daily pieces: exact (inverted CDF) up to KLL_K values,
    rank error within KLL_RANK_ERROR above; min, max and count always exact."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(3, 1.2, n).round(2)
    sk = None
    for p in np.array_split(x, min(pieces, n)):
        sk = sketches.kll_merge([sk, sketches.kll_of(p)])
    xs = np.sort(x)
    qs = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
    got = np.array(sketches.kll_quantiles(sk, qs))
    assert sketches.kll_count(sk) == n
    assert sketches.kll_quantiles(sk, [0.0, 1.0]) == [xs[0], xs[-1]]
    if n <= sketches.KLL_K:
        np.testing.assert_array_equal(got, np.quantile(xs, qs, method="inverted_cdf"))
    else:
        lo = np.searchsorted(xs, got, side="left") / n  # ties: any rank inside the tie counts
        hi = np.searchsorted(xs, got, side="right") / n
        err = np.maximum(0, np.maximum(lo - np.array(qs), np.array(qs) - hi))
        assert err.max() <= sketches.KLL_RANK_ERROR, (err, n)


def test_kll_is_deterministic_and_by_group_matches_single_sketches():
    """The same merges give the same bytes (DataSketches' randomized compaction does not);
    the per-group functions equal the one-sketch functions; foreign bytes raise."""
    def build(seed):
        g = np.random.default_rng(seed)
        return sketches.kll_merge([sketches.kll_of(g.random(3000)) for _ in range(12)])

    assert build(5) == build(5)
    ref = ds.kll_doubles_sketch(sketches.KLL_K)
    g = np.random.default_rng(5)
    for _ in range(12):
        ref.update(g.random(3000))
    ours = sketches.kll_quantiles(build(5), [0.5])[0]
    assert abs(ours - ref.get_quantile(0.5)) <= 2 * sketches.KLL_RANK_ERROR  # uniform[0,1): value = rank
    rng = np.random.default_rng(9)
    codes, values = rng.integers(0, 40, 30_000), rng.normal(size=30_000)
    by_group = sketches.kll_by_group(codes, values, 42)
    for gi in range(42):
        vals = values[codes == gi]
        assert by_group[gi] == (sketches.kll_of(vals) if len(vals) else None)
    merged = sketches.kll_merge_by_group(np.r_[np.arange(42), np.arange(42)], np.r_[by_group, by_group], 42)
    assert merged[0] == sketches.kll_merge([by_group[0], by_group[0]])
    with pytest.raises(ValueError, match="older engine"):
        sketches.kll_count(b"\x05\x01\x0f" + bytes(64))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), top=st.sampled_from([5, 300, 50_000]), seed=st.integers(0, 2**31 - 1))
def test_estimates_read_off_lengths_equal_the_unpacked_estimator(n, top, seed):
    """Exact-mode estimates taken from the sketches' lengths (only register-mode sketches unpacked) equal
    the estimator over every unpacked coupon and register, and the count of distinct coupons in exact mode."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, int(rng.integers(0, 2_000 * n)))
    values = rng.integers(0, top, len(rows)).astype(str)
    sk = sketches.hll_by_group(rows, values, n)
    r, items, is_reg = sketches._unpack(sketches._arrow(sk))
    want = sketches._estimate(r[~is_reg], r[is_reg], items[is_reg], n)
    got = sketches.hll_estimates(sk)
    assert np.array_equal(got, want)
    for i in range(n):  # exact mode counts distinct coupons (26 hash bits + rho, as DataSketches)
        coupons = np.unique(sketches._coupons(sketches._hashes(np.unique(values[rows == i]))))
        if len(coupons) <= sketches.HLL_EXACT_MAX:
            assert got[i] == len(coupons)
