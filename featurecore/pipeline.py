"""Dask-task entry points for feature groups: read the store, call the pure engine, write the store.

Each function runs on a Dask worker and returns only small statistics, so the
Dagster process never holds feature data. Memory is bounded by one day of raw
events (tiles) or by a group's largest window of tiles plus its all-time state
(features), however many days a backfill covers.
"""

from __future__ import annotations

import math
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from .ingest import read_snapshot
from .spec import ALL_TIME, FeatureGroup
from .store import INTERNAL, partition_dir, partition_exists, read_partition, write_partition
from .tiles import (
    _select, advance_state, compute_tile, features_from_frames, merge_is_exact, merge_tiles,
)
from .timeutil import day_range, shift_day, to_day

TILES_SUFFIX = "_tiles"
STATE_SUFFIX = "__state"


def tiles_asset(group: FeatureGroup) -> str:
    """Store name of a group's tiles."""
    return group.name + TILES_SUFFIX


def state_asset(group: FeatureGroup) -> str:
    """Store name of a group's carried all-time state (internal, not a Dagster asset)."""
    return group.name + STATE_SUFFIX


def load_events(store_root: str, day: str, groups: list[FeatureGroup]) -> pd.DataFrame:
    """One day of raw_events with only the columns the groups read, enriched with product attributes."""
    need = {c for g in groups for c in g.required_columns} | {"ts", "event_type"}
    enrich = sorted({c for g in groups for c in g.enrich})
    raw_cols = {c for c in need if c not in enrich} | ({"product_id"} if enrich else set())
    # read only the columns the groups use (raw_events has wide string columns)
    events = read_partition(store_root, "raw_events", day, columns=sorted(raw_cols))
    if enrich:
        products = read_snapshot(store_root, "products")
        cols = ["product_id", *[c for c in enrich if c in products.columns]]
        events = events.merge(products[cols], on="product_id", how="left", validate="many_to_one")
    return events


def tile_day(day: str, groups: list[FeatureGroup], store_root: str) -> dict:
    """Compute and write the tiles of every group for one day (raw events are read once)."""
    t0 = time.perf_counter()
    events = load_events(store_root, day, groups)
    read_s = time.perf_counter() - t0
    out = {"day": day, "events": len(events), "read_seconds": read_s, "groups": {}}
    for g in groups:
        t1 = time.perf_counter()
        tile = compute_tile(events, g, day)
        w = write_partition(tile, store_root, tiles_asset(g), day, compression=INTERNAL)
        invalidate_window_artefacts(store_root, g, day)
        invalidate_state_from(store_root, g, day)
        out["groups"][g.name] = {"rows": len(tile), "bytes": w["bytes"], "seconds": time.perf_counter() - t1}
    return out


class _TileCache:
    """A group's tiles read for the day being computed (and a block being folded); `_Sliding.advance`
    drops the days already computed, so a long range holds no more tiles than a short one."""

    def __init__(self, store_root: str, group: FeatureGroup):
        self.store_root, self.group = store_root, group
        self.cache: OrderedDict[str, pd.DataFrame | None] = OrderedDict()

    def get(self, day: str) -> pd.DataFrame | None:
        if day not in self.cache:
            name = tiles_asset(self.group)
            self.cache[day] = read_partition(self.store_root, name, day) if partition_exists(self.store_root, name, day) else None
        return self.cache[day]

    def prune(self, before: str) -> None:
        """Forget tiles of days before `before`."""
        for old in [d for d in self.cache if d < before]:
            del self.cache[old]


