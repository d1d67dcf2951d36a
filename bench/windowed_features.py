"""Benchmark 1: point-in-time windowed user features, three ways, on the same ingested events.

Features (for every *active user* -- at least one event in the 30 days before the
cutoff -- at each of the last 7 day-ends; cutoff ``t = D+1 00:00 UTC``, events with
``ts < t``, a window of w days is ``[t - w, t)``):

=============================== ===========================================================
``event_count_30d``             all events, 30d (defines "active": > 0)
``view_count_{1d,7d,30d}``      views
``purchase_count_{7d,30d}``     purchases
``purchase_amount_{7d,30d}``    sum of price * quantity over purchases (0 when none)
``purchase_amount_mean_30d``    mean of price * quantity over purchases (NaN when none)
``distinct_products_viewed_30d`` distinct product_id among views (project: HLL estimate)
``seconds_since_last_purchase`` cutoff minus the last purchase ts, all time (NaN if none)
=============================== ===========================================================

Implementations:

(a) this project: the ``bench_user`` FeatureGroup below, through the Dagster assets' task
    functions on a LocalCluster of 2 workers x 1 thread. Headline ("backfill for the 7
    cutoffs", the same output as DuckDB's 7-cutoff query): one ``tile_day`` task per day
    for every day the windows and the all-time recency need (all days, in parallel), then
    ``features_range`` for the 7 cutoff days only, its starting all-time state merged
    from the tiles in one step and its window prefix/suffix aggregates built from tiles.
    Info ("full backfill, all days", the same output as DuckDB over every cutoff): the
    tiles plus ``features_range`` over every day, split by ``pipeline.plan_chunks`` into
    one chunk per worker (each chunk rebuilds its start from tiles). The one-day
    incremental is ``tile_day`` + ``features_range`` of the last day only, with the
    previous day's state and window aggregates in the store.
(b) DuckDB (``SET threads=2``): one SQL query over ``read_parquet`` of raw_events for the
    7 cutoffs; the one-day comparison is the same query for the last cutoff only.
(c) Featuretools 1.31: ``calculate_feature_matrix`` on an EntitySet (users, events) with
    explicitly declared features (``where=`` filters), one call per window (``training_window``
    is per call: 1d, 7d, 30d, and none for the all-time recency), ``include_cutoff_time=False``.
    It runs as 2 user shards in parallel on the same 2-worker cluster (Featuretools'
    own Dask path does not work with distributed 2026.x). Everything is expressible;
    ``price * quantity`` is precomputed as an ``amount`` column when the events are
    loaded (inside the timed section). Fill rule: ``NUM_UNIQUE`` gives NaN for users with
    no view in the window; it is filled with 0 (a count).

One-day floor (info): a lower bound on the part of the one-day update that is not aggregation,
timed on a worker with the pipeline's own calls on the day's stored outputs (read the day's raw
events, write its tile, read the carried all-time state and write the next, write the feature
partition, its Pandera check) plus two empty-task round trips. DuckDB's one-day time / 10 minus
the floor is what tiling, window merges and features could take at most.

Agreement is checked against DuckDB (exact): counts exactly, sums/means/recency to float
rounding, the distinct count within 5% relative or +-2 (HLL lg_k=12 has ~1.6% RSE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featurecore.spec import Aggregation, Derived, FeatureGroup
from featurecore.timeutil import shift_day

from .common import (
    MEASUREMENT_HEADERS, Dataset, Measurement, clear_assets, fmt_bytes, fmt_ratio, fmt_seconds, fresh_work_store,
    measurement_row, median_run, table, timed,
)

VIEW = ("event_type", "==", "view")
PURCHASE = ("event_type", "==", "purchase")
N_CUTOFFS = 7
WINDOW_DAYS = 30
#: windows in days (None = all time) -> features computed over that window
WINDOWS: dict[int | None, list[str]] = {
    1: ["view_count_1d"],
    7: ["view_count_7d", "purchase_count_7d", "purchase_amount_7d"],
    30: ["event_count_30d", "view_count_30d", "purchase_count_30d", "purchase_amount_30d",
         "purchase_amount_mean_30d", "distinct_products_viewed_30d"],
    None: ["seconds_since_last_purchase"],
}
FEATURES = [f for fs in WINDOWS.values() for f in fs]
COUNT_FEATURES = [f for f in FEATURES if "count" in f]
FLOAT_FEATURES = ["purchase_amount_7d", "purchase_amount_30d", "purchase_amount_mean_30d", "seconds_since_last_purchase"]
DISTINCT_FEATURES = ["distinct_products_viewed_30d"]

GROUP = FeatureGroup(
    "bench_user",
    keys=("user_id",),
    aggregations=[
        Aggregation("count", windows=("30d",), name="event_count"),
        Aggregation("count", where=VIEW, windows=("1d", "7d", "30d"), name="view_count"),
        Aggregation("count", where=PURCHASE, windows=("7d", "30d"), name="purchase_count"),
        Aggregation("sum", column="amount", where=PURCHASE, windows=("7d", "30d"), name="purchase_amount"),
        Aggregation("mean", column="amount", where=PURCHASE, windows=("30d",), name="purchase_amount_mean"),
        Aggregation("distinct", column="product_id", where=VIEW, windows=("30d",), name="distinct_products_viewed"),
    ],
    derived=[Derived.recency(where=PURCHASE, name="seconds_since_last_purchase")],
    description="Benchmark group: windowed view/purchase counts and amounts, distinct products, recency.",
)
assert sorted(GROUP.feature_names()) == sorted(FEATURES), GROUP.feature_names()

def cutoff_days(data: Dataset) -> list[str]:
    """The last ``N_CUTOFFS`` days of the dataset (the cutoffs the implementations are compared at)."""
    return data.days[-N_CUTOFFS:]


def _cutoff_ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)


# --------------------------------------------------------------------------- (a) this project


def project_backfill(client, groups: list[FeatureGroup], store_root: str, days: list[str], start: str,
                     feature_days: list[str] | None = None) -> dict:
    """The Dagster assets' code path: tile_day for every day of `days` in parallel, then the
    feature tasks for `feature_days` (default: all of `days`), split by ``plan_chunks``."""
    from featurecore.pipeline import features_range, plan_chunks, tile_day

    feature_days = list(days if feature_days is None else feature_days)
    n_workers = max(len(client.scheduler_info()["workers"]), 1)
    t0 = time.perf_counter()
    tile_stats = client.gather([client.submit(tile_day, d, groups, store_root, pure=False) for d in days])
    t_tiles = time.perf_counter() - t0
    chunks = {g.name: plan_chunks(feature_days, g, n_workers, concurrent=len(groups), store_root=store_root) for g in groups}
    futs = {g.name: [client.submit(features_range, chunk, g, store_root, start, pure=False)
                     for chunk in chunks[g.name]] for g in groups}
    feat_stats = {name: [s for part in client.gather(fs) for s in part] for name, fs in futs.items()}
    t_all = time.perf_counter() - t0
    errors = [f"{n} {s['day']}: {e}" for n, st in feat_stats.items() for s in st for e in s["schema_errors"]]
    return {
        "tiles_wall": t_tiles,
        "features_wall": t_all - t_tiles,
        "tile_read_task_s": sum(s["read_seconds"] for s in tile_stats),
        "tile_compute_task_s": sum(g["seconds"] for s in tile_stats for g in s["groups"].values()),
        "feature_day_s": {n: [s["seconds"] for s in st] for n, st in feat_stats.items()},
        "feature_chunks": {n: len(c) for n, c in chunks.items()},
        "tile_days": len(days),
        "schema_errors": errors,
    }


def project_one_day(client, group: FeatureGroup, store_root: str, day: str, start: str) -> dict:
    """Incremental update of one new day: its tiles, then its features from the stored state."""
    from featurecore.pipeline import features_range, tile_day

    client.submit(tile_day, day, [group], store_root, pure=False).result()
    return client.submit(features_range, [day], group, store_root, start, pure=False).result()[0]


FLOOR_SCRATCH = "_bench_floor_"  # scratch assets the floor writes to (removed afterwards)


def _noop() -> None:
    """An empty task: its round trip is the scheduling cost of one."""
    return None


def floor_parts(group: FeatureGroup, store_root: str, day: str) -> dict[str, float]:
    """Dask task: seconds of the I/O and check a one-day update of this implementation pays before aggregating.

    The same calls as ``tile_day`` + ``features_range`` make, on the day's stored outputs: read
    the day's raw events, write its tile, read the previous day's carried state, write the new
    one, write the feature partition, and its Pandera check. Writes go to scratch assets. A lower
    bound: it leaves out re-reading the tile, the window prefix/suffix reads and writes, the
    existence checks, the invalidations and the partition statistics.
    """
    from checks.feature_schemas import validate_features
    from featurecore.pipeline import load_events, state_asset, tiles_asset
    from featurecore.store import INTERNAL, read_partition, write_partition

    # the update holds these in memory when it writes them: reading them is not one of its steps
    tile = read_partition(store_root, tiles_asset(group), day)
    state = read_partition(store_root, state_asset(group), day)
    feats = read_partition(store_root, group.name, day)
    out: dict[str, float] = {}
    steps = [
        ("read the day's raw events", lambda: load_events(store_root, day, [group])),
        ("write its tile", lambda: write_partition(tile, store_root, FLOOR_SCRATCH + "tile", day, compression=INTERNAL)),
        ("read the carried state", lambda: read_partition(store_root, state_asset(group), shift_day(day, -1))),
        ("write the new state", lambda: write_partition(state, store_root, FLOOR_SCRATCH + "state", day,
                                                        compression=INTERNAL)),
        ("write the features", lambda: write_partition(feats, store_root, FLOOR_SCRATCH + "features", day)),
        ("Pandera check", lambda: validate_features(feats, group)),
    ]
    for name, fn in steps:
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0
    return out


def one_day_floor(client, group: FeatureGroup, store_root: str, day: str, repeats: int) -> dict[str, float]:
    """Median seconds of each part of ``floor_parts`` plus two task round trips (the update is two tasks)."""
    trips = []
    for _ in range(max(repeats, 3)):
        t0 = time.perf_counter()
        client.submit(_noop, pure=False).result()
        trips.append(time.perf_counter() - t0)
    try:
        runs = [client.submit(floor_parts, group, store_root, day, pure=False).result() for _ in range(max(repeats, 3))]
    finally:
        clear_assets(store_root, *(FLOOR_SCRATCH + n for n in ("tile", "state", "features")))
    out = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    out["two task round trips"] = 2 * float(np.median(trips))
    return out


def read_project_features(store_root: str, days: list[str]) -> pd.DataFrame:
    """The project's feature rows of `days` for active users, indexed (cutoff, user_id)."""
    from featurecore.store import read_partition

    parts = [read_partition(store_root, GROUP.name, d) for d in days]
    df = pd.concat(parts, ignore_index=True)
    df = df[df["event_count_30d"] > 0]
    return _normalize(df, "cutoff")


