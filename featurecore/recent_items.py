"""Last-N item features (e.g. the last 10 products a user viewed), batch and streaming alike.

A ``RecentItems`` declaration names an asset whose partition D holds, per entity, lists of
the latest items as of the cutoff ``D+1 00:00 UTC`` (events with ts < cutoff, all time),
newest first; ties on ts: larger item first; an entity with no matching event gets ``[]``.
The carried state is ``featurecore.streaming.LastN`` (long format: keys, ts, item), one
per list; batch (one day at a time) and the streaming updater (one micro-batch at a time)
both go ``state = merge(state, LastN.from_events(events))`` and finalize with
``features_from_state``, so their values are identical (the top-N of a union does not
depend on how the union was grouped). No Dagster imports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from .spec import normalize_where, where_describe
from .store import INTERNAL, partition_exists, read_partition, write_partition
from .streaming import LastN
from .timeutil import cutoff, day_range, shift_day, to_day

STATE_SUFFIX = "__state"


@dataclass(frozen=True)
class RecentList:
    """One last-N list feature: the latest ``n`` values of ``item`` over events matching ``where``."""

    name: str
    item: str
    where: Any = None
    n: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", normalize_where(self.where))
        if self.n < 1:
            raise ValueError(f"{self.name}: n must be >= 1")

    @property
    def description(self) -> str:
        """What the list holds, in words."""
        return f"The last {self.n} {self.item} values of {where_describe(self.where)} (all time, newest first)"


@dataclass(frozen=True)
class RecentItems:
    """A last-N items asset: per entity one list column per ``RecentList``."""

    name: str
    keys: tuple[str, ...]
    lists: tuple[RecentList, ...]
    ttl: timedelta = timedelta(days=30)
    version: str = "1"
    description: str = ""
    columns_needed: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        cols = list(self.keys) + ["ts"]
        for lst in self.lists:
            cols.append(lst.item)
            cols.extend(c for c, _, _ in lst.where or ())
        object.__setattr__(self, "columns_needed", tuple(dict.fromkeys(cols)))

    def feature_names(self) -> list[str]:
        """The list feature names, in declaration order."""
        return [lst.name for lst in self.lists]

    def feature_dtypes(self) -> dict[str, str]:
        """Every feature is a list of strings."""
        return {lst.name: "list" for lst in self.lists}

    def feature_descriptions(self) -> dict[str, str]:
        """Feature name -> description."""
        return {lst.name: lst.description for lst in self.lists}


USER_RECENT_ITEMS = RecentItems(
    "user_recent_items",
    keys=("user_id",),
    lists=(
        RecentList("recent_viewed_products", "product_id", ("event_type", "==", "view"), 10),
        RecentList("recent_purchased_products", "product_id", ("event_type", "==", "purchase"), 5),
    ),
    ttl=timedelta(days=30),
    description="The products a user viewed and bought last (last-N lists, all time, newest first).",
)
RECENT_ITEMS = {USER_RECENT_ITEMS.name: USER_RECENT_ITEMS}


def state_asset(spec: RecentItems) -> str:
    """Store name of the carried long-format state (internal, not a Dagster asset)."""
    return spec.name + STATE_SUFFIX


def _mask(events: pd.DataFrame, where: tuple | None) -> np.ndarray:
    """Rows matching a filter, with the vocabulary of ``spec.normalize_where`` (nulls never compare)."""
    m = np.ones(len(events), dtype=bool)
    for col, op, value in where or ():
        if col not in events.columns:
            return np.zeros(len(events), dtype=bool)
        s = events[col]
        nn = s.notna().to_numpy()
        if op == "notnull":
            m &= nn
        elif op == "isnull":
            m &= ~nn
        elif op in ("==", "in"):
            m &= s.isin(value if op == "in" else (value,)).to_numpy() & nn
        elif op in ("!=", "not in"):
            m &= ~s.isin(value if op == "not in" else (value,)).to_numpy() & nn
        else:
            v = pd.to_numeric(s, errors="coerce")
            with np.errstate(invalid="ignore"):
                m &= {">": v > value, ">=": v >= value, "<": v < value, "<=": v <= value}[op].fillna(False).to_numpy()
    return m


def empty_state(spec: RecentItems) -> pd.DataFrame:
    """A zero-row state: keys, list, ts, item."""
    d = {k: pd.Series([], dtype=object) for k in spec.keys}
    d.update(list=pd.Series([], dtype=object), ts=pd.Series([], dtype="datetime64[ns, UTC]"),
             item=pd.Series([], dtype=object))
    return pd.DataFrame(d)


def state_of_events(events: pd.DataFrame, spec: RecentItems) -> pd.DataFrame:
    """The state of these events alone (every list's top-N per entity)."""
    parts = []
    for lst in spec.lists:
        if lst.item not in events.columns or any(k not in events.columns for k in spec.keys):
            continue
        ev = events.loc[_mask(events, lst.where)]
        st = LastN(lst.item, lst.n, spec.keys).from_events(ev).state
        if len(st):
            parts.append(st.assign(list=lst.name))
    return _normalize(pd.concat(parts, ignore_index=True), spec) if parts else empty_state(spec)


def merge_states(states: list[pd.DataFrame | None], spec: RecentItems) -> pd.DataFrame:
    """Merge states (any grouping, any order): per list and entity the top-N by (ts, item) descending."""
    states = [s for s in states if s is not None and len(s)]
    if not states:
        return empty_state(spec)
    df = pd.concat(states, ignore_index=True) if len(states) > 1 else states[0]
    parts = []
    for lst in spec.lists:
        sub = df[df["list"] == lst.name]
        if len(sub):
            st = LastN(lst.item, lst.n, spec.keys).merge(
                LastN(lst.item, lst.n, spec.keys, state=sub[[*spec.keys, "ts", "item"]].reset_index(drop=True))
            ).state
            parts.append(st.assign(list=lst.name))
    return _normalize(pd.concat(parts, ignore_index=True), spec) if parts else empty_state(spec)


def _normalize(state: pd.DataFrame, spec: RecentItems) -> pd.DataFrame:
    keys = list(spec.keys)
    state = state[[*keys, "list", "ts", "item"]]
    state = state.sort_values([*keys, "list", "ts", "item"], ascending=[True] * (len(keys) + 1) + [False, False],
                              kind="mergesort", ignore_index=True)
    state["ts"] = pd.to_datetime(state["ts"], utc=True).dt.as_unit("ns")
    return state


def features_from_state(state: pd.DataFrame, spec: RecentItems, day: Any) -> pd.DataFrame:
    """Feature rows of partition ``day``: keys, ``cutoff``, one list per feature (every entity of the state)."""
    keys = list(spec.keys)
    t_cut = cutoff(day)
    if not len(state):
        out = pd.DataFrame({k: pd.Series([], dtype=object) for k in keys})
        out["cutoff"] = pd.Series([], dtype="datetime64[ns, UTC]")
        for lst in spec.lists:
            out[lst.name] = pd.Series([], dtype=object)
        return out
    if state["ts"].max() >= t_cut:
        raise ValueError(f"{spec.name}: state holds events at or after the cutoff {t_cut} of {day}")
    universe = state[keys].drop_duplicates().sort_values(keys, kind="mergesort", ignore_index=True)
    out = universe.copy()
    out["cutoff"] = t_cut
    out["cutoff"] = out["cutoff"].dt.as_unit("ns")
    for lst in spec.lists:
        sub = state[state["list"] == lst.name]
        lists = sub.groupby(keys, sort=False)["item"].agg(list) if len(sub) else pd.Series(dtype=object)
        if len(keys) == 1:
            vals = universe[keys[0]].map(lists)
        else:
            vals = pd.Series(pd.MultiIndex.from_frame(universe).map(lists.to_dict().get), index=universe.index)
        out[lst.name] = [v if isinstance(v, list) else [] for v in vals]
    return out


def _read_day_events(store_root: str, day: str, spec: RecentItems) -> pd.DataFrame:
    ev = read_partition(store_root, "raw_events", day)
    return ev[[c for c in spec.columns_needed if c in ev.columns]]


def rebuild_state(store_root: str, spec: RecentItems, through: str, start: str) -> pd.DataFrame:
    """State as of the end of day ``through``: the stored one, or merged day by day from raw_events."""
    if to_day(through) < to_day(start):
        return empty_state(spec)
    if partition_exists(store_root, state_asset(spec), through):
        return read_partition(store_root, state_asset(spec), through)
    state = empty_state(spec)
    for d in day_range(start, through):
        if partition_exists(store_root, "raw_events", d):
            state = merge_states([state, state_of_events(_read_day_events(store_root, d, spec), spec)], spec)
    return state


def recent_items_range(days: list[str], spec: RecentItems, store_root: str, start: str) -> list[dict]:
    """Dask task: feature partitions for consecutive days, carrying the state day to day."""
    state = rebuild_state(store_root, spec, shift_day(days[0], -1), start)
    stats = []
    for day in days:
        t0 = time.perf_counter()
        events = _read_day_events(store_root, day, spec) if partition_exists(store_root, "raw_events", day) else None
        state = merge_states([state, state_of_events(events, spec) if events is not None else None], spec)
        feats = features_from_state(state, spec, day)
        w = write_partition(feats, store_root, spec.name, day)
        write_partition(state, store_root, state_asset(spec), day, compression=INTERNAL)
        lengths = {lst.name: float(np.mean([len(v) for v in feats[lst.name]])) if len(feats) else 0.0
                   for lst in spec.lists}
        stats.append({"day": day, "rows": len(feats), "events": 0 if events is None else len(events),
                      "bytes": w["bytes"], "seconds": time.perf_counter() - t0, "mean_length": lengths})
    return stats