# --------------------------------------------------------------------------- sliding windows
#
# Windows of w > 1 days use the two-stacks / block decomposition for mergeable,
# non-invertible aggregates. Days are cut into blocks of w days aligned on the epoch
# (block_start(D) = D - (D mod w), so every run uses the same blocks). Per day
#   P(D) = merge(tiles block_start(D) .. D)            prefix: P(D-1) (+) tile(D)
# and, for the days d of a block, computed once in reverse when a later window needs it,
#   S(d) = merge(tiles block_end(d) .. d)              suffix: S(d+1) (+) tile(d)
# so window(D) = S(D-w+1) (+) P(D), or P(D) when D-w+1 is a block start: O(1) merges per
# day. P and S are stored as internal artefacts ``<group>__win<w>_prefix`` / ``_suffix``
# (best-effort caches: missing or unreadable ones are rebuilt from tiles, and
# ``tile_day`` deletes the ones a rewritten tile makes stale). Because the blocks and
# the fold orders are fixed, a range run and day-by-day runs give identical frames.
#
# Both folds are left folds (the accumulated side first), so where the window's columns
# merge exactly (``tiles.merge_is_exact``) one merge of the tiles in fold order gives the
# same bytes as the fold. A cold run (nothing stored for the day before it, e.g. a chunk
# of a backfill) uses that to skip the suffixes only later runs would read: one merge of
# the tiles from its last window start to the block end, then the fold back to its first
# start. A warm run folds the whole block and stores every suffix, so the next days
# read theirs (a daily run then costs a read, not a merge of many tiles).

_NONE_MARK = "__no_tiles__"


def _epoch_day(day: str) -> int:
    return to_day(day).toordinal()


def block_start(day: str, n: int) -> str:
    """First day of the n-day block (aligned on the proleptic ordinal) containing `day`."""
    return shift_day(day, -(_epoch_day(day) % n))


def window_artefact(group: FeatureGroup, n: int, kind: str) -> str:
    """Store name of a group's prefix/suffix aggregates for n-day windows (internal)."""
    return f"{group.name}__win{n}_{kind}"


def _sliding_sizes(group: FeatureGroup) -> list[int]:
    return sorted({w.n_days for w in group.windows if not w.is_all_time and w.n_days > 1})


def internal_assets(group: FeatureGroup) -> list[str]:
    """Store names of a group's internal artefacts: the carried state and the window prefix/suffix aggregates."""
    return [state_asset(group)] + [window_artefact(group, n, kind) for n in _sliding_sizes(group) for kind in ("prefix", "suffix")]


def invalidate_window_artefacts(store_root: str, group: FeatureGroup, day: str) -> None:
    """Delete the prefix/suffix aggregates that include the tile of `day` (it was rewritten)."""
    for n in _sliding_sizes(group):
        bs = block_start(day, n)
        be = shift_day(bs, n - 1)
        for kind, days in (("prefix", day_range(day, be)), ("suffix", day_range(bs, day))):
            name = window_artefact(group, n, kind)
            if not (Path(store_root) / name).is_dir():
                continue
            for d in days:
                p = partition_dir(store_root, name, d)
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)


def invalidate_state_from(store_root: str, group: FeatureGroup, day: str) -> None:
    """Delete the carried all-time state of `day` and later days: it includes the rewritten tile.

    A late file re-tiles an old day; the next feature run then rebuilds its starting state
    from tiles instead of carrying a state that misses the late events forever.
    """
    folder = Path(store_root) / state_asset(group)
    if not folder.is_dir():
        return
    cut = f"date={to_day(day).isoformat()}"
    for p in folder.iterdir():
        if p.name.startswith("date=") and p.name >= cut:
            shutil.rmtree(p, ignore_errors=True)


def _read_artefact(store_root: str, name: str, day: str):
    """(found, frame or None)."""
    if not partition_exists(store_root, name, day):
        return False, None
    try:
        df = read_partition(store_root, name, day)
    except Exception:  # being replaced by a concurrent writer: rebuild instead
        return False, None
    if _NONE_MARK in df.columns:
        return True, None
    return True, df


def _write_artefact(store_root: str, name: str, day: str, frame: pd.DataFrame | None) -> None:
    df = frame if frame is not None else pd.DataFrame({_NONE_MARK: pd.Series([], dtype="int8")})
    try:
        write_partition(df, store_root, name, day, compression=INTERNAL)
    except OSError:  # a concurrent writer of the same (identical) artefact won
        pass


