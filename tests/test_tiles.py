"""Tiles, merges and features against an independent brute force over raw events.

The brute force below is written straight from the time contract in plain pandas: it
filters the raw events to ``[t - w, t)`` (or ``ts < t``) and aggregates them; it only
reads the declarations (op, column, filter, window), never the engine's code.
"""

from __future__ import annotations

import math
import os
import random
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore import sketches
from featurecore.groups import GROUPS
from featurecore.spec import ALL_TIME, Aggregation as A, Derived, FeatureGroup, Window
from featurecore.tiles import (
    compute_tile, empty_tile, features_for_day, features_from_events, merge_tiles, state_from_tiles, window_days,
)

BASE = pd.Timestamp("2026-09-01", tz="UTC")
N_DAYS = 6
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# FEATURECORE_EXAMPLES=20 runs 20x the examples (a deeper search than the default, ~40 s file).
SCALE = float(os.environ.get("FEATURECORE_EXAMPLES", "1"))


def ex(n: int) -> int:
    return max(1, int(n * SCALE))


def day_of(i: int) -> str:
    return (BASE + pd.Timedelta(days=i)).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- event strategy

USERS = ["u0", "u1", "u2", "u3"]
PRODUCTS = ["p0", "p1", "p2", None]
TYPES = ["view", "view", "cart_add", "purchase", "purchase", "refund"]
PRICES = [None, 0.0, 1.5, 9.99, 10.0, 250.0, 0.1]
DEVICES = ["mobile", "desktop", "tablet", "watch", None]
REFERRERS = ["direct", "search", "ads", "tv", None]
CATS = ["books", "toys", "phones", "unknown_cat", None]
BRANDS = ["brand_a", "brand_b", None]
HOUR = 3600 * 10**9
DAY_NS = 24 * HOUR


