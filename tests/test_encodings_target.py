"""Time-aware target encoding: equals a brute-force per-row computation, and never sees its own or a future label."""

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from featurecore.encodings_target import TimeAwareTargetEncoder, fold_transform, ordered_target_encode

BASE = pd.Timestamp("2026-09-01", tz="UTC")


def brute(cats, ts, y, delay, m):
    """Per row: smoothed mean over rows with the same category whose label is known before the row."""
    out = []
    for i in range(len(y)):
        if delay > pd.Timedelta(0):
            known = [j for j in range(len(y)) if ts[j] + delay <= ts[i]]
        else:
            known = [j for j in range(len(y)) if ts[j] < ts[i]]
        if not known:
            out.append(np.nan)
            continue
        prior = np.mean([y[j] for j in known])
        same = [y[j] for j in known if (cats[j] == cats[i]) or (cats[j] is None and cats[i] is None)]
        with np.errstate(invalid="ignore"):  # smoothing 0 and no same-category label: undefined, NaN
            out.append(np.float64(sum(same) + m * prior) / (len(same) + m))
    return np.array(out)


@st.composite
def rows(draw):
    n = draw(st.integers(1, 40))
    cats = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    days = draw(st.lists(st.integers(0, 15), min_size=n, max_size=n))
    y = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    delay = pd.Timedelta(days=draw(st.sampled_from([0, 1, 3, 7])))
    m = draw(st.sampled_from([0.0, 1.0, 20.0]))
    return cats, [BASE + pd.Timedelta(days=d) for d in days], y, delay, m


@settings(max_examples=300, deadline=None)
@given(rows())
def test_ordered_encoding_equals_brute_force(data):
    cats, ts, y, delay, m = data
    got = ordered_target_encode(pd.Series(cats, dtype=object), pd.Series(ts), y, delay, m)
    ref = brute(cats, ts, y, delay, m)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(rows(), st.integers(0, 1000))
def test_changing_own_and_future_labels_changes_no_encoding(data, seed):
    """Flip every label that is not known at row i's time: row i's encoding must not move."""
    cats, ts, y, delay, m = data
    enc = TimeAwareTargetEncoder(delay, max(m, 1.0))
    before = enc.fit_transform(pd.Series(cats, dtype=object), pd.Series(ts), y)
    rng = np.random.default_rng(seed)
    i = int(rng.integers(len(y)))
    flipped = [1.0 - v if (ts[j] + delay > ts[i] or ts[j] >= ts[i]) else v for j, v in enumerate(y)]
    after = enc.fit_transform(pd.Series(cats, dtype=object), pd.Series(ts), flipped)
    np.testing.assert_allclose(after[i], before[i], equal_nan=True)


def test_transform_uses_all_training_labels_and_prior_for_unseen():
    enc = TimeAwareTargetEncoder(pd.Timedelta(days=1), smoothing=2.0)
    enc.fit_transform(pd.Series(["a", "a", "b"]), pd.Series([BASE] * 3), [1.0, 1.0, 0.0])
    prior = 2 / 3
    got = enc.transform(pd.Series(["a", "b", "zzz"]))
    np.testing.assert_allclose(got, [(2 + 2 * prior) / 4, (0 + 2 * prior) / 3, prior])


def test_fold_transform_blocks_see_only_earlier_known_labels():
    ts = pd.Series([BASE + pd.Timedelta(days=d) for d in (0, 0, 5, 5, 10, 10)])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    cats = pd.Series(["a"] * 6)
    got = fold_transform(cats, ts, y, n_folds=3, delay=pd.Timedelta(days=2), smoothing=0.0)
    assert np.isnan(got[:2]).all()  # nothing is known before the first block
    np.testing.assert_allclose(got[2:4], 0.5)  # block 2 sees block 1 only
    np.testing.assert_allclose(got[4:], 0.75)  # block 3 sees blocks 1 and 2