def _merge_opt(parts: list[pd.DataFrame | None], group: FeatureGroup, hll_estimates: bool = False) -> pd.DataFrame | None:
    parts = [p for p in parts if p is not None]
    return merge_tiles(parts, group, hll_estimates=hll_estimates) if parts else None


class _Sliding:
    """Window frames of a group from tiles via prefix/suffix aggregates (see above)."""

    def __init__(self, store_root: str, group: FeatureGroup, tiles: _TileCache, last: str | None = None,
                 cold: bool = False):
        self.root, self.group, self.tiles = store_root, group, tiles
        self.last, self.cold = last, cold  # the run's last day; cold: build only the suffixes this run needs
        self.finite = [w for w in group.windows if not w.is_all_time]
        self.P: dict[int, dict[str, pd.DataFrame | None]] = {w.n_days: {} for w in self.finite}
        self.S: dict[int, dict[str, pd.DataFrame | None]] = {w.n_days: {} for w in self.finite}
        self.cols = {w.n_days: group.tile_columns_for(w) for w in self.finite}
        self.exact = {n: merge_is_exact(group, cols) for n, cols in self.cols.items()}
        self._new_suffix: set[tuple[int, str]] = set()
        self._stored_prefix: set[tuple[int, str]] = set()  # read from the store: persist need not rewrite them

    def _tile(self, n: int, day: str) -> pd.DataFrame | None:
        return _select(self.tiles.get(day), self.group, self.cols[n])

    def prefix(self, n: int, day: str) -> pd.DataFrame | None:
        cache = self.P[n]
        if day in cache:
            return cache[day]
        name = window_artefact(self.group, n, "prefix")
        bs = block_start(day, n)
        chain, d, base = [], day, None
        while True:
            if d in cache:
                base = cache[d]
                break
            found, fr = _read_artefact(self.root, name, d)
            if found:
                base = cache[d] = fr
                self._stored_prefix.add((n, d))
                break
            chain.append(d)
            if d == bs:
                break
            d = shift_day(d, -1)
        asc = chain[::-1]
        if asc and asc[0] == bs:
            base = None
        if len(asc) > 2 and self.exact[n]:
            # one merge of the tiles up to day-1 (identical to the fold for these columns:
            # tiles.merge_is_exact), then P(day) = P(day-1) (+) tile(day)
            base = cache[asc[-2]] = _merge_opt([base] + [self._tile(n, d) for d in asc[:-1]], self.group)
            asc = asc[-1:]
        for d in asc:
            base = cache[d] = _merge_opt([base, self._tile(n, d)], self.group)
        return cache[day]

    def suffix(self, n: int, day: str) -> pd.DataFrame | None:
        cache = self.S[n]
        if day in cache:
            return cache[day]
        name = window_artefact(self.group, n, "suffix")
        be = shift_day(block_start(day, n), n - 1)
        # the last window start of this run in this block: a cold exact run needs no later suffix
        top = be
        if self.cold and self.exact[n] and self.last is not None:
            top = max(day, min(be, shift_day(self.last, -(n - 1))))
        chain, d, base = [], day, None
        while True:
            if d in cache:
                base = cache[d]
                break
            found, fr = _read_artefact(self.root, name, d)
            if found:
                base = cache[d] = fr
                break
            if d == top and top != be:
                # S(top) in one merge of its tiles in fold order: the same bytes as the fold
                base = cache[d] = _merge_opt([self._tile(n, x) for x in day_range(top, be)[::-1]], self.group)
                self._new_suffix.add((n, d))
                break
            chain.append(d)
            if d == be:
                break
            d = shift_day(d, 1)
        # every S(d) of the chain is kept: later days of this run and later runs read them
        # (unlike prefixes, where only P(day - 1) is needed again)
        for d in reversed(chain):
            nxt = None if d == be else base
            base = cache[d] = _merge_opt([nxt, self._tile(n, d)], self.group)
            self._new_suffix.add((n, d))
        return cache[day]

    def frames(self, day: str) -> dict:
        """Window -> merge of the window's tiles (None: no tile in the window)."""
        out = {}
        for w in self.finite:
            n = w.n_days
            if n == 1:
                out[w] = _merge_opt([self._tile(1, day)], self.group)
                continue
            p = self.prefix(n, day)
            start = shift_day(day, -(n - 1))
            # S (+) P is only turned into features: its distinct counts are estimated, not re-serialized
            out[w] = p if start == block_start(day, n) else _merge_opt([self.suffix(n, start), p], self.group,
                                                                       hll_estimates=True)
        return out

    def advance(self, day: str) -> None:
        """Drop what days after `day` no longer need."""
        keep_from = shift_day(day, -1)  # P(day - 1) is persisted with P(day)
        for n in self.P:
            for d in [d for d in self.P[n] if d < keep_from]:
                del self.P[n][d]
            lo = shift_day(day, -(n - 1))  # S(lo) stays until persist (a re-run of the last day reads it)
            for d in [d for d in self.S[n] if d < lo]:
                del self.S[n][d]
        # later days need no tile up to `day` but in a suffix fold, once per block, read there
        self.tiles.prune(shift_day(day, 1))

    def persist(self, last: str) -> None:
        """Store what the next days need: P(last) and the suffixes of the days still in a window.

        P(last - 1) is stored too, so re-running the latest day (a late file, a retry)
        stays O(1) instead of re-folding its block from tiles.
        """
        for n in _sliding_sizes(self.group):
            for d in (shift_day(last, -1), last):
                if d in self.P[n] and (n, d) not in self._stored_prefix:
                    _write_artefact(self.root, window_artefact(self.group, n, "prefix"), d, self.P[n][d])
            lo = shift_day(last, -(n - 1))  # S(lo) too: re-running the last day (a late file, a retry) reads it
            for (m, d) in sorted(self._new_suffix):
                if m == n and d >= lo and d in self.S[n]:
                    _write_artefact(self.root, window_artefact(self.group, n, "suffix"), d, self.S[n][d])