def _normalize(df: pd.DataFrame, cutoff_col: str) -> pd.DataFrame:
    out = df[["user_id", cutoff_col] + FEATURES].copy()
    c = pd.to_datetime(out[cutoff_col])
    out["cutoff"] = (c.dt.tz_convert("UTC") if c.dt.tz is not None else c.dt.tz_localize("UTC")).dt.as_unit("ns")
    if cutoff_col != "cutoff":
        out = out.drop(columns=[cutoff_col])
    out["user_id"] = out["user_id"].astype(str)
    for f in FEATURES:
        out[f] = pd.to_numeric(out[f], errors="coerce").astype("float64")
    return out.set_index(["cutoff", "user_id"]).sort_index()[FEATURES]


# --------------------------------------------------------------------------- (b) DuckDB


def duckdb_sql(raw_glob: str, days: list[str]) -> str:
    """One query: the features of every active user at the cutoffs of `days`."""
    cuts = [_cutoff_ts(d) for d in days]
    lo = (min(cuts) - pd.Timedelta(days=WINDOW_DAYS)).date().isoformat()
    hi = max(days)
    cut_list = ", ".join(f"TIMESTAMPTZ '{c.isoformat()}'" for c in cuts)
    src = f"read_parquet('{raw_glob}', hive_partitioning = true)"
    return f"""
WITH cutoffs AS (SELECT unnest([{cut_list}]) AS t),
ev AS (  -- the partitions any 30-day window can reach
    SELECT user_id, ts::TIMESTAMPTZ AS ts, event_type, product_id, price * quantity AS amount
    FROM {src}
    WHERE "date" BETWEEN DATE '{lo}' AND DATE '{hi}'
),
win AS (
    SELECT c.t AS cutoff, e.user_id,
        count(*)                                                                       AS event_count_30d,
        count(*) FILTER (e.event_type = 'view' AND e.ts >= c.t - INTERVAL 1 DAY)      AS view_count_1d,
        count(*) FILTER (e.event_type = 'view' AND e.ts >= c.t - INTERVAL 7 DAY)      AS view_count_7d,
        count(*) FILTER (e.event_type = 'view')                                        AS view_count_30d,
        count(*) FILTER (e.event_type = 'purchase' AND e.ts >= c.t - INTERVAL 7 DAY)  AS purchase_count_7d,
        count(*) FILTER (e.event_type = 'purchase')                                    AS purchase_count_30d,
        coalesce(sum(e.amount) FILTER (e.event_type = 'purchase' AND e.ts >= c.t - INTERVAL 7 DAY), 0)
                                                                                       AS purchase_amount_7d,
        coalesce(sum(e.amount) FILTER (e.event_type = 'purchase'), 0)                  AS purchase_amount_30d,
        avg(e.amount) FILTER (e.event_type = 'purchase')                               AS purchase_amount_mean_30d,
        count(DISTINCT e.product_id) FILTER (e.event_type = 'view')                    AS distinct_products_viewed_30d
    FROM ev e JOIN cutoffs c ON e.ts >= c.t - INTERVAL {WINDOW_DAYS} DAY AND e.ts < c.t
    GROUP BY c.t, e.user_id
),
last_purchase AS (  -- all time
    SELECT c.t AS cutoff, p.user_id, max(p.ts) AS last_ts
    FROM (SELECT user_id, ts::TIMESTAMPTZ AS ts FROM {src}
          WHERE event_type = 'purchase' AND "date" <= DATE '{hi}') p
    JOIN cutoffs c ON p.ts < c.t
    GROUP BY c.t, p.user_id
)
SELECT w.*, date_diff('microsecond', l.last_ts, w.cutoff) / 1e6 AS seconds_since_last_purchase
FROM win w LEFT JOIN last_purchase l ON l.cutoff = w.cutoff AND l.user_id = w.user_id
"""