@st.composite
def event_frames(draw, n_min=1, n_max=45, n_days=N_DAYS):
    n = draw(st.integers(n_min, n_max))
    rows = []
    for i in range(n):
        d = draw(st.integers(0, n_days - 1))
        # many events exactly at midnight: every midnight is some cutoff and some window start
        off = draw(st.one_of(st.just(0), st.just(DAY_NS - 1), st.just(6 * HOUR), st.integers(0, DAY_NS - 1)))
        rows.append({
            "event_id": f"e{i}",
            "user_id": draw(st.sampled_from(USERS)),
            "ts": BASE + pd.Timedelta(days=d) + pd.Timedelta(off, unit="ns"),
            "event_type": draw(st.sampled_from(TYPES)),
            "product_id": draw(st.sampled_from(PRODUCTS)),
            "price": draw(st.sampled_from(PRICES)),
            "quantity": draw(st.sampled_from([1.0, 2.0, 3.0, None])),
            "device_type": draw(st.sampled_from(DEVICES)),
            "referrer": draw(st.sampled_from(REFERRERS)),
            "category": draw(st.sampled_from(CATS)),
            "brand": draw(st.sampled_from(BRANDS)),
        })
    df = pd.DataFrame(rows)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for c in ("price", "quantity"):
        df[c] = df[c].astype(float)
    for c in ("product_id", "device_type", "referrer", "category", "brand"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


# --------------------------------------------------------------------------- brute force


def _derive(ev: pd.DataFrame) -> pd.DataFrame:
    ev = ev.copy()
    if "price" in ev and "quantity" in ev:
        ev["amount"] = ev["price"] * ev["quantity"]
    names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    ev["dow"] = [names[x] for x in ev["ts"].dt.dayofweek]
    ev["hour"] = ev["ts"].dt.hour
    ev["hour_bucket"] = ["night" if h < 6 else "morning" if h < 12 else "afternoon" if h < 18 else "evening"
                         for h in ev["ts"].dt.hour]
    return ev


def _apply_where(ev: pd.DataFrame, where) -> pd.DataFrame:
    for col, op, value in where or ():
        s = ev[col]
        if op == "notnull":
            keep = s.notna()
        elif op == "isnull":
            keep = s.isna()
        elif op == "==":
            keep = s.notna() & (s == value)
        elif op == "!=":
            keep = s.notna() & (s != value)
        elif op == "in":
            keep = s.notna() & s.isin(list(value))
        elif op == "not in":
            keep = s.notna() & ~s.isin(list(value))
        else:
            keep = s.notna() & {">": s > value, ">=": s >= value, "<": s < value, "<=": s <= value}[op]
        ev = ev[keep.to_numpy(dtype=bool)]
    return ev


def brute_force(events: pd.DataFrame, group: FeatureGroup, day: str) -> pd.DataFrame:
    """Features of ``day`` computed directly from raw events (independent of the engine)."""
    t = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    keys = list(group.keys)
    if any(k not in events for k in keys):
        return pd.DataFrame(columns=keys + group.feature_names()).set_index(keys)
    ev = events[events["ts"] < t]
    ev = ev[ev[keys].notna().all(axis=1)]
    ev = _derive(ev)
    feats = group.features()
    all_time = any(f.window == ALL_TIME for f in feats)
    if all_time:
        universe_ev = ev
    else:
        max_days = max(f.window.n_days for f in feats if f.window is not None)
        universe_ev = ev[ev["ts"] >= t - pd.Timedelta(days=max_days)]
    universe = universe_ev[keys].drop_duplicates().set_index(keys).sort_index().index
    out = pd.DataFrame(index=universe)
    for f in feats:
        if f.kind == "ratio":
            num, den = out[f.param[0]], out[f.param[1]]
            out[f.name] = np.where(den != 0, num / den.where(den != 0, 1.0), np.nan)
            continue
        src = f.source
        w = f.window
        sub = ev if w.is_all_time else ev[ev["ts"] >= t - pd.Timedelta(days=w.n_days)]
        needed = [c for c, _, _ in (src.where or ())] + ([src.column] if src.column else [])
        if any(c not in sub.columns for c in needed):
            out[f.name] = np.nan
            continue
        sub = _apply_where(sub, src.where)
        col = src.column
        if col:
            sub = sub[sub[col].notna()]
        g = sub.groupby(keys)
        zero = f.kind in ("count", "sum", "distinct", "active_days", "frequency") or (
            f.kind == "ema" and src.mode in ("sum", "rate"))
        if f.kind == "count":
            s = g.size()
        elif f.kind == "sum":
            s = g[col].sum()
        elif f.kind == "mean":
            s = g[col].mean()
        elif f.kind == "std":
            s = g[col].std(ddof=1)
        elif f.kind in ("min", "max"):
            s = g[col].agg(f.kind)
        elif f.kind == "last":
            s = sub.sort_values(["ts", col], kind="mergesort").groupby(keys)[col].last()
        elif f.kind == "distinct":
            s = g[col].nunique()
        elif f.kind == "quantile":
            s = g[col].agg(lambda v: np.quantile(v.to_numpy(dtype=float), f.param, method="inverted_cdf"))
        elif f.kind == "share":
            cats = list(src.categories)
            hit = ~sub[col].isin(cats) if f.param == "__other__" else sub[col] == f.param
            s = hit.groupby([sub[k] for k in keys]).mean()
        elif f.kind in ("active_days", "frequency"):
            s = sub["ts"].dt.floor("D").groupby([sub[k] for k in keys]).nunique()
            if f.kind == "frequency":
                s = s / w.n_days
        elif f.kind == "recency":
            s = (t - g["ts"].max()).dt.total_seconds()
        elif f.kind == "ema":
            h = src.half_life.total_seconds()
            age = (t - sub["ts"]).dt.total_seconds()
            wgt = 2.0 ** (-age / h)
            x = sub[col] if col else 1.0
            by = [sub[k] for k in keys]
            S = (wgt * x).groupby(by).sum()
            if src.mode == "sum":
                s = S
            elif src.mode == "rate":
                s = S * math.log(2) / (h / 86400)
            else:
                s = S / wgt.groupby(by).sum()
        else:  # pragma: no cover
            raise AssertionError(f.kind)
        if len(keys) == 1 and isinstance(s.index, pd.MultiIndex):
            s.index = s.index.get_level_values(0)
        s = s.reindex(universe)
        if f.dtype == "object":
            out[f.name] = s.astype(object).where(s.notna(), None)
        else:
            s = s.astype(float)
            out[f.name] = s.fillna(0.0) if zero else s
    return out


def brute_n(events: pd.DataFrame, group: FeatureGroup, day: str, f) -> pd.Series:
    """Number of values behind a sketch feature per entity (to pick the exact/approximate check)."""
    t = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    ev = _derive(events[events["ts"] < t])
    if not f.window.is_all_time:
        ev = ev[ev["ts"] >= t - pd.Timedelta(days=f.window.n_days)]
    ev = _apply_where(ev, f.source.where)
    ev = ev[ev[f.source.column].notna() & ev[list(group.keys)].notna().all(axis=1)]
    return ev.groupby(list(group.keys)).size()


# --------------------------------------------------------------------------- comparison


def assert_features_equal(engine: pd.DataFrame, brute: pd.DataFrame, group: FeatureGroup,
                          events: pd.DataFrame | None = None, day: str | None = None) -> None:
    keys = list(group.keys)
    e = engine.set_index(keys).sort_index()
    assert list(e.index) == list(brute.index), f"{group.name}: entity rows differ"
    assert list(engine.columns) == keys + ["cutoff"] + group.feature_names()
    if len(e):
        assert (e["cutoff"] == pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)).all()
    for f in group.features():
        a, b = e[f.name], brute[f.name]
        if f.dtype == "object":
            assert [None if pd.isna(x) else x for x in a] == [None if pd.isna(x) else x for x in b], f.name
            continue
        a, b = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{group.name}.{f.name}: NaN pattern {a} vs {b}"
        ok = ~np.isnan(a)
        if not ok.any():
            continue
        a, b = a[ok], b[ok]
        if f.kind == "distinct":
            assert np.all(np.abs(a - b) <= np.maximum(0.5, 3 * sketches.HLL_RSE * b)), (f.name, a, b)
        elif f.kind == "quantile" and events is not None:
            n = brute_n(events, group, day, f).reindex(brute.index[ok]).to_numpy()
            exact = n <= sketches.KLL_K
            assert np.allclose(a[exact], b[exact], rtol=1e-12), (f.name, a, b)
        else:
            scale = 1.0 + np.abs(b)
            assert np.all(np.abs(a - b) <= 1e-9 * scale), (f"{group.name}.{f.name}", a, b)


