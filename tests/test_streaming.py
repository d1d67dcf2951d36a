"""Streaming states: chunked updates equal one update, merges are order-free, values are right."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore.groups import GROUPS
from featurecore.streaming import EMAState, LastN, Welford, factorize_keys, welford_groups, welford_merge_rows
from featurecore.tiles import features_from_events

BASE = pd.Timestamp("2026-09-01", tz="UTC")
DAY_NS = 86_400 * 10**9
SETTINGS = dict(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def events(draw, n_max=40):
    n = draw(st.integers(1, n_max))
    users = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=n, max_size=n))
    offs = draw(st.lists(st.one_of(st.just(0), st.integers(0, 5 * DAY_NS)), min_size=n, max_size=n))
    vals = draw(st.lists(st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.5, 1e6 + 0.1]),
                                   st.floats(-1e3, 1e3, allow_nan=False)), min_size=n, max_size=n))
    items = draw(st.lists(st.sampled_from(["p1", "p2", "p3", "p4"]), min_size=n, max_size=n))
    return pd.DataFrame({
        "user_id": users,
        "ts": BASE + pd.to_timedelta(offs, unit="ns"),
        "x": pd.Series(vals, dtype=float),
        "item": items,
    })


def chunks(df: pd.DataFrame, seed: int, by_day: bool) -> list[pd.DataFrame]:
    if by_day:
        day = df["ts"].dt.floor("D")
        return [g for _, g in df.groupby(day)]
    rnd = random.Random(seed)
    idx = list(range(len(df)))
    rnd.shuffle(idx)
    cuts = sorted(rnd.sample(range(1, len(df)), min(3, len(df) - 1))) if len(df) > 1 else []
    parts, prev = [], 0
    for c in cuts + [len(df)]:
        parts.append(df.iloc[idx[prev:c]])
        prev = c
    return parts


def close(a, b, rtol=1e-9, atol=1e-9):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    ok = ~np.isnan(a)
    assert np.all(np.abs(a[ok] - b[ok]) <= atol + rtol * np.abs(b[ok])), (a, b)


# --------------------------------------------------------------------------- EMA


@settings(**SETTINGS)
@given(df=events(), seed=st.integers(0, 10**6), by_day=st.booleans(), value=st.sampled_from([None, "x"]),
       hl=st.sampled_from(["1d", "7d", "6h"]))
def test_ema_chunked_equals_all_at_once_and_brute_force(df, seed, by_day, value, hl):
    at = BASE + pd.Timedelta(days=6)
    once = EMAState(hl, value=value).update(df)
    inc = EMAState(hl, value=value)
    for part in chunks(df, seed, by_day):
        inc = inc.update(part)
    # merge of independently built partial states, in a shuffled order
    parts = [EMAState(hl, value=value).from_events(p) for p in chunks(df, seed + 1, False)]
    random.Random(seed).shuffle(parts)
    merged = parts[0].merge(*parts[1:])
    h = pd.Timedelta(hl).total_seconds()
    ok = df if value is None else df[df["x"].notna()]
    w = 2.0 ** (-(at - ok["ts"]).dt.total_seconds() / h)
    x = 1.0 if value is None else ok["x"]
    brute_sum = (w * x).groupby(ok["user_id"]).sum().sort_index()
    brute_w = w.groupby(ok["user_id"]).sum().sort_index()
    for state in (once, inc, merged):
        for mode in ("sum", "mean", "rate"):
            v = state.value_at(at, mode).set_index("user_id")["value"].sort_index()
            assert list(v.index) == list(brute_sum.index)
            expect = {"sum": brute_sum, "mean": brute_sum / brute_w,
                      "rate": brute_sum * math.log(2) / (h / 86400)}[mode]
            close(v.to_numpy(), expect.to_numpy(), atol=1e-6)


def test_ema_rate_of_a_steady_daily_amount_is_that_amount():
    ts = BASE + pd.to_timedelta(np.arange(400), unit="D")
    df = pd.DataFrame({"user_id": "u", "ts": ts, "x": 10.0})
    v = EMAState("7d", value="x").update(df).value_at(ts[-1] + pd.Timedelta(hours=12), "rate")["value"].iloc[0]
    assert 9.5 < v < 10.5


def test_ema_refuses_values_before_the_latest_event():
    df = pd.DataFrame({"user_id": ["u"], "ts": [BASE + pd.Timedelta(days=1)]})
    with pytest.raises(ValueError, match="after"):
        EMAState("7d").update(df).value_at(BASE)
    with pytest.raises(ValueError, match="configurations"):
        EMAState("7d").merge(EMAState("1d"))


def test_ema_state_equals_the_batch_tile_path():
    """The online state and the tile/feature path give the same EMA at a cutoff."""
    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame({
        "user_id": rng.choice(["a", "b", "c"], n).astype(object),
        "ts": BASE + pd.to_timedelta(rng.integers(0, 9 * DAY_NS, n), unit="ns"),
        "event_type": rng.choice(["view", "purchase"], n).astype(object),
        "product_id": "p", "price": rng.uniform(1, 50, n), "quantity": 1.0,
    })
    day = "2026-09-09"
    feats, _ = features_from_events(df, GROUPS["user_behavior"], [day])
    purchases = df[df["event_type"] == "purchase"]
    online = EMAState("7d").update(purchases).value_at(pd.Timestamp("2026-09-10", tz="UTC"))
    got = feats.set_index("user_id")["purchase_ema_hl7d"].sort_index()
    close(got.to_numpy(), online.set_index("user_id")["value"].reindex(got.index).fillna(0).to_numpy())


# --------------------------------------------------------------------------- Welford


@settings(**SETTINGS)
@given(df=events(), seed=st.integers(0, 10**6), by_day=st.booleans())
def test_welford_chunked_equals_all_at_once_and_pandas(df, seed, by_day):
    once = Welford("x").update(df)
    inc = Welford("x")
    for part in chunks(df, seed, by_day):
        inc = inc.update(part)
    parts = [Welford("x").from_events(p) for p in chunks(df, seed + 7, False)]
    random.Random(seed).shuffle(parts)
    merged = parts[0].merge(*parts[1:])
    ok = df[df["x"].notna()]
    g = ok.groupby("user_id")["x"]
    for state in (once, inc, merged):
        r = state.result().set_index("user_id").sort_index()
        assert list(r.index) == sorted(g.groups)
        assert r["n"].tolist() == g.size().sort_index().tolist()
        scale = 1.0 + ok["x"].abs().max() if len(ok) else 1.0
        close(r["mean"].to_numpy(), g.mean().sort_index().to_numpy(), atol=1e-9 * scale)
        close(r["std"].to_numpy(), g.std(ddof=1).sort_index().to_numpy(), atol=1e-6 * scale, rtol=1e-7)


def test_welford_is_stable_for_large_equal_values():
    df = pd.DataFrame({"user_id": "u", "ts": BASE, "x": [1e9 + 0.1] * 1000})
    r = Welford("x").update(df.iloc[:300]).update(df.iloc[300:]).result()
    assert r["n"].iloc[0] == 1000 and abs(r["std"].iloc[0]) < 1e-6


def test_welford_low_level_merge_matches_two_pass():
    rng = np.random.default_rng(0)
    x = rng.normal(100, 5, 1000)
    codes = rng.integers(0, 3, 1000)
    parts = [welford_groups(codes[i::4], x[i::4], 3) for i in range(4)]
    rows = np.repeat(np.arange(3)[None, :], 4, axis=0).ravel()
    n, s, m2 = (np.concatenate([p[j] for p in parts]) for j in range(3))
    N, T, M2 = welford_merge_rows(rows, n, s, m2, 3)
    for gi in range(3):
        v = x[codes == gi]
        assert N[gi] == len(v) and math.isclose(T[gi], v.sum(), rel_tol=1e-12)
        assert math.isclose(M2[gi] / (N[gi] - 1), v.var(ddof=1), rel_tol=1e-10)


# --------------------------------------------------------------------------- LastN


@settings(**SETTINGS)
@given(df=events(), seed=st.integers(0, 10**6), by_day=st.booleans(), n=st.integers(1, 5))
def test_lastn_chunked_equals_all_at_once_and_brute_force(df, seed, by_day, n):
    once = LastN("item", n).update(df)
    inc = LastN("item", n)
    for part in chunks(df, seed, by_day):
        inc = inc.update(part)
    parts = [LastN("item", n).from_events(p) for p in chunks(df, seed + 3, False)]
    random.Random(seed).shuffle(parts)
    merged = parts[0].merge(*parts[1:])
    brute = {u: list(g.sort_values(["ts", "item"], ascending=False)["item"][:n]) for u, g in df.groupby("user_id")}
    for state in (once, inc, merged):
        got = dict(zip(state.items()["user_id"], state.items()["items"]))
        assert got == brute


def test_lastn_tie_break_is_deterministic():
    df = pd.DataFrame({"user_id": "u", "ts": [BASE] * 3 + [BASE + pd.Timedelta(seconds=1)],
                       "item": ["b", "c", "a", "z"]})
    assert LastN("item", 3).update(df).items()["items"].iloc[0] == ["z", "c", "b"]
    assert LastN("item", 3).update(df.iloc[::-1]).items()["items"].iloc[0] == ["z", "c", "b"]


# --------------------------------------------------------------------------- helpers


def test_factorize_keys_multi_and_null():
    df = pd.DataFrame({"a": ["x", "y", "x", None, "y"], "b": ["1", "1", "1", "2", None]})
    codes, uniq = factorize_keys(df, ["a", "b"])
    assert codes.tolist() == [0, 1, 0, -1, -1]
    assert uniq.to_dict("list") == {"a": ["x", "y"], "b": ["1", "1"]}
    codes, uniq = factorize_keys(df, ["a"])
    assert codes.tolist() == [0, 1, 0, -1, 1] and uniq["a"].tolist() == ["x", "y"]