def duckdb_features(raw_glob: str, days: list[str], threads: int = 2) -> pd.DataFrame:
    """Run ``duckdb_sql`` on a fresh DuckDB connection (``threads`` threads, UTC) and return the frame."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(duckdb_sql(raw_glob, days)).df()
    finally:
        con.close()


# --------------------------------------------------------------------------- (c) Featuretools


def ft_shard(raw_root: str, user_ids: list[str] | None, days: list[str]) -> dict:
    """Featuretools features of one user shard at the cutoffs of `days` (a Dask task)."""
    import warnings

    with warnings.catch_warnings():
        # Featuretools 1.31 / woodwork on pandas 2.3: FutureWarnings and "last_time_index is not set"
        warnings.simplefilter("ignore")
        return _ft_shard(raw_root, user_ids, days)


def _ft_shard(raw_root: str, user_ids: list[str] | None, days: list[str]) -> dict:
    import featuretools as ft
    import pyarrow.dataset as pads
    from featuretools.primitives import Count, Mean, NumUnique, Sum, TimeSinceLast

    t0 = time.perf_counter()
    dset = pads.dataset(str(Path(raw_root) / "raw_events"), format="parquet", partitioning="hive")
    cols = ["event_id", "user_id", "ts", "event_type", "product_id", "price", "quantity"]
    flt = pads.field("user_id").isin(user_ids) if user_ids is not None else None
    ev = dset.to_table(columns=cols, filter=flt).to_pandas()
    ev = ev[ev["ts"] < _cutoff_ts(max(days))]
    ev["ts"] = ev["ts"].dt.tz_convert("UTC").dt.tz_localize(None)  # Featuretools wants naive times
    ev["amount"] = ev["price"] * ev["quantity"]
    ev = ev.drop(columns=["price", "quantity"]).sort_values("ts", kind="stable").reset_index(drop=True)

    # (user, cutoff) rows: users with an event in [t - 30d, t)
    rows = []
    for d in days:
        t = _cutoff_ts(d).tz_localize(None)
        m = (ev["ts"] >= t - pd.Timedelta(days=WINDOW_DAYS)) & (ev["ts"] < t)
        rows.append(pd.DataFrame({"user_id": ev.loc[m, "user_id"].unique(), "time": t}))
    cutoff_time = pd.concat(rows, ignore_index=True)

    es = ft.EntitySet("bench")
    es.add_dataframe(
        dataframe_name="events", dataframe=ev, index="event_id", time_index="ts",
        logical_types={"event_type": "Categorical", "product_id": "Categorical", "user_id": "Categorical",
                       "amount": "Double"},
    )
    es.add_dataframe(dataframe_name="users", dataframe=pd.DataFrame({"user_id": ev["user_id"].unique()}),
                     index="user_id")
    es.add_relationship("users", "user_id", "events", "user_id")
    t_load = time.perf_counter() - t0

    e = es["events"].ww
    etype = ft.IdentityFeature(e["event_type"])
    is_view, is_purchase = etype == "view", etype == "purchase"

    def agg(col: str, prim, where=None):
        return ft.Feature(e[col], parent_dataframe_name="users", primitive=prim, where=where)

    defs = {
        "event_count_30d": agg("event_id", Count),
        "view_count_1d": agg("event_id", Count, is_view),
        "view_count_7d": agg("event_id", Count, is_view),
        "view_count_30d": agg("event_id", Count, is_view),
        "purchase_count_7d": agg("event_id", Count, is_purchase),
        "purchase_count_30d": agg("event_id", Count, is_purchase),
        "purchase_amount_7d": agg("amount", Sum, is_purchase),
        "purchase_amount_30d": agg("amount", Sum, is_purchase),
        "purchase_amount_mean_30d": agg("amount", Mean, is_purchase),
        "distinct_products_viewed_30d": agg("product_id", NumUnique, is_view),
        "seconds_since_last_purchase": agg("ts", TimeSinceLast, is_purchase),
    }
    parts = []
    for wdays, names in WINDOWS.items():
        feats = [defs[n] for n in names]
        fm = ft.calculate_feature_matrix(
            features=feats, entityset=es, cutoff_time=cutoff_time, cutoff_time_in_index=True,
            training_window=None if wdays is None else f"{wdays} days",
            include_cutoff_time=False, n_jobs=1, verbose=False,
        )
        fm = fm[[f.get_name() for f in feats]]
        fm.columns = names
        parts.append(fm)
    out = pd.concat(parts, axis=1).reset_index()
    out["distinct_products_viewed_30d"] = out["distinct_products_viewed_30d"].fillna(0)  # stated fill rule
    return {"features": out, "rows": len(cutoff_time), "events": len(ev), "load_seconds": t_load,
            "seconds": time.perf_counter() - t0}


def featuretools_features(client, data: Dataset, days: list[str], users: list[str] | None, n_shards: int) -> dict:
    """Run ft_shard over `n_shards` user shards in parallel on the cluster."""
    if users is None:
        shards = [None]
        if n_shards > 1:
            import pyarrow.dataset as pads

            ids = pads.dataset(str(Path(data.store_root) / "raw_events"), format="parquet",
                               partitioning="hive").to_table(columns=["user_id"]).column(0).unique().to_pylist()
            shards = [sorted(ids)[i::n_shards] for i in range(n_shards)]
    else:
        shards = [users[i::n_shards] for i in range(n_shards)]
    shards = [s for s in shards if s is None or s]
    res = client.gather([client.submit(ft_shard, data.store_root, s, days, pure=False) for s in shards])
    df = pd.concat([r["features"] for r in res], ignore_index=True)
    return {"features": df, "rows": sum(r["rows"] for r in res), "events": sum(r["events"] for r in res),
            "load_seconds": max(r["load_seconds"] for r in res), "task_seconds": [r["seconds"] for r in res]}


# --------------------------------------------------------------------------- agreement


@dataclass
class Agreement:
    """What ``compare`` found: row counts, missing and extra keys, mismatches per feature."""
    name: str
    rows_ref: int
    rows_other: int
    missing: int  # keys in the reference only
    extra: int  # keys in the other only
    mismatches: dict[str, int] = field(default_factory=dict)
    worst: dict[str, str] = field(default_factory=dict)
    max_distinct_rel_err: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the keys match and no feature value mismatches."""
        return self.missing == 0 and self.extra == 0 and not any(self.mismatches.values())

    def summary(self) -> str:
        """One line: the agreement, or the differences with examples."""
        if self.ok:
            return (f"{self.name}: agree on {self.rows_other:,} rows x {len(FEATURES)} features "
                    f"(distinct count max rel. error {self.max_distinct_rel_err:.2%})")
        bad = {k: v for k, v in self.mismatches.items() if v}
        return (f"{self.name}: DISAGREE -- rows ref {self.rows_ref:,} / other {self.rows_other:,}, "
                f"missing {self.missing}, extra {self.extra}, mismatches {bad}; examples {self.worst}")