def run_day_by_day(events: pd.DataFrame, group: FeatureGroup, last_day: int, first_day: int = 0):
    """Tiles per day from the full event frame and features carried day by day."""
    tiles, state, feats = {}, None, None
    for i in range(first_day, last_day + 1):
        d = day_of(i)
        tiles[d] = compute_tile(events, group, d)  # compute_tile keeps only this day's events
        feats, new_state = features_for_day(tiles, state, group, d)
        state = new_state
    return feats, state, tiles


# --------------------------------------------------------------------------- the key test


@settings(max_examples=ex(25), **SETTINGS)
@given(events=event_frames(), d=st.integers(0, N_DAYS + 1))
def test_every_group_matches_brute_force_day_by_day(events, d):
    for group in GROUPS.values():
        feats, _, _ = run_day_by_day(events, group, d)
        assert_features_equal(feats, brute_force(events, group, day_of(d)), group, events, day_of(d))


WINDOW_DAYS = st.lists(st.integers(1, N_DAYS + 1), min_size=1, max_size=3, unique=True)


def random_group(wdays: list[int], with_all_time: bool) -> FeatureGroup:
    wins = tuple(Window.days(n) for n in sorted(wdays)) + ((ALL_TIME,) if with_all_time else ())
    w0 = Window.days(min(wdays))
    P = ("event_type", "==", "purchase")
    V = ("event_type", "in", ("view", "cart_add"))
    return FeatureGroup(
        "random_windows",
        aggregations=[
            A("count", windows=wins),
            A("count", where=P, windows=wins),
            A("count", column="price", where=V, windows=wins),
            A("sum", column="amount", where=P, windows=wins),
            A("mean", column="price", windows=wins),
            A("std", column="price", windows=wins),
            A("min", column="price", where=("price", ">", 1.0), windows=wins),
            A("max", column="amount", windows=wins),
            A("last", column="price", windows=wins),
            A("last", column="product_id", where=("event_type", "!=", "refund"), windows=wins),
            A("distinct", column="product_id", windows=wins),
            A("quantile", column="price", windows=wins, quantiles=(0.0, 0.25, 0.5, 1.0)),
            A("share", column="device_type", where=("referrer", "notnull"), windows=wins,
              categories=("mobile", "desktop")),
            A("active_days", where=V, windows=wins),
        ],
        derived=[
            Derived.frequency(w0, where=P),
            Derived.recency(where=("event_type", "not in", ("view",))),
            Derived.ema("2d", where=P),
            Derived.ema("36h", column="price", mode="mean"),
            Derived.ema("1d", column="amount", where=P, mode="rate"),
            Derived.ratio("purchase_share", f"purchase_count_{w0.label}", f"event_count_{w0.label}"),
        ],
    )


