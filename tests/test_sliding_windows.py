"""Sliding-window engine (prefix/suffix block aggregates in ``pipeline``) == direct merges.

``features_range`` builds every window from per-block prefix aggregates P(D) and suffix
aggregates S(d) (stored as internal artefacts); ``tiles.features_for_day`` merges the
window's tiles directly. They must agree for any day, window size and run split:
exact for counts/min/max/last/timestamps and HLL (register unions), float sums and
EMA to rounding, KLL exactly while a window holds <= 200 values (the data is small).
Range runs, one-day runs, chunked runs and runs without stored artefacts must be
bit-identical to each other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurecore.pipeline import (
    block_start, features_range, internal_assets, plan_chunks, state_asset, tiles_asset,
)
from featurecore.spec import ALL_TIME, Aggregation as A, Derived, FeatureGroup
from featurecore.store import read_partition, write_partition
from featurecore.tiles import compute_tile, features_from_events, merge_is_exact, state_from_tiles
from featurecore.timeutil import day_range, shift_day

P = ("event_type", "==", "purchase")
V = ("event_type", "==", "view")
START = "2026-08-20"
N_DAYS = 40
DAYS = day_range(START, shift_day(START, N_DAYS - 1))


def _group(wins, with_all: bool) -> FeatureGroup:
    all_w = tuple(wins) + ((ALL_TIME,) if with_all else ())
    w0 = wins[-1]
    return FeatureGroup(
        "slide_" + "_".join(wins) + ("_all" if with_all else ""),
        keys=("user_id",),
        aggregations=[
            A("count", windows=all_w),
            A("count", where=P, windows=all_w),
            A("sum", column="amount", where=P, windows=all_w),
            A("mean", column="price", windows=wins),
            A("std", column="price", windows=wins),
            A("min", column="price", windows=wins),
            A("max", column="price", windows=all_w),
            A("last", column="device_type", windows=all_w),
            A("distinct", column="product_id", where=V, windows=wins),
            A("quantile", column="price", windows=wins, quantiles=(0.0, 0.5, 1.0)),
            A("share", column="device_type", windows=wins, categories=("mobile", "desktop")),
            A("active_days", where=V, windows=wins),
        ],
        derived=[
            Derived.frequency(w0, where=V),
            Derived.ema("2d", where=P),
            Derived.ema("36h", column="price", mode="mean"),
        ] + ([Derived.recency(where=P)] if with_all else []),
    )


def _exact_group(wins) -> FeatureGroup:
    """Only statistics whose merges are exact in any grouping: the prefix/suffix builders
    then merge many tiles at once instead of folding them one day at a time."""
    all_w = tuple(wins) + (ALL_TIME,)
    return FeatureGroup(
        "exact_" + "_".join(wins),
        keys=("user_id",),
        aggregations=[
            A("count", windows=all_w),
            A("sum", column="amount", where=P, windows=all_w),
            A("mean", column="price", windows=wins),
            A("min", column="price", windows=wins),
            A("max", column="price", windows=all_w),
            A("last", column="device_type", windows=all_w),
            A("distinct", column="product_id", where=V, windows=wins),
            A("share", column="device_type", windows=wins, categories=("mobile", "desktop")),
            A("active_days", where=V, windows=wins),
        ],
        derived=[Derived.frequency(wins[-1], where=V), Derived.recency(where=P)],
    )


GROUPS = [
    _group(("1d", "3d", "7d"), True),
    _group(("2d", "5d", "11d"), False),
    _group(("1d", "30d"), True),
    _exact_group(("1d", "7d", "30d")),
]


def _events(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 1500
    day0 = pd.Timestamp(START, tz="UTC").value
    ts = day0 + rng.integers(0, N_DAYS * 86400 * 10**9, n)
    # a few empty days (no tile at all)
    empty = {5, 6, 17, 33}
    keep = ~np.isin((ts - day0) // (86400 * 10**9), list(empty))
    n = int(keep.sum())
    ts = ts[keep]
    price = rng.choice([np.nan, 0.5, 1.5, 9.99, 10.0, 250.0], n)
    # continuous prices too: sums then depend on the order of additions, so the
    # bit-identity checks below see any change in how tiles are combined
    price = np.where(rng.random(n) < 0.5, np.round(rng.uniform(0.01, 300.0, n), 2), price)
    return pd.DataFrame({
        "user_id": rng.choice([f"u{i}" for i in range(25)], n),
        "ts": pd.to_datetime(ts, utc=True),
        "event_type": rng.choice(["view", "view", "cart_add", "purchase"], n),
        "product_id": rng.choice(["p0", "p1", "p2", "p3", None], n),
        "price": price,
        "quantity": rng.choice([1.0, 2.0, 3.0], n),
        "device_type": rng.choice(["mobile", "desktop", "tablet", None], n),
    })


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    ev = _events(7)
    root = tmp_path_factory.mktemp("slide")
    base = root / "base"
    day_no = (ev["ts"].astype("int64") // (86400 * 10**9)).to_numpy()
    for g in GROUPS:
        for d in DAYS:
            dn = pd.Timestamp(d, tz="UTC").value // (86400 * 10**9)
            part = ev.iloc[np.flatnonzero(day_no == dn)]
            if len(part):
                write_partition(compute_tile(part, g, d), base, tiles_asset(g), d)
    return ev, root


def _copy(root, name):
    dst = root / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(root / "base", dst)
    return str(dst)


def _read(store, g, days):
    return pd.concat([read_partition(store, g.name, d) for d in days], ignore_index=True)


def _assert_close(a: pd.DataFrame, b: pd.DataFrame, g: FeatureGroup):
    keys = list(g.keys) + ["cutoff"]
    a = a.sort_values(keys, ignore_index=True)
    b = b.sort_values(keys, ignore_index=True)
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[keys], b[keys], check_dtype=False)
    for f in g.features():
        x, y = a[f.name], b[f.name]
        if f.dtype == "object":
            assert [None if pd.isna(v) else v for v in x] == [None if pd.isna(v) else v for v in y], f.name
            continue
        x, y = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
        assert np.array_equal(np.isnan(x), np.isnan(y)), f.name
        ok = ~np.isnan(x)
        if f.kind in ("count", "min", "max", "distinct", "active_days", "frequency", "recency", "share", "quantile"):
            assert np.array_equal(x[ok], y[ok]), (g.name, f.name)
        else:
            assert np.all(np.abs(x[ok] - y[ok]) <= 1e-9 * (1 + np.abs(y[ok]))), (g.name, f.name)


@pytest.mark.parametrize("gi", range(len(GROUPS)))
def test_sliding_range_equals_direct_merge(world, gi):
    ev, root = world
    g = GROUPS[gi]
    store = _copy(root, f"range{gi}")
    rng = np.random.default_rng(gi)
    first = int(rng.integers(0, 12))
    days = DAYS[first:]
    features_range(days, g, store, DAYS[0])
    direct, _ = features_from_events(ev, g, days)
    _assert_close(_read(store, g, days), direct, g)


@pytest.mark.parametrize("gi", range(len(GROUPS)))
def test_sliding_runs_are_identical_however_split(world, gi):
    """Range == day by day == chunks in any order == without stored artefacts (bit-identical)."""
    ev, root = world
    g = GROUPS[gi]
    days = DAYS[3:]
    full = _copy(root, f"full{gi}")
    features_range(days, g, full, DAYS[0])
    ref = _read(full, g, days)

    inc = _copy(root, f"inc{gi}")
    for d in days:
        features_range([d], g, inc, DAYS[0])
    pd.testing.assert_frame_equal(_read(inc, g, days), ref, check_exact=True)
    # a cold range is split over the free workers; a warm one (the day before is stored) is
    # split only when that still ends sooner than carrying the stored state through it
    assert [len(c) for c in plan_chunks(days[5:10], g, 2)] == [3, 2]
    assert [len(c) for c in plan_chunks(days[5:10], g, 2, store_root=inc)] == [5]
    assert len(plan_chunks(days[5:10], g, 2, concurrent=2)) == 1

    chunked = _copy(root, f"chunk{gi}")
    for chunk in reversed(plan_chunks(days, g, 3) + [days[10:13], days[20:21]]):
        features_range(chunk, g, chunked, DAYS[0])
    pd.testing.assert_frame_equal(_read(chunked, g, days), ref, check_exact=True)

    # random single days with every artefact (and the state) deleted first
    rng = np.random.default_rng(100 + gi)
    for d in rng.choice(days, 5, replace=False):
        for name in internal_assets(g):
            shutil.rmtree(f"{full}/{name}", ignore_errors=True)
        features_range([str(d)], g, full, DAYS[0])
        pd.testing.assert_frame_equal(read_partition(full, g.name, str(d)), ref[ref["cutoff"] == pd.Timestamp(str(d), tz="UTC") + pd.Timedelta(days=1)].reset_index(drop=True), check_exact=True)


def test_blocks_are_aligned_and_cover_the_day():
    for n in (2, 7, 30):
        for d in DAYS:
            bs = block_start(d, n)
            assert bs <= d < shift_day(bs, n)
            assert block_start(shift_day(bs, n), n) == shift_day(bs, n)


def test_one_shot_state_equals_carried_state_for_exact_groups(world):
    ev, root = world
    g = _group(("7d",), True)
    g2 = FeatureGroup("exact_only", keys=("user_id",), aggregations=[
        A("count", where=P, windows=(ALL_TIME,)), A("sum", column="amount", where=P, windows=(ALL_TIME,)),
        A("max", column="price", windows=(ALL_TIME,)), A("last", column="device_type", windows=(ALL_TIME,))],
        derived=[Derived.recency(where=P)])
    assert merge_is_exact(g2, g2.tile_columns_for(ALL_TIME))
    assert not merge_is_exact(g, g.tile_columns_for(ALL_TIME))  # EMA
    day_no = (ev["ts"].astype("int64") // (86400 * 10**9)).to_numpy()
    from featurecore.tiles import advance_state
    tiles, carried = [], None
    for d in DAYS:
        dn = pd.Timestamp(d, tz="UTC").value // (86400 * 10**9)
        part = ev.iloc[np.flatnonzero(day_no == dn)]
        if len(part):
            t = compute_tile(part, g2, d)
            tiles.append(t)
            carried = advance_state(carried, t, g2, d)
    pd.testing.assert_frame_equal(state_from_tiles(tiles, g2), carried, check_exact=True)


def test_exact_group_takes_the_one_merge_path():
    g = GROUPS[-1]
    assert all(merge_is_exact(g, g.tile_columns_for(w)) for w in g.windows)
    assert not merge_is_exact(GROUPS[0], GROUPS[0].tile_columns_for(GROUPS[0].windows[-2]))


def test_late_tile_invalidates_later_state(tmp_path):
    """A late file re-tiles an old day: later days' carried all-time state is dropped, so the
    next incremental day equals a full recomputation that includes the late events."""
    from featurecore.pipeline import tile_day

    g = GROUPS[0]
    ev = _events(11)

    def write_raw(store, frame):
        dn = (frame["ts"].astype("int64") // (86400 * 10**9)).to_numpy()
        for d in DAYS:
            part = frame.iloc[np.flatnonzero(dn == pd.Timestamp(d, tz="UTC").value // (86400 * 10**9))]
            if len(part):
                write_partition(part.reset_index(drop=True), store, "raw_events", d)

    late_day = DAYS[8]
    late = pd.DataFrame({"user_id": ["u1"], "ts": [pd.Timestamp(late_day, tz="UTC") + pd.Timedelta(hours=23)],
                         "event_type": ["purchase"], "product_id": ["p1"], "price": [77.0], "quantity": [1.0],
                         "device_type": ["tablet"]})
    inc = str(tmp_path / "incremental")
    write_raw(inc, ev)
    for d in DAYS:
        if (Path(inc) / "raw_events" / f"date={d}").is_dir():
            tile_day(d, [g], inc)
    features_range(DAYS[:-1], g, inc, START)
    assert (Path(inc) / state_asset(g) / f"date={DAYS[-2]}").is_dir()
    write_raw(inc, pd.concat([ev, late], ignore_index=True))  # the late file lands in its day
    tile_day(late_day, [g], inc)
    left = sorted(p.name for p in (Path(inc) / state_asset(g)).iterdir())
    assert left and max(left) < f"date={late_day}"  # state of the late day and after is gone
    if (Path(inc) / "raw_events" / f"date={DAYS[-1]}").is_dir():
        tile_day(DAYS[-1], [g], inc)
    features_range([DAYS[-1]], g, inc, START)

    full = str(tmp_path / "full")
    write_raw(full, pd.concat([ev, late], ignore_index=True))
    for d in DAYS:
        if (Path(full) / "raw_events" / f"date={d}").is_dir():
            tile_day(d, [g], full)
    features_range(DAYS, g, full, START)
    _assert_close(_read(inc, g, [DAYS[-1]]), _read(full, g, [DAYS[-1]]), g)
    allev = pd.concat([ev, late], ignore_index=True)
    p = allev[(allev.user_id == "u1") & (allev.event_type == "purchase")]
    expected = float((p.price * p.quantity).sum())
    got = _read(inc, g, [DAYS[-1]]).set_index("user_id").loc["u1", "purchase_amount_sum_all"]
    assert got == pytest.approx(expected) and expected >= 77.0
