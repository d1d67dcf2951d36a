"""Daily tiles (mergeable partial aggregates) and features from tiles. Pure pandas/numpy.

Flow for a group and a partition day ``D`` (cutoff ``t = D+1 00:00 UTC``)::

    tile(D)  = compute_tile(events, group, D)              # events with ts in [D, D+1)
    state(D) = merge_tiles([state(D-1), tile(D)], group)   # all-time, carried forward
    features(D), state(D) = features_for_day({day: tile}, state(D-1), group, D)

A window of ``w`` days merges the tiles of days ``D-w+1 .. D`` that are present (a
missing day means no events). Everything is a plain function of DataFrames, so it runs
unchanged inside Dask tasks, the online updater or a notebook.

Tile layout
-----------
One row per entity (``group.keys``) with at least one event in the day, sorted by keys.
Columns ``asof`` (the cutoff the tile is as of: ``D+1 00:00``; for a merge, the latest
one) and ``event__n`` (all events of the entity), then per stream ``<label>__<stat>``
(see ``spec.Stream``; a stream is "events matching ``where`` with a non-null
``column``"), with the merge rule in brackets:

- ``n`` matching events / non-null values [sum]; ``sum`` [sum]; ``m2`` sum of squared
  deviations from the mean (the numerically stable form of a sum of squares:
  ``sumsq = m2 + sum^2/n``) [Chan et al.]; ``min`` [min]; ``max`` [max];
- ``first_ts`` / ``last_ts`` [min / max]; ``last`` the value at the greatest
  ``(ts, value)`` [value of the row with the greatest (last_ts, last)];
- ``hll`` / ``kll`` serialized sketch bytes (``sketches``: vectorised HLL, DataSketches KLL)
  or None [union / merge];
- ``active`` 1 when the entity has a matching event that day [sum: active days];
- ``cnt_<category>`` events with ``column == category`` [sum];
- ``ema_hl<h>`` / ``emaw_hl<h>`` decayed sum / weight at ``asof`` [decay every row to
  the latest ``asof``, then sum].

All merge rules are associative and commutative, so any grouping and order of tiles
gives the same result (floating-point sums up to rounding; KLL beyond 200 values up to
its compactions, which depend on the grouping but not on chance, within its error bound;
HLL unions are exact set unions / register maxima, identical for any grouping).

The all-time state is a merged tile restricted to the columns all-time features read
(``group.tile_columns_for(ALL_TIME)``). Windows are merged nested (the 30d merge starts
from the 7d merge), so each tile is read once per day. Tiles are plain DataFrames:
sketches are ``bytes`` (Parquet binary), timestamps ``datetime64[ns, UTC]``.

Fill rules (features of an entity with no matching event in the window): count, sum,
distinct, active_days, frequency, EMA sum/rate -> 0; mean, std, min, max, last,
quantile, share, EMA mean, ratio, recency -> NaN. ``std`` is the sample standard
deviation (ddof=1), NaN for fewer than 2 values. Features whose source column is
absent from every tile of their window (optional column missing) are NaN for all rows.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from . import sketches
from .spec import (
    ALL_TIME, DERIVED_COLUMNS, DOW_VALUES, HOUR_BUCKETS, NUMERIC_COLUMNS, OTHER, FeatureDef, FeatureGroup, Stream, Window,
    _slug,
)
from .streaming import (
    NS_PER_DAY, decay_factor, ema_partial, ema_value, factorize_keys, sample_variance, to_utc, ts_ns,
    welford_groups, welford_merge_rows,
)
from .timeutil import cutoff, day_key, day_range, day_start, shift_day

NAT = np.iinfo(np.int64).min
INT_STATS = ("n", "active")
TS_STATS = ("first_ts", "last_ts")

__all__ = [
    "compute_tile", "merge_tiles", "features_for_day", "features_from_frames", "advance_state", "merge_is_exact", "state_from_tiles", "empty_tile", "tile_dtypes",
    "features_from_events", "events_for_day", "window_days",
]


def _stat(col: str) -> str:
    return col.split("__", 1)[1] if "__" in col else col


def _ema_half_lives(group: FeatureGroup) -> dict[str, int]:
    """Tile column -> half-life in ns, for every EMA column of the group."""
    out = {}
    for f in group.features():
        if f.kind == "ema":
            hl_ns = int(f.param.total_seconds() * 1e9)
            stat = f.source.ema_stat
            out[f.stream.col(stat)] = hl_ns
            out[f.stream.col("emaw" + stat[3:])] = hl_ns
    return out


def tile_dtypes(group: FeatureGroup) -> dict[str, str]:
    """Column -> dtype of a tile of the group (``last`` of a string column is object)."""
    d = {k: "object" for k in group.keys}
    for c in group.tile_columns:
        st = _stat(c)
        if c == "asof" or st in TS_STATS:
            d[c] = "datetime64[ns, UTC]"
        elif st in INT_STATS or st.startswith("cnt_"):
            d[c] = "int64"
        elif st in ("last", "hll", "kll"):
            d[c] = "object"
        else:
            d[c] = "float64"
    for stream, stats in group.stream_stats().values():
        if "last" in stats and stream.column in NUMERIC_COLUMNS:
            d[stream.col("last")] = "float64"
    return d


def empty_tile(group: FeatureGroup, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A zero-row tile with the group's (or the given) tile columns."""
    dt = tile_dtypes(group)
    cols = list(group.keys) + [c for c in (columns if columns is not None else group.tile_columns)
                               if c not in group.keys]
    return pd.DataFrame({c: pd.Series([], dtype=dt.get(c, "object")) for c in cols})