@settings(max_examples=ex(40), **SETTINGS)
@given(events=event_frames(), wdays=WINDOW_DAYS, with_all=st.booleans(), d=st.integers(0, N_DAYS + 1))
def test_random_windows_match_brute_force(events, wdays, with_all, d):
    group = random_group(wdays, with_all)
    feats, _, _ = run_day_by_day(events, group, d)
    assert_features_equal(feats, brute_force(events, group, day_of(d)), group, events, day_of(d))


# --------------------------------------------------------------------------- cutoff semantics


def test_events_exactly_at_boundaries():
    """[t - w, t): an event at t - w counts, one at t does not, one just before t does."""
    t = pd.Timestamp("2026-09-08", tz="UTC")  # cutoff of day 2026-09-07
    ts = [t - pd.Timedelta(days=7), t - pd.Timedelta(days=7, nanoseconds=1), t - pd.Timedelta(nanoseconds=1), t,
          t + pd.Timedelta(hours=5)]
    ev = pd.DataFrame({"user_id": "u", "ts": pd.to_datetime(ts, utc=True), "event_type": "purchase",
                       "price": [1.0, 2.0, 4.0, 8.0, 16.0], "quantity": 1.0})
    g = FeatureGroup("b", aggregations=[A("count", windows=("1d", "7d", ALL_TIME)),
                                        A("sum", column="price", windows=("7d", ALL_TIME))])
    feats, _ = features_from_events(ev, g, ["2026-09-07"])
    row = feats.iloc[0]
    assert row["cutoff"] == t
    assert row["event_count_1d"] == 1  # t - 1ns
    assert row["event_count_7d"] == 2  # t - 7d (start, included) and t - 1ns
    assert row["event_count_all"] == 3
    assert row["price_sum_7d"] == 5.0 and row["price_sum_all"] == 7.0


@settings(max_examples=ex(12), **SETTINGS)
@given(events=event_frames(), later=event_frames(n_min=1, n_max=10), d=st.integers(0, N_DAYS - 1))
def test_events_at_or_after_cutoff_never_count(events, later, d):
    """Adding events at or after the cutoff (in the tile input and as future tiles) changes nothing."""
    t = pd.Timestamp(day_of(d), tz="UTC") + pd.Timedelta(days=1)
    later = later.copy()
    later["ts"] = t + (later["ts"] - BASE)  # shifted to >= t, many exactly at t
    group = random_group([1, 3], True)
    base_feats, _, _ = run_day_by_day(events, group, d)
    both = pd.concat([events, later], ignore_index=True)
    tiles, state = {}, None
    for i in range(0, d + N_DAYS):  # tiles of future days exist too
        tiles[day_of(i)] = compute_tile(both, group, day_of(i))
    for i in range(0, d + 1):
        feats, state = features_for_day(tiles, state, group, day_of(i))
    pd.testing.assert_frame_equal(feats, base_feats, rtol=1e-12)


# --------------------------------------------------------------------------- merge properties


def assert_tiles_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        x, y = a[c], b[c]
        if c.endswith("__hll"):
            np.testing.assert_allclose(sketches.hll_estimates(x.to_numpy(object)),
                                       sketches.hll_estimates(y.to_numpy(object)))
        elif c.endswith("__kll"):
            qx = sketches.kll_quantiles_many(x.to_numpy(object), [0, 0.5, 1])
            qy = sketches.kll_quantiles_many(y.to_numpy(object), [0, 0.5, 1])
            np.testing.assert_array_equal(qx, qy)
        elif x.dtype.kind in "fi":
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-9, atol=1e-9)
        else:
            assert [None if pd.isna(v) else v for v in x] == [None if pd.isna(v) else v for v in y], c