def _all_time_cols(group: FeatureGroup) -> tuple[str, ...]:
    return group.tile_columns_for(ALL_TIME)


# Days of tiles merged at once when a starting state is rebuilt from tiles (bounds its memory).
REBUILD_BATCH_DAYS = 8


def _rebuild_state(store_root: str, group: FeatureGroup, before: str, start: str) -> pd.DataFrame | None:
    """All-time state as of the end of day `before`, from the stored state or from tiles.

    From tiles it is identical to carrying the state day by day: groups whose all-time
    columns merge exactly (``tiles.merge_is_exact``) merge ``REBUILD_BATCH_DAYS`` tiles at a
    time into the state; the others fold the tiles one by one; both in day order and
    restricted to the all-time columns.
    """
    if to_day(before) < to_day(start):
        return None
    if partition_exists(store_root, state_asset(group), before):
        try:
            return read_partition(store_root, state_asset(group), before)
        except FileNotFoundError:  # being replaced concurrently
            pass
    cols = _all_time_cols(group)
    name = tiles_asset(group)
    read_cols = list(group.keys) + [c for c in cols if c not in group.keys]
    # tiles are read and merged a few days at a time, so memory does not grow with the range;
    # merging [state, next tiles...] adds in day order, like one merge of them all (exact groups)
    step = REBUILD_BATCH_DAYS if merge_is_exact(group, cols) else 1
    state, batch = None, []
    for d in day_range(start, before):
        if partition_exists(store_root, name, d):
            batch.append(_select(read_partition(store_root, name, d, columns=read_cols), group, cols))
        if len(batch) == step or (d == before and batch):
            state = _select(merge_tiles(([] if state is None else [state]) + batch, group), group, cols)
            batch = []
    return state


