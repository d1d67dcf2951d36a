"""Dask-task entry points for feature groups: read the store, call the pure engine, write the store.

Each function runs on a Dask worker and returns only small statistics, so the
Dagster process never holds feature data. Memory is bounded by one day of raw
events (tiles) or by a group's largest window of tiles plus its all-time state
(features), however many days a backfill covers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from .ingest import read_snapshot
from .spec import FeatureGroup
from .store import partition_exists, read_partition, write_partition
from .tiles import compute_tile, features_for_day, merge_tiles
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
    raw_cols = [c for c in need if c not in enrich]
    events = read_partition(store_root, "raw_events", day)
    events = events[[c for c in events.columns if c in raw_cols or c in ("product_id",)]]
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
        w = write_partition(tile, store_root, tiles_asset(g), day)
        out["groups"][g.name] = {"rows": len(tile), "bytes": w["bytes"], "seconds": time.perf_counter() - t1}
    return out


class _TileCache:
    """Rolling cache of a group's tiles so a range reads each tile partition once."""

    def __init__(self, store_root: str, group: FeatureGroup):
        self.store_root, self.group = store_root, group
        self.cache: OrderedDict[str, pd.DataFrame | None] = OrderedDict()

    def get(self, day: str) -> pd.DataFrame | None:
        if day not in self.cache:
            name = tiles_asset(self.group)
            self.cache[day] = read_partition(self.store_root, name, day) if partition_exists(self.store_root, name, day) else None
        return self.cache[day]

    def window(self, day: str) -> dict[str, pd.DataFrame]:
        """Tiles of the days the group's largest window covers at `day` (missing days = no events)."""
        n = max(self.group.max_window_days, 1)
        days = day_range(shift_day(day, -(n - 1)), day)
        for old in [d for d in self.cache if d < days[0]]:
            del self.cache[old]
        return {d: t for d in days if (t := self.get(d)) is not None}


def _rebuild_state(store_root: str, group: FeatureGroup, before: str, start: str) -> pd.DataFrame | None:
    """All-time state as of the end of day `before`, from the nearest stored state or from tiles."""
    if to_day(before) < to_day(start):
        return None
    if partition_exists(store_root, state_asset(group), before):
        return read_partition(store_root, state_asset(group), before)
    # No stored state (first run, or a gap): merge every tile since the start, one at a time.
    state = None
    for d in day_range(start, before):
        if partition_exists(store_root, tiles_asset(group), d):
            tile = read_partition(store_root, tiles_asset(group), d)
            state = tile if state is None else merge_tiles([state, tile], group)
    return state


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
    """Compute feature partitions for consecutive `days`, carrying all-time state day to day."""
    from checks.feature_schemas import validate_features  # pure pandera, no Dagster

    cache = _TileCache(store_root, group)
    state = _rebuild_state(store_root, group, shift_day(days[0], -1), start) if group.has_all_time else None
    stats = []
    for day in days:
        t0 = time.perf_counter()
        feats, state = features_for_day(cache.window(day), state, group, day)
        w = write_partition(feats, store_root, group.name, day)
        if group.has_all_time and state is not None:
            write_partition(state, store_root, state_asset(group), day)
        s = feature_stats(feats, group)
        s.update(day=day, bytes=w["bytes"], seconds=time.perf_counter() - t0, schema_errors=validate_features(feats, group))
        stats.append(s)
    return stats