@settings(max_examples=ex(12), **SETTINGS)
@given(events=event_frames(), seed=st.integers(0, 10**6))
def test_merge_is_order_and_grouping_independent(events, seed):
    rnd = random.Random(seed)
    for group in (GROUPS["user_behavior"], GROUPS["product_dynamic"], random_group([2], True)):
        tiles = [compute_tile(events, group, day_of(i)) for i in range(N_DAYS)]
        ref = merge_tiles(tiles, group)
        shuffled = tiles[:]
        rnd.shuffle(shuffled)
        assert_tiles_equal(ref, merge_tiles(shuffled, group))
        # arbitrary tree: merge random adjacent pairs until one tile is left
        parts = shuffled[:]
        while len(parts) > 1:
            i = rnd.randrange(len(parts) - 1)
            parts[i:i + 2] = [merge_tiles([parts[i], parts[i + 1]], group)]
        assert_tiles_equal(ref, parts[0])
        assert_tiles_equal(ref, merge_tiles([merge_tiles(tiles[:2], group), None, *tiles[2:]], group))


@settings(max_examples=ex(10), **SETTINGS)
@given(events=event_frames(), d=st.integers(1, N_DAYS))
def test_incremental_state_equals_all_at_once(events, d):
    for group in (GROUPS["user_behavior"], GROUPS["user_temporal"], GROUPS["user_product"]):
        feats_inc, state_inc, tiles = run_day_by_day(events, group, d)
        prev = state_from_tiles([tiles[day_of(i)] for i in range(d)], group)
        feats_once, state_once = features_for_day(tiles, prev, group, day_of(d))
        assert_tiles_equal(state_inc, state_once)
        pd.testing.assert_frame_equal(feats_inc, feats_once, rtol=1e-9)
        # and the convenience runner (state from all earlier tiles at once)
        feats_conv, _ = features_from_events(events, group, [day_of(d)])
        pd.testing.assert_frame_equal(feats_inc, feats_conv, rtol=1e-9)


def test_prev_state_from_the_future_is_refused():
    ev = pd.DataFrame({"user_id": ["u"], "ts": pd.to_datetime(["2026-09-02 10:00"], utc=True),
                       "event_type": ["view"]})
    g = GROUPS["user_temporal"]
    tiles = {"2026-09-02": compute_tile(ev, g, "2026-09-02")}
    _, state = features_for_day(tiles, None, g, "2026-09-02")
    with pytest.raises(ValueError, match="previous day"):
        features_for_day(tiles, state, g, "2026-09-02")


# --------------------------------------------------------------------------- missing columns


DROPS = (["price"], ["category"], ["device_type", "referrer"], ["quantity"], ["product_id"], ["brand", "price"])


@settings(max_examples=ex(10), **SETTINGS)
@given(events=event_frames(), d=st.integers(0, N_DAYS), drop=st.sampled_from(DROPS))
def test_missing_optional_columns_give_nan_features_and_keep_the_rest(events, d, drop):
    ev = events.drop(columns=drop)
    for group in GROUPS.values():
        feats, _, _ = run_day_by_day(ev, group, d)
        if any(k in drop for k in group.keys):
            assert len(feats) == 0 and list(feats.columns) == list(group.keys) + ["cutoff"] + group.feature_names()
            continue
        assert_features_equal(feats, brute_force(ev, group, day_of(d)), group, ev, day_of(d))
        full, _, _ = run_day_by_day(events, group, d)
        raw = set(drop) | ({"amount"} if {"price", "quantity"} & set(drop) else set())
        for f in group.features():
            if f.kind == "ratio":
                continue
            deps = {c for c, _, _ in (f.source.where or ())} | ({f.source.column} if f.source.column else set())
            if deps & raw:
                assert feats[f.name].isna().all(), f.name  # unknown, not 0
            else:
                pd.testing.assert_series_equal(feats[f.name], full[f.name])


def test_missing_price_documented_behaviour():
    ev = pd.DataFrame({"user_id": ["a", "a", "b"], "ts": pd.to_datetime(["2026-09-01 01:00"] * 3, utc=True),
                       "event_type": ["purchase", "view", "view"], "product_id": ["p", "p", "q"]})
    g = GROUPS["user_behavior"]
    tile = compute_tile(ev, g, "2026-09-01")
    assert "purchase_amount__sum" not in tile.columns  # skipped in the tile
    feats, _ = features_for_day({"2026-09-01": tile}, None, g, "2026-09-01")
    assert feats["purchase_count_1d"].tolist() == [1.0, 0.0]
    assert feats["purchase_amount_sum_7d"].isna().all()  # NaN = unknown, never 0
    assert feats["avg_order_value_all"].isna().all()
    assert feats["view_category_share_books_30d"].isna().all()  # no category enrichment
    assert feats["view_product_id_distinct_30d"].tolist() == [1.0, 1.0]