def compare(ref: pd.DataFrame, other: pd.DataFrame, name: str, restrict_to_other_users: bool = False) -> Agreement:
    """Compare two normalized frames (index (cutoff, user_id), FEATURES) with the stated tolerances."""
    if restrict_to_other_users:
        users = set(other.index.get_level_values("user_id"))
        ref = ref[ref.index.get_level_values("user_id").isin(users)]
    missing = ref.index.difference(other.index)
    extra = other.index.difference(ref.index)
    common = ref.index.intersection(other.index)
    a, b = ref.loc[common, FEATURES], other.loc[common, FEATURES]
    ag = Agreement(name, len(ref), len(other), len(missing), len(extra))
    if len(missing):
        ag.worst["missing"] = str(list(missing[:3]))
    if len(extra):
        ag.worst["extra"] = str(list(extra[:3]))
    for f in FEATURES:
        x, y = a[f].to_numpy(np.float64), b[f].to_numpy(np.float64)
        both_nan = np.isnan(x) & np.isnan(y)
        if f in COUNT_FEATURES:
            ok = (x == y) | both_nan
        elif f in DISTINCT_FEATURES:
            tol = np.maximum(2.0, 0.05 * np.abs(x))
            ok = (np.abs(x - y) <= tol) | both_nan
            with np.errstate(invalid="ignore", divide="ignore"):
                rel = np.abs(x - y) / np.where(x > 0, x, 1.0)
            ag.max_distinct_rel_err = float(np.nanmax(rel)) if len(rel) else 0.0
        else:
            ok = np.isclose(x, y, rtol=1e-9, atol=1e-6) | both_nan
        ag.mismatches[f] = int((~ok).sum())
        if (~ok).any():
            i = int(np.flatnonzero(~ok)[0])
            ag.worst[f] = f"{common[i]}: ref {x[i]!r} vs {y[i]!r}"
    return ag