# A chunk's start-up when nothing is stored for the day before it (all-time state and window
# prefix/suffix aggregates rebuilt from tiles) costs about as much as this many days of
# steady work (10M-event benchmark, in one process: ~1.0-1.4 s vs ~0.45 s a day).
CHUNK_STARTUP_DAYS = 3


def stored_start(store_root: str, group: FeatureGroup, day: str) -> bool:
    """True when the all-time state and window prefixes of the day before `day` are stored (a warm start)."""
    prev = shift_day(day, -1)
    if group.has_all_time and not partition_exists(store_root, state_asset(group), prev):
        return False
    return all(partition_exists(store_root, window_artefact(group, n, "prefix"), prev) for n in _sliding_sizes(group))


def plan_chunks(days: list[str], group: FeatureGroup, n_workers: int, concurrent: int = 1,
                store_root: str | None = None) -> list[list[str]]:
    """Split consecutive `days` into contiguous chunks that `features_range` can run in parallel.

    Every chunk rebuilds what it needs at its start from tiles (all-time state: merges of
    a few days of tiles, or a fold, of the all-time columns; window prefixes/suffixes: at
    most two windows of tiles), and the results are identical to one chain. The `concurrent` groups of a run
    share the workers. A chunk after the first always pays a start-up (about
    ``CHUNK_STARTUP_DAYS`` days of work); the first pays it too unless the day before the
    range is stored (``stored_start``, checked when `store_root` is given). So a cold
    range is split over every free worker, a warm one only when the split still ends
    sooner than carrying the stored state through the whole range.
    """
    if not days:
        return []
    slots = max(int(n_workers) // max(int(concurrent), 1), 1)
    n_days = len(days)
    warm = store_root is not None and stored_start(store_root, group, days[0])
    n = min(slots, n_days)
    if warm:
        # makespan with n chunks ~ S + ceil(L / n) days, against L days in one warm chain
        while n > 1 and CHUNK_STARTUP_DAYS + math.ceil(n_days / n) >= n_days:
            n -= 1
    size = math.ceil(n_days / max(n, 1))
    return [days[i: i + size] for i in range(0, n_days, size)]


def feature_stats(df: pd.DataFrame, group: FeatureGroup) -> dict:
    """Rows, entities and the null share of each feature of a feature partition."""
    names = [n for n in group.feature_names() if n in df.columns]
    nulls = df[names].isna().mean() if len(df) else pd.Series(np.nan, index=names)
    return {
        "rows": int(len(df)),
        "entities": int(len(df.drop_duplicates(list(group.keys)))) if len(df) else 0,
        "null_share": {k: round(float(v), 4) for k, v in nulls.items()},
    }


def features_range(days: list[str], group: FeatureGroup, store_root: str, start: str) -> list[dict]:
    """Compute feature partitions for consecutive `days`, carrying all-time state day to day.

    Windows come from the sliding prefix/suffix aggregates (O(1) merges per day, also
    for a single-day run); the starting state and aggregates are read from the store or
    rebuilt from tiles, so any split of a range into chunks gives identical results.
    """
    from checks.feature_schemas import validate_features  # pure pandera, no Dagster

    cache = _TileCache(store_root, group)
    sliding = _Sliding(store_root, group, cache, last=days[-1], cold=not stored_start(store_root, group, days[0]))
    state = _rebuild_state(store_root, group, shift_day(days[0], -1), start) if group.has_all_time else None
    stats = []
    for day in days:
        t0 = time.perf_counter()
        if group.has_all_time:
            state = advance_state(state, cache.get(day), group, day)
        feats = features_from_frames(sliding.frames(day), state, group, day)
        w = write_partition(feats, store_root, group.name, day)
        if group.has_all_time and state is not None:
            write_partition(state, store_root, state_asset(group), day, compression=INTERNAL)
        sliding.advance(day)
        s = feature_stats(feats, group)
        s.update(day=day, bytes=w["bytes"], seconds=time.perf_counter() - t0, schema_errors=validate_features(feats, group))
        stats.append(s)
    sliding.persist(days[-1])
    return stats