def test_group_keyed_by_missing_enrichment_is_empty():
    ev = pd.DataFrame({"user_id": ["a"], "ts": pd.to_datetime(["2026-09-01 01:00"], utc=True),
                       "event_type": ["view"], "price": [1.0]})
    g = GROUPS["category_stats"]
    tile = compute_tile(ev, g, "2026-09-01")
    assert len(tile) == 0
    feats, state = features_for_day({"2026-09-01": tile}, None, g, "2026-09-01")
    assert len(feats) == 0 and state is None
    assert list(feats.columns) == ["category", "cutoff"] + g.feature_names()


# --------------------------------------------------------------------------- details


def test_empty_window_fill_rules():
    ev = pd.DataFrame({"user_id": ["a"], "ts": pd.to_datetime(["2026-09-01 12:00"], utc=True),
                       "event_type": ["purchase"], "price": [5.0], "quantity": [2.0], "product_id": ["p"],
                       "category": ["books"]})
    g = GROUPS["user_behavior"]
    feats, _ = features_from_events(ev, g, ["2026-09-20"])  # 19 days later: 1d/7d empty, 30d not
    r = feats.iloc[0]
    assert r["purchase_count_1d"] == 0 and r["purchase_amount_sum_7d"] == 0
    assert r["purchase_count_30d"] == 1 and r["purchase_amount_mean_30d"] == 10.0
    assert r["view_product_id_distinct_30d"] == 0  # distinct -> 0
    assert math.isnan(r["view_category_share_books_30d"])  # share of nothing -> NaN
    assert math.isclose(r["purchase_ema_hl7d"], 2 ** (-(20 * 24 - 12) / (7 * 24)))  # cutoff 09-21 00:00
    feats, _ = features_from_events(ev, g, ["2026-10-15"])  # beyond 30d: only all-time keeps the row
    r = feats.iloc[0]
    assert r["purchase_count_30d"] == 0 and math.isnan(r["purchase_amount_mean_30d"])
    assert math.isnan(r["purchase_amount_p50_30d"]) and r["purchase_count_all"] == 1
    assert r["avg_order_value_all"] == 10.0 and math.isnan(r["conversion_rate_30d"])
    g2 = GROUPS["user_context"]  # no all-time features: entity drops out after 30 days
    assert len(features_from_events(ev, g2, ["2026-09-30"])[0]) == 1
    assert len(features_from_events(ev, g2, ["2026-10-01"])[0]) == 0


def test_std_is_sample_std_and_nan_below_two():
    ev = pd.DataFrame({"product_id": ["p", "p", "p", "q"], "user_id": "u",
                       "ts": pd.to_datetime(["2026-09-01 01:00", "2026-09-02 01:00", "2026-09-03 00:00", "2026-09-03 00:00"],
                                            utc=True),
                       "event_type": "view", "price": [1.0, 2.0, 4.0, 3.0]})
    feats, _ = features_from_events(ev, GROUPS["product_dynamic"], ["2026-09-03"])
    f = feats.set_index("product_id")
    assert math.isclose(f.loc["p", "price_std_7d"], np.std([1.0, 2.0, 4.0], ddof=1))
    assert math.isnan(f.loc["q", "price_std_7d"])
    assert f.loc["p", "price_last_all"] == 4.0


def test_std_is_stable_for_large_equal_values():
    ev = pd.DataFrame({"product_id": "p", "user_id": "u", "event_type": "view", "price": 1e9 + 0.1,
                       "ts": pd.to_datetime(["2026-09-01 01:00", "2026-09-02 01:00", "2026-09-03 01:00"] * 3,
                                            utc=True)})
    feats, _ = features_from_events(ev, GROUPS["product_dynamic"], ["2026-09-03"])
    assert abs(feats["price_std_7d"].iloc[0]) < 1e-6