# --------------------------------------------------------------------------- the benchmark


@dataclass
class WindowedResult:
    """Measurements, agreements, breakdown and floor of benchmark 1, rendered as tables."""
    size: str
    events: int
    days: int
    rows: int  # active (user, cutoff) rows
    project_full: Measurement  # headline: tiles + features for the 7 cutoffs
    project_one_day: Measurement
    duckdb_full: Measurement
    duckdb_one_day: Measurement
    featuretools: Measurement
    duckdb_all: Measurement | None  # info: DuckDB for every day's cutoff, the same output as the backfill
    agreements: list[Agreement]
    breakdown: dict[str, Any]
    notes: list[str]
    project_all: Measurement | None = None  # info: tiles + features for every day
    floor: dict[str, float] = field(default_factory=dict)  # one_day_floor(): parts in seconds

    @property
    def agree(self) -> bool:
        """True when every agreement check passed."""
        return all(a.ok for a in self.agreements)

    def ratios(self) -> list[tuple[str, float, str, bool]]:
        """(label, value, target, met)."""
        r1 = self.project_full.seconds / self.duckdb_full.seconds
        r2 = self.duckdb_one_day.seconds / self.project_one_day.seconds
        r3 = self.featuretools.seconds / self.project_full.seconds
        r4 = (self.featuretools.seconds / N_CUTOFFS) / self.project_one_day.seconds
        out = [
            ("project backfill for 7 cutoffs / DuckDB 7 cutoffs", r1, "<= 1.5x", r1 <= 1.5),
            ("DuckDB last cutoff / project one-day incremental", r2, ">= 10x", r2 >= 10),
            ("Featuretools 7 cutoffs / project full backfill", r3, ">= 30x", r3 >= 30),
            ("Featuretools per cutoff / project one-day (info)", r4, "", True),
        ]
        if self.duckdb_all is not None and self.project_all is not None:
            out.append((f"project backfill all {self.days} days / DuckDB all {self.days} cutoffs (info)",
                        self.project_all.seconds / self.duckdb_all.seconds, "", True))
        return out

    def render(self) -> str:
        """The result as plain-text tables, agreement lines, breakdowns and notes."""
        lines = [table(
            MEASUREMENT_HEADERS,
            [measurement_row(m) for m in (self.project_full, self.duckdb_full, self.featuretools,
                                          self.project_one_day, self.duckdb_one_day, self.project_all,
                                          self.duckdb_all) if m],
            title=(f"Benchmark 1 - windowed features ({self.size}: {self.events:,} events over {self.days} days, "
                   f"{self.rows:,} active (user, cutoff) rows at {N_CUTOFFS} cutoffs)"),
        ), ""]
        lines.append(table(["ratio", "value", "target", "met"],
                           [[lbl, fmt_ratio(v), tgt, ("yes" if ok else "NO") if tgt else ""]
                            for lbl, v, tgt, ok in self.ratios()]))
        lines.append("")
        lines.extend("agreement: " + a.summary() for a in self.agreements)
        b = self.breakdown
        for label, key in (("7-cutoff backfill", "cut"), (f"all-{self.days}-days backfill", "all")):
            x = b.get(key)
            if not x:
                continue
            lines.append(
                f"project {label} breakdown: {x['tile_days']} tile tasks {fmt_seconds(x['tiles_wall'])} wall "
                f"(read {fmt_seconds(x['tile_read_task_s'])} + compute/write {fmt_seconds(x['tile_compute_task_s'])}, "
                f"summed over tasks on 2 workers); features {fmt_seconds(x['features_wall'])} wall in "
                f"{x['chunks']} chunk task(s) ({x['feature_days']} days, {fmt_seconds(x['feature_day_median'])}/day "
                f"median, {fmt_seconds(x['feature_day_max'])} max)")
        if self.floor:
            total = sum(self.floor.values())
            budget = self.duckdb_one_day.seconds / 10
            lines.append(
                "one-day floor (at least this much of the update is not aggregation, medians): "
                + ", ".join(f"{k} {fmt_seconds(v)}" for k, v in self.floor.items())
                + f" = {fmt_seconds(total)}; 10x DuckDB is {fmt_seconds(budget)} for the whole update, "
                + (f"which the floor alone exceeds by {fmt_seconds(total - budget)}" if total >= budget else
                   f"so tiling, window merges and features would have {fmt_seconds(budget - total)}")
                + f" (the update took {fmt_seconds(self.project_one_day.seconds)})")
        lines.extend("note: " + n for n in self.notes)
        return "\n".join(lines)