# --------------------------------------------------------------------------- event context


class _Events:
    """Lazily materialised, cached arrays of one day's events (after the row mask)."""

    def __init__(self, events: pd.DataFrame, rows: np.ndarray | None, t: np.ndarray):
        self.df = events
        self.rows = rows  # None = all rows
        self.t = t
        self.n = len(t)
        self._cache: dict[str, Any] = {}
        self._fact: dict[str, tuple[np.ndarray, pd.Index]] = {}

    def has(self, name: str) -> bool:
        if name in self.df.columns:
            return True
        return name in DERIVED_COLUMNS and all(self.has(c) for c in DERIVED_COLUMNS[name])

    def raw(self, name: str) -> Any:
        """numpy array (or pd.Categorical for derived categorical columns)."""
        if name in self._cache:
            return self._cache[name]
        if name in self.df.columns:
            s = self.df[name]
            if isinstance(s.dtype, pd.CategoricalDtype):
                v = s.array if self.rows is None else s.array[self.rows]
            else:
                if s.dtype.kind in "iufb" and not isinstance(s.dtype, np.dtype):
                    v = s.to_numpy(dtype=np.float64, na_value=np.nan)  # nullable Int64/Float64
                elif s.dtype.kind in "iufb":
                    v = s.to_numpy()
                elif s.dtype.kind == "M" or isinstance(s.dtype, pd.DatetimeTZDtype):
                    v = ts_ns(s)
                else:
                    v = s.to_numpy(dtype=object, na_value=None) if not s.dtype == object else s.to_numpy()
                v = v if self.rows is None else v[self.rows]
        elif name == "amount":
            v = self.numeric("price") * self.numeric("quantity")
        elif name == "hour":
            v = (self.t % NS_PER_DAY) // (3600 * 10**9)
        elif name == "dow":
            v = pd.Categorical.from_codes(((self.t // NS_PER_DAY) + 3) % 7, categories=list(DOW_VALUES))
        elif name == "hour_bucket":
            lut = np.zeros(24, dtype=np.int64)
            for i, (a, b) in enumerate(HOUR_BUCKETS.values()):
                lut[a:b] = i
            v = pd.Categorical.from_codes(lut[(self.t % NS_PER_DAY) // (3600 * 10**9)],
                                          categories=list(HOUR_BUCKETS))
        else:
            raise KeyError(name)
        self._cache[name] = v
        return v

    def numeric(self, name: str) -> np.ndarray:
        key = f"#num:{name}"
        if key not in self._cache:
            v = self.raw(name)
            if isinstance(v, pd.Categorical) or v.dtype.kind not in "iufb":
                try:
                    v = pd.to_numeric(pd.Series(v), errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
                except (ValueError, TypeError) as e:
                    raise TypeError(f"column {name!r} must be numeric for this aggregation: {e}") from None
            self._cache[key] = np.asarray(v, dtype=np.float64)
        return self._cache[key]

    def factorized(self, name: str) -> tuple[np.ndarray, pd.Index]:
        """(codes, uniques): codes -1 for nulls."""
        if name not in self._fact:
            v = self.raw(name)
            if isinstance(v, pd.Categorical):
                self._fact[name] = (np.asarray(v.codes, dtype=np.int64), pd.Index(v.categories))
            else:
                codes, uniq = pd.factorize(v, sort=False)
                self._fact[name] = (codes.astype(np.int64, copy=False), pd.Index(uniq))
        return self._fact[name]

    def notnull(self, name: str) -> np.ndarray:
        v = self.raw(name)
        if isinstance(v, pd.Categorical):
            return np.asarray(v.codes) >= 0
        if v.dtype.kind in "fc":
            return ~np.isnan(v)
        if v.dtype.kind in "iub":
            return np.ones(len(v), dtype=bool)
        return self.factorized(name)[0] >= 0

    def condition(self, col: str, op: str, value: Any) -> np.ndarray:
        key = f"#cond:{col}:{op}:{value!r}"
        if key in self._cache:
            return self._cache[key]
        if op == "notnull":
            m = self.notnull(col)
        elif op == "isnull":
            m = ~self.notnull(col)
        elif op in ("==", "!=", "in", "not in"):
            vals = value if op in ("in", "not in") else (value,)
            raw = self.raw(col)
            if not isinstance(raw, pd.Categorical) and raw.dtype.kind in "iufb":
                hit = np.isin(raw, np.asarray(vals))
            else:
                codes, uniq = self.factorized(col)
                pos = uniq.get_indexer(pd.Index(list(vals)))
                hit = np.isin(codes, pos[pos >= 0])
            m = hit if op in ("==", "in") else (self.notnull(col) & ~hit)
        else:
            v = self.numeric(col) if col not in self.df.columns or self.df[col].dtype.kind in "iufb" else None
            if v is None:  # ordered comparison on non-numeric values
                s = pd.Series(self.raw(col))
                ok = s.notna().to_numpy()
                m = np.zeros(self.n, dtype=bool)
                sv = s[ok]
                m[ok] = {">": sv > value, ">=": sv >= value, "<": sv < value, "<=": sv <= value}[op].to_numpy()
            else:
                with np.errstate(invalid="ignore"):
                    m = {">": v > value, ">=": v >= value, "<": v < value, "<=": v <= value}[op]
        self._cache[key] = m
        return m

    def stream_mask(self, stream: Stream) -> np.ndarray:
        m = np.ones(self.n, dtype=bool)
        for col, op, value in stream.where or ():
            m &= self.condition(col, op, value)
        if stream.column:
            m &= self.notnull(stream.column)
        return m


# --------------------------------------------------------------------------- compute_tile


def events_for_day(events: pd.DataFrame, day: Any) -> pd.DataFrame:
    """The events with ``day 00:00 <= ts < day+1 00:00`` (UTC)."""
    t = ts_ns(events["ts"])
    m = (t >= day_start(day).value) & (t < cutoff(day).value)
    return events.loc[m]


def compute_tile(events: pd.DataFrame, group: FeatureGroup, day: Any) -> pd.DataFrame:
    """Per-entity partial aggregates of the events of one day (UTC ``[D, D+1)``).

    Events outside the day are ignored (filtered, not an error), as are events with a null
    key. Streams whose columns are missing are skipped: their tile columns are absent.
    """
    day = day_key(day)
    start, end = day_start(day).value, cutoff(day).value
    keys = list(group.keys)
    if "ts" not in events.columns:
        raise KeyError("events need a 'ts' column")
    if any(k not in events.columns for k in keys):
        # e.g. a brand group without enrichment: nothing can be keyed
        return empty_tile(group, ["asof", "event__n"])
    t_all = ts_ns(events["ts"])
    m = (t_all >= start) & (t_all < end)
    for k in keys:
        m &= events[k].notna().to_numpy()
    rows = None if m.all() else np.flatnonzero(m)
    t = t_all if rows is None else t_all[rows]
    ev = _Events(events, rows, t)
    key_arrays = {}
    for k in keys:
        arr = events[k].to_numpy() if isinstance(events[k].dtype, np.dtype) else events[k].array
        key_arrays[k] = arr if rows is None else arr[rows]
    codes, uniq = factorize_keys(key_arrays, keys)
    g = len(uniq)
    out: dict[str, Any] = {}
    out["asof"] = np.full(g, end, dtype=np.int64)
    out["event__n"] = np.bincount(codes, minlength=g).astype(np.int64)
    ema_hl = _ema_half_lives(group)
    categories = group.share_categories()

    for label, (stream, stats) in group.stream_stats().items():
        if not all(ev.has(c) for c in stream.inputs):
            continue  # optional column missing: skip (documented)
        mask = ev.stream_mask(stream)
        c = codes[mask]
        cnt = np.bincount(c, minlength=g).astype(np.int64)
        empty = cnt == 0
        x = ev.numeric(stream.column)[mask] if stream.column and any(
            s in stats for s in ("sum", "m2", "min", "max", "kll")) else None
        if "m2" in stats:
            _, total, m2 = welford_groups(c, x, g)
        else:
            total = m2 = None
        tt = None
        for st in stats:
            col = stream.col(st)
            if st == "n":
                out[col] = cnt
            elif st == "sum":
                out[col] = total if total is not None else np.bincount(c, weights=x, minlength=g)
            elif st == "m2":
                out[col] = m2
            elif st in ("min", "max"):
                acc = np.full(g, np.inf if st == "min" else -np.inf)
                (np.minimum if st == "min" else np.maximum).at(acc, c, x)
                acc[empty] = np.nan
                out[col] = acc
            elif st in TS_STATS:
                tt = t[mask] if tt is None else tt
                acc = np.full(g, np.iinfo(np.int64).max if st == "first_ts" else NAT, dtype=np.int64)
                (np.minimum if st == "first_ts" else np.maximum).at(acc, c, tt)
                acc[empty] = NAT
                out[col] = acc
            elif st == "last":
                tt = t[mask] if tt is None else tt
                out[col] = _last_values(ev, stream.column, mask, c, tt, g)
            elif st == "hll":
                vc, uniq_v = ev.factorized(stream.column)
                out[col] = sketches.hll_by_group(c, vc[mask], g, value_uniques=uniq_v)
            elif st == "kll":
                out[col] = sketches.kll_by_group(c, x, g)
            elif st == "active":
                out[col] = (cnt > 0).astype(np.int64)
            elif st.startswith("cnt_"):
                continue  # filled below, all categories at once
            elif st.startswith("ema_") or st.startswith("emaw_"):
                if st.startswith("emaw_"):
                    continue  # computed with its ema_ column
                tt = t[mask] if tt is None else tt
                xv = None if stream.column is None else ev.numeric(stream.column)[mask]
                S, W = ema_partial(c, tt, xv, end, ema_hl[col], g)
                out[col] = S
                wcol = stream.col("emaw" + st[3:])
                if wcol in ema_hl and _stat(wcol) in stats:
                    out[wcol] = W
        cats = categories.get(label)
        if cats:
            vc, uniq_v = ev.factorized(stream.column)
            pos = uniq_v.get_indexer(pd.Index(list(cats)))
            lut = np.full(len(uniq_v) + 1, -1, dtype=np.int64)  # last slot: null code -1
            k = len(cats)
            lut[pos[pos >= 0]] = np.flatnonzero(pos >= 0)
            idx = lut[vc[mask]]
            ok = idx >= 0
            counts = np.bincount(c[ok] * k + idx[ok], minlength=g * k).reshape(g, k)
            for j, cat in enumerate(cats):
                out[stream.col(f"cnt_{_slug(cat)}")] = counts[:, j].astype(np.int64)

    tile = uniq.copy()
    for col in group.tile_columns:
        if col in out:
            v = out[col]
            tile[col] = to_utc(v) if (col == "asof" or _stat(col) in TS_STATS) else v
    return tile.sort_values(keys, ignore_index=True, kind="mergesort")


def _last_values(ev: _Events, column: str, mask: np.ndarray, c: np.ndarray, tt: np.ndarray, g: int) -> np.ndarray:
    """Value at the greatest (ts, value) per group."""
    tmax = np.full(g, NAT, dtype=np.int64)
    np.maximum.at(tmax, c, tt)
    tie = tt == tmax[c]
    raw = ev.raw(column)
    if not isinstance(raw, pd.Categorical) and raw.dtype.kind in "iufb":
        x = ev.numeric(column)[mask]
        acc = np.full(g, -np.inf)
        np.maximum.at(acc, c[tie], x[tie])
        acc[tmax == NAT] = np.nan
        return acc
    vc, uniq = ev.factorized(column)
    order = np.argsort(np.asarray(uniq, dtype=object), kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    r = rank[vc[mask][tie]]
    acc = np.full(g, -1, dtype=np.int64)
    np.maximum.at(acc, c[tie], r)
    out = np.full(g, None, dtype=object)
    has = acc >= 0
    out[has] = np.asarray(uniq, dtype=object)[order[acc[has]]]
    return out


# --------------------------------------------------------------------------- merge_tiles


def merge_tiles(tiles: Iterable[pd.DataFrame | None], group: FeatureGroup, hll_estimates: bool = False) -> pd.DataFrame:
    """Merge tiles (any days, any grouping): one row per entity, rules in the module doc.

    Associative and commutative; ``None`` entries are skipped. Columns absent from some
    tiles count as "no data" there; unknown columns (e.g. a partition column) are dropped.
    ``hll_estimates``: distinct-count columns hold the unions' estimates (float64) instead of
    the union sketches — the same numbers the features would compute from them, for a
    frame that is only turned into features (not merged again, not stored).
    """
    keys = list(group.keys)
    parts = [t for t in tiles if t is not None]
    if not parts:
        return empty_tile(group)
    present = [c for c in group.tile_columns if any(c in p.columns for p in parts)]
    nonempty = [p for p in parts if len(p)]
    if len(nonempty) <= 1:
        base = nonempty[0] if nonempty else parts[0]
        res = base.reindex(columns=keys + present)
        return _fix_dtypes(res, group)
    # Column-wise numpy concatenation: cheaper than pd.concat for wide object (sketch) columns.
    codes, uniq = factorize_keys({k: pd.concat([p[k] for p in nonempty], ignore_index=True) for k in keys}, keys)
    g = len(uniq)
    cache: dict[tuple[str, str], np.ndarray] = {}

    def col_of(col: str, kind: str) -> np.ndarray:
        if (col, kind) not in cache:
            arrays = []
            for p in nonempty:
                if col not in p.columns:
                    fill = {"ts": NAT, "num": np.nan, "obj": None}[kind]
                    arrays.append(np.full(len(p), fill, dtype={"ts": np.int64, "num": np.float64,
                                                                "obj": object}[kind]))
                elif kind == "ts":
                    arrays.append(ts_ns(p[col]))
                elif kind == "num":
                    arrays.append(p[col].to_numpy(dtype=np.float64, na_value=np.nan))
                else:
                    arrays.append(p[col].to_numpy(dtype=object))
            cache[(col, kind)] = np.concatenate(arrays)
        return cache[(col, kind)]

    def num(col: str) -> np.ndarray:
        return col_of(col, "num")

    out: dict[str, Any] = {}
    asof = col_of("asof", "ts") if "asof" in present else np.full(len(codes), NAT, dtype=np.int64)
    ref = asof.max()
    out["asof"] = np.full(g, ref, dtype=np.int64)
    ema_hl = _ema_half_lives(group)
    for col in present:
        st = _stat(col)
        if col == "asof":
            continue
        if st in ("n", "active") or st.startswith("cnt_") or col == "event__n":
            out[col] = np.rint(np.bincount(codes, weights=np.nan_to_num(num(col)), minlength=g)).astype(np.int64)
        elif st == "sum":
            out[col] = np.bincount(codes, weights=np.nan_to_num(num(col)), minlength=g)
        elif st in ("min", "max"):
            v = num(col)
            ok = ~np.isnan(v)
            acc = np.full(g, np.inf if st == "min" else -np.inf)
            (np.minimum if st == "min" else np.maximum).at(acc, codes[ok], v[ok])
            acc[np.isinf(acc) & (np.bincount(codes[ok], minlength=g) == 0)] = np.nan
            out[col] = acc
        elif st in TS_STATS:
            v = col_of(col, "ts")
            if st == "first_ts":
                v = np.where(v == NAT, np.iinfo(np.int64).max, v)
                acc = np.full(g, np.iinfo(np.int64).max, dtype=np.int64)
                np.minimum.at(acc, codes, v)
                acc[acc == np.iinfo(np.int64).max] = NAT
            else:
                acc = np.full(g, NAT, dtype=np.int64)
                np.maximum.at(acc, codes, v)
            out[col] = acc
        elif st == "hll":
            merge = sketches.hll_union_estimates if hll_estimates else sketches.hll_merge_by_group
            out[col] = merge(codes, col_of(col, "obj"), g)
        elif st == "kll":
            out[col] = sketches.kll_merge_by_group(codes, col_of(col, "obj"), g)
        elif st.startswith("ema_") or st.startswith("emaw_"):
            f = decay_factor(asof, ref, ema_hl[col]) if col in ema_hl else 1.0
            out[col] = np.bincount(codes, weights=np.nan_to_num(num(col)) * f, minlength=g)
    for col in present:
        st = _stat(col)
        if st == "m2":
            label = col.split("__", 1)[0]
            _, _, out[col] = welford_merge_rows(codes, num(f"{label}__n"), num(f"{label}__sum"), num(col), g)
        elif st == "last":
            label = col.split("__", 1)[0]
            lt = col_of(f"{label}__last_ts", "ts")
            tmax = out[f"{label}__last_ts"]
            tie = (lt == tmax[codes]) & (lt != NAT)
            numeric = all(p[col].dtype.kind in "iuf" for p in nonempty if col in p.columns)
            vals = pd.Series(num(col)[tie] if numeric else col_of(col, "obj")[tie])
            out[col] = vals.groupby(codes[tie]).max().reindex(range(g)).to_numpy()
    res = uniq
    for col in present:
        v = out[col]
        res[col] = to_utc(v) if (col == "asof" or _stat(col) in TS_STATS) else v
    res = res.sort_values(keys, ignore_index=True, kind="mergesort")
    return _fix_dtypes(res, group)


def _fix_dtypes(df: pd.DataFrame, group: FeatureGroup) -> pd.DataFrame:
    dt = tile_dtypes(group)
    for col in df.columns:
        want = dt.get(col)
        if want == "int64" and df[col].dtype != np.int64:
            df[col] = df[col].fillna(0).astype(np.int64)
        elif want == "float64" and df[col].dtype != np.float64:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
        elif want and want.startswith("datetime") and str(df[col].dtype) != want:
            df[col] = pd.to_datetime(df[col], utc=True).dt.as_unit("ns")
    return df


def state_from_tiles(tiles: Iterable[pd.DataFrame | None], group: FeatureGroup) -> pd.DataFrame:
    """All-time state from any set of tiles at once (same as carrying it day by day)."""
    cols = group.tile_columns_for(ALL_TIME) if group.has_all_time else ("asof", "event__n")
    st = merge_tiles([_select(t, group, cols) for t in tiles if t is not None], group)
    return _select(st, group, cols)


def advance_state(prev_state: pd.DataFrame | None, tile: pd.DataFrame | None, group: FeatureGroup,
                  day: Any) -> pd.DataFrame:
    """All-time state as of ``cutoff(day)``: the state of ``day - 1`` merged with the tile of ``day``."""
    day = day_key(day)
    cols = group.tile_columns_for(ALL_TIME)
    if prev_state is not None and len(prev_state) and "asof" in prev_state:
        latest = prev_state["asof"].max()
        if latest > day_start(day):
            raise ValueError(
                f"{group.name}: prev_state is as of {latest}, after the start of {day}; "
                "pass the state returned for the previous day"
            )
    parts = [_select(prev_state, group, cols), _select(tile, group, cols)]
    return _select(merge_tiles(parts, group), group, cols)


#: Tile statistics whose merge gives bit-identical results for any grouping of the
#: tiles as long as their order is kept (integer sums, min/max, timestamps, ``last``;
#: float ``sum`` too: ``np.bincount`` adds in input order, so one merge of tiles
#: D1..Dk equals carrying the state day by day; ``hll``: a set union / register max,
#: canonical bytes). Not: ``m2`` (Chan's update), EMA (decay per step), KLL
#: (compactions depend on the grouping).
ORDER_EXACT_STATS = ("n", "sum", "min", "max", "first_ts", "last_ts", "last", "active", "hll")


def merge_is_exact(group: FeatureGroup, cols: Iterable[str]) -> bool:
    """True when merging tiles restricted to ``cols`` at once equals merging them one at a time."""
    for c in cols:
        if c in group.keys or c in ("asof", "event__n"):
            continue
        st = _stat(c)
        if st not in ORDER_EXACT_STATS and not st.startswith("cnt_"):
            return False
    return True


def _select(tile: pd.DataFrame | None, group: FeatureGroup, cols: Iterable[str]) -> pd.DataFrame | None:
    if tile is None:
        return None
    want = list(group.keys) + [c for c in cols if c in tile.columns and c not in group.keys]
    return tile if list(tile.columns) == want else tile[want]


# --------------------------------------------------------------------------- features


def features_for_day(
    tiles_by_day: Mapping[Any, pd.DataFrame],
    prev_state: pd.DataFrame | None,
    group: FeatureGroup,
    day: Any,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Features of partition ``day`` (as of ``cutoff(day)``) and the new all-time state.

    ``tiles_by_day`` maps day keys to tiles; the tiles of days ``D-w+1 .. D`` are used
    for a window of ``w`` days (missing days = no events; other days are ignored).
    ``prev_state`` is the state returned for ``D-1`` (or ``state_from_tiles`` of every
    tile before ``D``; None = nothing before). Returns ``(features, new_state)``, the
    state being None for groups without all-time features. Rows: every entity of the
    new state when the group has all-time features, else every entity with an event in
    the largest window; columns: keys, ``cutoff`` (``D+1 00:00 UTC``), features.
    """
    day = day_key(day)
    tiles = {day_key(k): v for k, v in tiles_by_day.items() if v is not None}

    new_state = advance_state(prev_state, tiles.get(day), group, day) if group.has_all_time else None

    finite = [w for w in group.windows if not w.is_all_time]
    frames: dict[Window, pd.DataFrame | None] = {}
    prev_frame, prev_days = None, 0
    for i, w in enumerate(finite):
        # nested windows: the 30d merge starts from the 7d merge plus days D-29 .. D-7
        needed = list(dict.fromkeys(c for w2 in finite[i:] for c in group.tile_columns_for(w2)))
        new_days = [shift_day(day, -j) for j in range(prev_days, w.n_days)]
        parts = ([] if prev_frame is None else [_select(prev_frame, group, needed)]) + \
            [_select(tiles[d], group, needed) for d in new_days if d in tiles]
        frame = merge_tiles(parts, group) if parts else None  # None: no tile in the window
        frames[w] = frame
        prev_frame, prev_days = frame, w.n_days

    return features_from_frames(frames, new_state, group, day), new_state


def features_from_frames(
    frames: Mapping[Window, pd.DataFrame | None],
    new_state: pd.DataFrame | None,
    group: FeatureGroup,
    day: Any,
) -> pd.DataFrame:
    """Features of partition ``day`` from pre-merged window frames (the shared finalize step).

    ``frames`` maps every finite window of the group to the merge of the tiles of days
    ``D-w+1 .. D`` (None when no tile of the window exists), however it was obtained
    (nested merges in ``features_for_day``, sliding prefix/suffix aggregates in
    ``pipeline``); ``new_state`` is the all-time state as of ``cutoff(day)`` (None for
    groups without all-time features). A frame may carry extra columns (ignored).
    """
    day = day_key(day)
    t_cut = cutoff(day)
    keys = list(group.keys)
    finite = [w for w in group.windows if not w.is_all_time]
    frames = {w: frames.get(w) for w in finite}
    if group.has_all_time:
        frames[ALL_TIME] = new_state
    if group.has_all_time:
        universe = new_state[keys]
    elif finite and frames[finite[-1]] is not None:
        universe = frames[finite[-1]][keys]
    else:
        universe = empty_tile(group, [])[keys]
    universe = universe.reset_index(drop=True)

    values: dict[str, Any] = {}
    n = len(universe)
    for w, frame in frames.items():
        defs = [f for f in group.features() if f.window == w and f.kind != "ratio"]
        if defs:
            values.update(_window_features(defs, frame, universe, group, w, t_cut))
    for f in group.features():
        if f.kind == "ratio":
            num, den = (np.asarray(values[r], dtype=np.float64) for r in f.param)
            with np.errstate(invalid="ignore", divide="ignore"):
                values[f.name] = np.where((den != 0) & ~np.isnan(den), num / np.where(den == 0, 1.0, den), np.nan)

    out = universe.copy()
    out["cutoff"] = to_utc(np.full(n, t_cut.value, dtype=np.int64))
    feats = {}
    for f in group.features():
        v = values[f.name]
        feats[f.name] = v if f.dtype == "object" else np.asarray(v, dtype=np.float64)
    out = pd.concat([out, pd.DataFrame(feats, index=out.index)], axis=1) if feats else out
    for f in group.features():
        if f.dtype == "object" and out[f.name].dtype != object:
            if pd.api.types.is_float_dtype(out[f.name]) and out[f.name].isna().all():
                out[f.name] = out[f.name].astype(object)
    return out


_ZERO_FILL = {"count", "sum", "distinct", "active_days", "frequency"}


def _fill_value(f: FeatureDef) -> float:
    if f.kind in _ZERO_FILL:
        return 0.0
    if f.kind == "ema" and f.source.mode in ("sum", "rate"):
        return 0.0
    return math.nan


def _window_features(defs: list[FeatureDef], frame: pd.DataFrame | None, universe: pd.DataFrame,
                     group: FeatureGroup, w: Window, t_cut: pd.Timestamp) -> dict:
    """Feature arrays (universe order) of one window.

    ``frame`` is the merge of the window's tiles (the state for ALL_TIME), None when no
    tile of the window exists (no events: fill values). A feature whose tile columns are
    absent from a frame that exists had its input column missing: all NaN.
    """
    n = len(universe)
    out: dict[str, Any] = {}
    if frame is not None and len(frame):
        keys = list(group.keys)
        aligned = frame if w.is_all_time else universe.merge(frame, on=keys, how="left", sort=False)
    else:
        aligned = None
    cols = set(frame.columns) if frame is not None else set()
    for f in defs:
        if frame is not None and not all(c in cols for c in _needed_cols(f)):
            out[f.name] = np.full(n, np.nan)
        elif aligned is None:
            fill = _fill_value(f)
            out[f.name] = np.full(n, None if (f.dtype == "object" and math.isnan(fill)) else fill,
                                  dtype=object if f.dtype == "object" else np.float64)
        else:
            out[f.name] = _feature_values(f, aligned, w, t_cut)
    return out


def _needed_cols(f: FeatureDef) -> list[str]:
    """Tile columns a feature reads (all must exist in a frame for the feature to be computed)."""
    s, k = f.stream, f.kind
    if k == "count":
        return [s.col("n")]
    if k == "share":
        return [s.col("n")] + [s.col(f"cnt_{_slug(c)}") for c in f.source.categories]
    if k == "ema":
        stat = f.source.ema_stat
        return [s.col(stat)] + ([s.col("emaw" + stat[3:])] if f.source.mode == "mean" else [])
    stats = {
        "sum": ("n", "sum"), "mean": ("n", "sum"), "std": ("n", "sum", "m2"), "min": ("min",), "max": ("max",),
        "last": ("last", "last_ts"), "distinct": ("hll",), "quantile": ("kll",), "active_days": ("active",),
        "frequency": ("active",), "recency": ("last_ts",),
    }[k]
    return [s.col(x) for x in stats]


def _feature_values(f: FeatureDef, a: pd.DataFrame, w: Window, t_cut: pd.Timestamp) -> np.ndarray:
    s, k = f.stream, f.kind

    def num(col: str, fill: float = np.nan) -> np.ndarray:
        v = a[col].to_numpy(dtype=np.float64, na_value=np.nan)
        return v if math.isnan(fill) else np.where(np.isnan(v), fill, v)

    with np.errstate(invalid="ignore", divide="ignore"):
        if k == "count":
            return num(s.col("n"), 0.0)
        if k == "sum":
            return num(s.col("sum"), 0.0)
        if k == "mean":
            nn = num(s.col("n"), 0.0)
            return np.where(nn > 0, num(s.col("sum")) / np.where(nn > 0, nn, 1.0), np.nan)
        if k == "std":
            return np.sqrt(sample_variance(num(s.col("n"), 0.0), num(s.col("m2"), 0.0)))
        if k in ("min", "max"):
            return num(s.col(k))
        if k == "last":
            v = a[s.col("last")]
            return v.to_numpy(dtype=np.float64, na_value=np.nan) if f.dtype == "float64" else \
                v.astype(object).where(v.notna(), None).to_numpy()
        if k == "distinct":
            v = a[s.col("hll")]
            if v.dtype.kind == "f":  # estimates already (merge_tiles(hll_estimates=True)); no sketch = 0
                return np.rint(np.nan_to_num(v.to_numpy(dtype=np.float64), nan=0.0))
            return np.rint(sketches.hll_estimates(v.to_numpy(dtype=object)))
        if k == "quantile":
            return sketches.kll_quantiles_many(a[s.col("kll")].to_numpy(dtype=object), [f.param])[:, 0]
        if k == "share":
            nn = num(s.col("n"), 0.0)
            if f.param == OTHER:
                hit = sum(num(s.col(f"cnt_{_slug(c)}"), 0.0) for c in f.source.categories)
                cnt = nn - hit
            else:
                cnt = num(s.col(f"cnt_{_slug(f.param)}"), 0.0)
            return np.where(nn > 0, cnt / np.where(nn > 0, nn, 1.0), np.nan)
        if k == "active_days":
            return num(s.col("active"), 0.0)
        if k == "frequency":
            return num(s.col("active"), 0.0) / w.n_days
        if k == "recency":
            lt = ts_ns(a[s.col("last_ts")])
            return np.where(lt == NAT, np.nan, (t_cut.value - lt) / 1e9)
        if k == "ema":
            d = f.source
            hl_ns = int(d.half_life.total_seconds() * 1e9)
            asof = ts_ns(a["asof"])
            fac = np.where(asof == NAT, 0.0, decay_factor(np.where(asof == NAT, t_cut.value, asof), t_cut.value, hl_ns))
            S = num(s.col(d.ema_stat), 0.0) * fac
            W = num(s.col("emaw" + d.ema_stat[3:]), 0.0) * fac if d.mode == "mean" else None
            return ema_value(S, W, d.mode, hl_ns)
    raise ValueError(f"unknown feature kind {k}")


# --------------------------------------------------------------------------- convenience


def window_days(group: FeatureGroup, day: Any) -> list[str]:
    """Day keys whose tiles the windows of ``day`` read: ``D - max_window + 1 .. D`` (ascending).

    With all-time features the previous day's state is needed as well (not listed here).
    """
    n = max(group.max_window_days, 1)
    return day_range(shift_day(day, -(n - 1)), day_key(day))



def features_from_events(
    events: pd.DataFrame,
    group: FeatureGroup,
    days: Iterable[Any],
    prev_state: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Run tiles + ``features_for_day`` day by day over ``days`` (ascending) from raw events.

    Tiles are computed for the days the windows reach back to; with ``prev_state=None``
    the all-time state starts from the tiles of every event day before the first day.
    Returns the concatenated features and the final state. Handy for tests, benchmarks
    and backfills in one process.
    """
    days = sorted(day_key(d) for d in days)
    if not days:
        return empty_tile(group, []), prev_state
    t = ts_ns(events["ts"])
    first_event_day = day_key(to_utc(int(t.min()))) if len(t) else days[0]
    reach = shift_day(days[0], -max(group.max_window_days - 1, 0))
    start = min(reach, first_event_day) if prev_state is None and group.has_all_time else reach
    tile_days = day_range(start, days[-1]) if start <= days[-1] else days
    day_no = t // NS_PER_DAY
    wanted = set(tile_days)
    tiles = {}
    for dn in np.unique(day_no).tolist():
        d = day_key(to_utc(dn * NS_PER_DAY))
        if d in wanted:
            tiles[d] = compute_tile(events.iloc[np.flatnonzero(day_no == dn)], group, d)
    state = prev_state
    if state is None and group.has_all_time:
        before = [tl for d, tl in tiles.items() if d < days[0]]
        state = state_from_tiles(before, group) if before else None
    out = []
    for d in days:
        f, st = features_for_day(tiles, state, group, d)
        out.append(f)
        state = st if group.has_all_time else None
    return pd.concat(out, ignore_index=True), state