def test_last_ties_on_ts_take_the_largest_value():
    ts = pd.to_datetime(["2026-09-01 05:00"] * 3 + ["2026-09-02 05:00"] * 2, utc=True)
    ev = pd.DataFrame({"product_id": "p", "user_id": ["b", "c", "a", "a", "b"], "ts": ts, "event_type": "view",
                       "price": [3.0, 7.0, 5.0, 2.0, 1.0]})
    g = FeatureGroup("t", keys=("product_id",), entity="product", aggregations=[
        A("last", column="price", windows=("1d", ALL_TIME)), A("last", column="user_id", windows=("1d", ALL_TIME))])
    f1, _ = features_from_events(ev, g, ["2026-09-01"])
    assert f1["price_last_1d"].iloc[0] == 7.0 and f1["user_id_last_1d"].iloc[0] == "c"
    f2, _ = features_from_events(ev, g, ["2026-09-02"])
    assert f2["price_last_all"].iloc[0] == 2.0 and f2["user_id_last_all"].iloc[0] == "b"


def test_missing_days_are_days_without_events():
    ev = pd.DataFrame({"user_id": "u", "event_type": "view",
                       "ts": pd.to_datetime(["2026-09-01 10:00", "2026-09-05 10:00"], utc=True)})
    g = FeatureGroup("m", aggregations=[A("count", windows=("3d", "7d"))])
    tiles = {d: compute_tile(ev, g, d) for d in ("2026-09-01", "2026-09-05")}  # no tiles for 02..04
    f, state = features_for_day(tiles, None, g, "2026-09-05")
    assert state is None
    assert f["event_count_3d"].tolist() == [1.0] and f["event_count_7d"].tolist() == [2.0]
    f, _ = features_for_day(tiles, None, g, "2026-09-03")
    assert f["event_count_3d"].tolist() == [1.0]
    f, _ = features_for_day(tiles, None, g, "2026-09-11")  # window 09-05 .. 09-11
    assert f["event_count_3d"].tolist() == [0.0] and f["event_count_7d"].tolist() == [1.0]
    f, _ = features_for_day(tiles, None, g, "2026-09-12")  # window 09-06 .. 09-12: no event
    assert len(f) == 0


def test_window_days_lists_the_tiles_a_day_reads():
    assert window_days(GROUPS["user_behavior"], "2026-09-30") == [day_of(i) for i in range(30)]
    assert window_days(FeatureGroup("a", aggregations=[A("count", windows=(ALL_TIME,))]), "2026-09-03") == [
        "2026-09-03"]


def test_compute_tile_ignores_other_days_and_null_keys():
    ev = pd.DataFrame({"user_id": ["a", "a", None, "b"], "event_type": "view",
                       "ts": pd.to_datetime(["2026-09-01 00:00:00", "2026-09-02 00:00:00", "2026-09-01 03:00:00",
                                             "2026-08-31 23:59:59.999999999"], utc=True, format="ISO8601")})
    tile = compute_tile(ev, GROUPS["user_temporal"], "2026-09-01")
    assert tile["user_id"].tolist() == ["a"] and tile["event__n"].tolist() == [1]
    assert tile["asof"].iloc[0] == pd.Timestamp("2026-09-02", tz="UTC")
    assert list(tile.columns) == ["user_id"] + list(GROUPS["user_temporal"].tile_columns)


def test_naive_and_microsecond_timestamps_are_utc():
    ts = pd.Series(pd.to_datetime(["2026-09-01 23:00"])).astype("datetime64[us]")
    ev = pd.DataFrame({"user_id": ["a"], "ts": ts, "event_type": ["view"]})
    g = GROUPS["user_temporal"]
    tile = compute_tile(ev, g, "2026-09-01")
    assert tile["event__last_ts"].iloc[0] == pd.Timestamp("2026-09-01 23:00", tz="UTC")
    assert tile["hour_bucket__cnt_evening"].iloc[0] == 1 and tile["dow__cnt_tue"].iloc[0] == 1


def test_empty_inputs():
    g = GROUPS["user_behavior"]
    ev = pd.DataFrame({"user_id": pd.Series([], dtype=object), "ts": pd.Series([], dtype="datetime64[ns, UTC]"),
                       "event_type": pd.Series([], dtype=object)})
    tile = compute_tile(ev, g, "2026-09-01")
    assert len(tile) == 0
    feats, state = features_for_day({}, None, g, "2026-09-01")
    assert len(feats) == 0 and len(state) == 0
    assert list(feats.columns) == ["user_id", "cutoff"] + g.feature_names()
    assert len(merge_tiles([], g)) == 0 and list(empty_tile(g).columns) == ["user_id"] + list(g.tile_columns)