def run(ctx) -> WindowedResult:
    """Benchmark 1. `ctx` has: client, sampler (MemorySampler), data (Dataset), log."""
    sampler, data, log = ctx.sampler, ctx.data, ctx.log
    size = data.size
    days = data.days
    cdays = cutoff_days(data)
    last = days[-1]
    repeats = size.repeats
    notes: list[str] = []

    # (a) this project ------------------------------------------------------------
    store = fresh_work_store(data, "windowed_cutoffs")
    client = ctx.cluster.fresh()
    log(f"  (a) project: backfill for the {len(cdays)} cutoffs (tiles for all {len(days)} days) ...")
    with timed(sampler) as t:
        bf = project_backfill(client, [GROUP], store, days, days[0], feature_days=cdays)
    if bf["schema_errors"]:
        notes.append(f"project schema check failures: {bf['schema_errors'][:3]}")
    project_full = Measurement(f"this project: backfill for {len(cdays)} cutoffs (tiles all days + features {len(cdays)} days)",
                               t["seconds"], data.n_events, t["memory"],
                               f"tiles {len(days)} days, features {len(cdays)} days")
    project_df = read_project_features(store, cdays)
    log(f"      {fmt_seconds(t['seconds'])}; full backfill, all {len(days)} days (info) ...")
    store = fresh_work_store(data, "windowed")
    client = ctx.cluster.fresh()
    with timed(sampler) as t:
        bf_all = project_backfill(client, [GROUP], store, days, days[0])
    if bf_all["schema_errors"]:
        notes.append(f"project schema check failures (all days): {bf_all['schema_errors'][:3]}")
    project_all = Measurement(f"this project: full backfill, all {len(days)} days (info)", t["seconds"],
                              data.n_events, t["memory"],
                              f"{len(days)} feature days, {bf_all['feature_chunks'][GROUP.name]} chunks")
    log(f"      {fmt_seconds(t['seconds'])}; one-day incremental x{repeats} ...")
    sec, mem, _, runs = median_run(lambda: project_one_day(client, GROUP, store, last, days[0]), repeats, sampler)
    project_one = Measurement("this project: one-day incremental (tiles + features)", sec,
                              data.events_in([last]), mem, _runs_note(runs))
    project_all_df = read_project_features(store, cdays)
    floor = one_day_floor(client, GROUP, store, last, repeats)

    # (b) DuckDB ------------------------------------------------------------------
    client = ctx.cluster.fresh()  # idle workers: the memory baseline does not carry the project's heap
    log("  (b) DuckDB: 7 cutoffs ...")
    with timed(sampler) as t:
        duck_raw = duckdb_features(data.raw_glob, cdays)
    duckdb_full = Measurement("DuckDB: one query, 7 cutoffs (2 threads)", t["seconds"], data.n_events, t["memory"])
    duck_df = _normalize(duck_raw, "cutoff")
    log(f"      {fmt_seconds(t['seconds'])}; last cutoff x{repeats} ...")
    sec, mem, one_raw, runs = median_run(lambda: duckdb_features(data.raw_glob, [last]), repeats, sampler)
    duckdb_one = Measurement("DuckDB: recompute last cutoff from raw events", sec, data.events_in([last]), mem,
                             _runs_note(runs))
    duck_one_df = _normalize(one_raw, "cutoff")
    log(f"      {fmt_seconds(sec)}")
    duckdb_all = None
    if size.duckdb_all_cutoffs:
        log(f"  (b) DuckDB: all {len(days)} cutoffs (info) ...")
        with timed(sampler) as t:
            n_rows = len(duckdb_features(data.raw_glob, days))
        duckdb_all = Measurement(f"DuckDB: all {len(days)} cutoffs (info: the backfill's output)", t["seconds"],
                                 data.n_events, t["memory"], f"{n_rows:,} rows")
    else:
        notes.append(f"DuckDB over all {len(days)} cutoffs (the backfill's full output) is skipped at this size: "
                     "its range join needs ~15 GB.")

    # (c) Featuretools ------------------------------------------------------------
    client = ctx.cluster.fresh(featuretools=True)
    n_shards = len(client.scheduler_info()["workers"])
    users = None
    total_rows = len(duck_df)
    if size.ft_sample_users:
        all_users = sorted(set(duck_df.index.get_level_values("user_id")))
        rng = np.random.default_rng(12345)
        users = sorted(rng.choice(all_users, size=min(size.ft_sample_users, len(all_users)), replace=False).tolist())
    log(f"  (c) Featuretools ({'all users' if users is None else f'sample of {len(users):,} users'}, "
        f"{n_shards} shards) ...")
    with timed(sampler) as t:
        ftr = featuretools_features(client, data, cdays, users, n_shards)
    ft_df = _normalize(ftr["features"], "time")
    if users is None:
        ft_secs, ft_note = t["seconds"], f"{n_shards} user shards in parallel"
    else:
        # the load (Parquet scan + EntitySet) is counted once, unscaled; the feature
        # computation is scaled by rows: favourable to Featuretools, never the other way
        load = min(ftr["load_seconds"], t["seconds"])
        rate = ftr["rows"] / max(t["seconds"] - load, 1e-9)
        ft_secs = load + total_rows / rate
        ft_note = (f"EXTRAPOLATED: {len(users):,} sampled users, {ftr['rows']:,} rows in "
                   f"{fmt_seconds(t['seconds'])} (load {fmt_seconds(load)}), {rate:,.0f} rows/s")
        notes.append(
            f"Featuretools ran on a uniform random sample of {len(users):,} of {len(all_users):,} active users "
            f"(seed 12345); its time = the sample's load time (once) + all {total_rows:,} rows at the sample's "
            "measured rows/s of calculate_feature_matrix; its peak memory is the sample's.")
    featuretools = Measurement("Featuretools: calculate_feature_matrix, 7 cutoffs", ft_secs, data.n_events,
                               t["memory"], ft_note,
                               extra={"measured_seconds": t["seconds"], "load_seconds": ftr["load_seconds"],
                                      "rows": ftr["rows"]})
    log(f"      {fmt_seconds(t['seconds'])} measured")

    agreements = [
        compare(duck_df, project_df, "project vs DuckDB (7 cutoffs)"),
        compare(duck_df, project_all_df, "project all-days backfill (last 7 days) vs DuckDB"),
        compare(duck_df, ft_df, "Featuretools vs DuckDB" + (" (sampled users)" if users is not None else ""),
                restrict_to_other_users=users is not None),
        compare(duck_df[duck_df.index.get_level_values("cutoff") == _cutoff_ts(last)], duck_one_df,
                "DuckDB last cutoff vs DuckDB 7 cutoffs"),
    ]
    def _bd(x: dict) -> dict:
        day_s = x["feature_day_s"][GROUP.name]
        return dict(x, chunks=x["feature_chunks"][GROUP.name], feature_days=len(day_s),
                    feature_day_median=float(np.median(day_s)) if day_s else 0.0,
                    feature_day_max=float(np.max(day_s)) if day_s else 0.0)

    breakdown = {"cut": _bd(bf), "all": _bd(bf_all)}
    notes.append(
        f"what each side computes: DuckDB '7 cutoffs' = one SQL query from raw events for the {len(cdays)} cutoffs; "
        f"project 'backfill for {len(cdays)} cutoffs' = tiles of all {len(days)} days (the all-time recency needs "
        f"every day; the 30d windows need the last {WINDOW_DAYS + len(cdays) - 1}) + features of the {len(cdays)} "
        "cutoff days only (all-time state merged from tiles in one step, window aggregates from tiles), "
        "written to the store with schema checks. 'all days' lines: every day's cutoff on both sides (info).")
    notes.append("events/s = events in raw_events / time for the full runs, the new day's events / time for the "
                 "one-day runs; 'above idle' = peak minus the RSS (this process + workers) when the phase started.")
    notes.append(f"one-day figures are the median of {repeats} runs; full runs are single runs.")
    return WindowedResult(size.name, data.n_events, len(days), total_rows, project_full, project_one, duckdb_full,
                          duckdb_one, featuretools, duckdb_all, agreements, breakdown, notes, project_all=project_all,
                          floor=floor)