# --------------------------------------------------------------------------- sketches


def test_sketch_error_bounds_on_large_inputs():
    rng = np.random.default_rng(1)
    n_groups = 4
    codes = rng.integers(0, n_groups, 400_000)
    values = np.char.add("v", rng.integers(0, 60_000, len(codes)).astype(str)).astype(object)
    # split in two "days" and merge, as the windows do
    half = len(codes) // 2
    a = sketches.hll_by_group(codes[:half], values[:half], n_groups)
    b = sketches.hll_by_group(codes[half:], values[half:], n_groups)
    merged = sketches.hll_merge_by_group(np.r_[np.arange(n_groups), np.arange(n_groups)], np.r_[a, b], n_groups)
    est = sketches.hll_estimates(merged)
    true = pd.Series(values).groupby(codes).nunique().to_numpy()
    assert np.all(np.abs(est - true) / true <= 3 * sketches.HLL_RSE), (est, true)
    x = rng.lognormal(3, 1, len(codes))
    ka = sketches.kll_by_group(codes[:half], x[:half], n_groups)
    kb = sketches.kll_by_group(codes[half:], x[half:], n_groups)
    kq = sketches.kll_merge_by_group(np.r_[np.arange(n_groups), np.arange(n_groups)], np.r_[ka, kb], n_groups)
    for gi in range(n_groups):
        v = np.sort(x[codes == gi])
        for q, got in zip((0.1, 0.5, 0.9, 0.99), sketches.kll_quantiles(kq[gi], (0.1, 0.5, 0.9, 0.99))):
            rank = np.searchsorted(v, got, side="right") / len(v)
            assert abs(rank - q) <= sketches.KLL_PMF_RANK_ERROR, (q, rank)
    assert sketches.kll_count(kq[0]) == (codes == 0).sum()


def test_sketch_helpers_roundtrip():
    assert sketches.hll_merge([None, None]) is None
    assert sketches.hll_estimate(None) == 0.0
    assert round(sketches.hll_estimate(sketches.hll_merge([sketches.hll_of(["a", "b"]),
                                                           sketches.hll_of(["b", "c"])]))) == 3
    assert round(sketches.hll_estimate(sketches.hll_of(np.array([1, 1.0, 2])))) == 2  # 1 and 1.0 are one value
    k = sketches.kll_merge([sketches.kll_of([1.0, 2.0]), None, sketches.kll_of([3.0, 4.0])])
    assert sketches.kll_quantiles(k, [0.5, 1.0]) == [2.0, 4.0]
    assert all(math.isnan(v) for v in sketches.kll_quantiles(None, [0.5]))
    assert 0.016 < sketches.HLL_RSE < 0.0165 and sketches.KLL_PMF_RANK_ERROR == sketches.KLL_RANK_ERROR == 0.02


# --------------------------------------------------------------------------- performance (smoke)


def test_compute_tile_is_vectorized_enough():
    """200k events for user_behavior well under a few seconds (1M takes ~0.5 s on 2 cores)."""
    rng = np.random.default_rng(0)
    n = 200_000
    ev = pd.DataFrame({
        "user_id": np.char.add("u", rng.integers(0, 20_000, n).astype(str)).astype(object),
        "ts": pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta(rng.integers(0, DAY_NS, n), unit="ns"),
        "event_type": np.array(["view", "cart_add", "purchase"], dtype=object)[rng.choice(3, n, p=[.8, .15, .05])],
        "product_id": np.char.add("p", rng.integers(0, 5_000, n).astype(str)).astype(object),
        "price": rng.lognormal(3, 1, n), "quantity": rng.integers(1, 3, n).astype(float),
        "category": np.array(["books", "toys", "home"], dtype=object)[rng.integers(0, 3, n)],
    })
    t0 = time.perf_counter()
    tile = compute_tile(ev, GROUPS["user_behavior"], "2026-09-01")
    assert time.perf_counter() - t0 < 5.0
    assert tile["event__n"].sum() == n