def _runs_note(runs: list[float]) -> str:
    return "runs: " + ", ".join(fmt_seconds(r) for r in runs) if len(runs) > 1 else ""


def summary_rows(r: WindowedResult) -> list[list[str]]:
    """Rows for the final summary table: (benchmark, figure, value, target, met)."""
    rows = [["1 windowed", f"project backfill for {N_CUTOFFS} cutoffs", fmt_seconds(r.project_full.seconds), "", ""],
            ["1 windowed", "DuckDB 7 cutoffs", fmt_seconds(r.duckdb_full.seconds), "", ""],
            ["1 windowed", "Featuretools 7 cutoffs" + (" (extrapolated)" if "EXTRA" in r.featuretools.note else ""),
             fmt_seconds(r.featuretools.seconds), "", ""],
            ["1 windowed", "project one-day incremental", fmt_seconds(r.project_one_day.seconds), "", ""],
            ["1 windowed", "DuckDB last cutoff", fmt_seconds(r.duckdb_one_day.seconds), "", ""],
            ["1 windowed", "peak RSS project backfill", fmt_bytes(r.project_full.memory.peak), "", ""]]
    for lbl, v, tgt, ok in r.ratios():
        if tgt:
            rows.append(["1 windowed", lbl, fmt_ratio(v), tgt, "yes" if ok else "NO"])
    if r.floor:
        rows.append(["1 windowed", "one-day floor (I/O, check, 2 tasks; no aggregation)", fmt_seconds(sum(r.floor.values())), "", ""])
    rows.append(["1 windowed", "three implementations agree", "yes" if r.agree else "NO", "yes",
                 "yes" if r.agree else "NO"])
    return rows
