"""Micro-batch streaming updates of the online store, with the batch path's own functions.

The updater consumes new events (files appearing in a folder, or a Redis stream),
and keeps the online values of the streamed sources current between daily runs. It
holds, per feature group, the *online tile state*: the batch tiles of the days the
largest window still needs, the batch all-time state of the last batch day ``B``
(both read from the offline store), and *live* tiles for the days after ``B``. A
micro-batch is typed and validated like ingestion (``ingest.type_events``), its tile is
computed with ``tiles.compute_tile`` and merged into the live tile with
``tiles.merge_tiles`` (``active`` clipped to 1: two partial tiles of one day are one
active day, see ``merge_same_day``); the rows of the affected entities are then recomputed with
``tiles.features_for_day`` — the function the daily batch calls — so a streamed value
equals the batch value by construction. Last-N lists go through the same
``recent_items.state_of_events`` / ``merge_states`` / ``features_from_state`` as batch.

Time contract
-------------
Events of day ``X > B`` update the *provisional* row of ``X``: cutoff ``X+1 00:00``, the
row the daily batch will write for ``X`` if no more events arrive, with ``as_of`` = the
stream watermark (latest event ts seen + 1 ns, capped at the cutoff). When the stream
reaches a later day (or ``advance_to`` is called, or the wall clock passes the cutoff
with ``close_by_clock``), day ``X`` is *closed*: the rows of every entity are rewritten
for ``X`` (as the batch would: windows slide, EMAs decay, recency grows) with
``as_of`` = the cutoff. When the daily run has written a newer batch day, the updater
rebases on it (``refresh_base``) and drops its live state for that day; the batch rows
then win in the online store (same cutoff, batch wins ties).

Events with ts on or before ``B`` (already covered by batch; the daily run picks them up
from the landing zone as late data) are ignored and counted as ``late_ignored``; events
more than ``max_future`` after the wall clock are rejected as clock errors; events seen
before (same ``event_id``, or same contract values without one) are dropped.

Streaming-capable features
--------------------------
Every feature of a declared feature group is recomputed by the updater, and the
features of a ``RecentItems`` source (last-N lists). Of these, the kinds in
``STREAMING_KINDS`` equal the next daily batch value: exactly for counts, min/max,
last, share numerators, active days, frequency, recency, distinct counts and last-N
lists; up to floating-point summation order (relative 1e-9) for sums, means, std, EMAs
and ratios of sums, because a day's tile is a merge of micro-batch tiles rather than one
pass. ``quantile`` (KLL) is recomputed but only approximately equal beyond 200 values
(KLL compactions depend on how values were grouped into merges; within its rank error). Sources that are not declared
groups or RecentItems (e.g. candidate assets) are batch-only: their online rows change
only with the daily materialization.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .config import SourceConfig, load_source_config
from .feature_sets import FeatureSet
from .groups import GROUPS
from .ingest import read_raw_file, read_snapshot, type_events
from .online import STREAM, OnlineStore, StoreUnavailable, default_store_url, open_store, redact
from .pipeline import state_asset as group_state_asset
from .pipeline import tiles_asset
from .recent_items import RECENT_ITEMS, RecentItems, features_from_state, merge_states, state_of_events
from .recent_items import state_asset as recent_state_asset
from .spec import FeatureGroup
from .store import partition_exists, read_partition
from .streaming import NS_PER_DAY, ts_ns
from .tiles import compute_tile, features_for_day, merge_tiles, state_from_tiles
from .timeutil import cutoff, day_range, shift_day

log = logging.getLogger("featurecore.streaming_update")

#: Feature kinds whose streamed value equals the next batch value (see the module docstring).
STREAMING_KINDS = frozenset({
    "count", "sum", "mean", "std", "min", "max", "last", "distinct", "share", "active_days", "frequency",
    "recency", "ema", "ratio", "recent_items",
})
#: Recomputed by the updater but only approximately equal to batch.
APPROXIMATE_KINDS = frozenset({"quantile"})
#: Kinds compared exactly in parity checks (the others up to float summation order).
EXACT_KINDS = frozenset({"count", "min", "max", "last", "distinct", "share", "active_days", "frequency",
                         "recency", "recent_items"})
FLOAT_RTOL = 1e-9


def feature_kinds(source: str) -> dict[str, str]:
    """Feature -> kind of a streamable source ({} for a source the updater does not stream)."""
    if source in GROUPS:
        return {f.name: f.kind for f in GROUPS[source].features()}
    if source in RECENT_ITEMS:
        return {n: "recent_items" for n in RECENT_ITEMS[source].feature_names()}
    return {}


def streaming_capable(source: str, feature: str) -> bool:
    """True when the streamed value of ``source.feature`` equals the next daily batch value."""
    return feature_kinds(source).get(feature) in STREAMING_KINDS


def streaming_capable_features(fs: FeatureSet) -> list[str]:
    """Qualified names of the set's streaming-capable features."""
    return [f.qualified for f in fs.features if streaming_capable(f.source, f.feature)]


# --------------------------------------------------------------------------- event sources


class FolderSource:
    """New ``*.parquet`` / ``*.csv`` files under a folder (recursively), each read once.

    Writers should create files under a temporary name starting with ``.`` or ``_`` and
    rename them when complete (such names are ignored). Sub-folders named ``YYYY-MM-DD``
    before ``since_day`` are skipped (the landing zone's arrival folders).
    """

    def __init__(self, folder: str | Path, csv_options: dict | None = None, since_day: str | None = None):
        self.folder = Path(folder)
        self.csv_options = csv_options
        self.since_day = since_day
        self.seen: dict[str, tuple[int, int]] = {}

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in sorted(self.folder.rglob("*")):
            if not p.is_file() or p.suffix not in (".parquet", ".csv") or p.name.startswith((".", "_")):
                continue
            rel = p.relative_to(self.folder).parts
            if self.since_day and any(_is_day(x) and x < self.since_day for x in rel[:-1]):
                continue
            out.append(p)
        return out

    def poll(self) -> list[tuple[str, pd.DataFrame]]:
        """(file label, raw frame) of every file not read yet (or changed since)."""
        got = []
        for p in self._files():
            st = p.stat()
            sig = (st.st_size, st.st_mtime_ns)
            rel = str(p.relative_to(self.folder))
            if self.seen.get(rel) == sig:
                continue
            df = read_raw_file(p, "parquet" if p.suffix == ".parquet" else "csv", self.csv_options)
            self.seen[rel] = sig
            got.append((rel, df))
        return got


def _is_day(s: str) -> bool:
    return len(s) == 10 and s[4] == "-" and s[7] == "-" and s.replace("-", "").isdigit()


class RedisStreamSource:
    """Entries of a Redis stream (``XADD`` field maps of event columns), read with ``XREAD`` from the start."""

    def __init__(self, url: str, stream: str = "ff:events", count: int = 10_000, block_ms: int = 500):
        import redis

        self.url, self.stream, self.count, self.block_ms = url, stream, count, block_ms
        self.r = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=max(2.0, block_ms / 1000 + 1))
        self.last_id = "0-0"

    def poll(self) -> list[tuple[str, pd.DataFrame]]:
        """(label, raw frame) of the entries added since the last poll (at most ``count``)."""
        import redis

        try:
            res = self.r.xread({self.stream: self.last_id}, count=self.count, block=self.block_ms)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreUnavailable(f"event stream {redact(self.url)} {self.stream}: {e}") from e
        if not res:
            return []
        entries = res[0][1]
        rows = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
        first, last = entries[0][0].decode(), entries[-1][0].decode()
        self.last_id = last
        return [(f"redis:{self.stream}:{first}..{last}", pd.DataFrame(rows))]


def publish_events(url: str, events: pd.DataFrame, stream: str = "ff:events", chunk: int = 1000) -> int:
    """Append events to a Redis stream, one entry per event (null fields left out); returns the count."""
    import redis

    r = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=5)
    cols = [c for c in events.columns if c not in ("source_file", "row_number")]
    n = 0
    records = events[cols].astype(object).where(events[cols].notna(), None).to_dict("records")
    for i in range(0, len(records), chunk):
        pipe = r.pipeline(transaction=False)
        for rec in records[i:i + chunk]:
            fields = {k: (v.isoformat() if isinstance(v, pd.Timestamp) else str(v)) for k, v in rec.items() if v is not None}
            pipe.xadd(stream, fields)
        n += len(pipe.execute())
    r.close()
    return n


# --------------------------------------------------------------------------- the updater


def _restrict(df: pd.DataFrame | None, keys: list[str], ents: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows of ``df`` whose key is among ``ents`` (all rows when ``ents`` is None)."""
    if df is None or ents is None:
        return df
    if len(keys) == 1:
        return df[df[keys[0]].isin(ents[keys[0]])]
    return df.merge(ents[keys], on=keys, how="inner", sort=False)


def merge_same_day(tiles: list[pd.DataFrame | None], group: FeatureGroup) -> pd.DataFrame:
    """Merge partial tiles of ONE day (micro-batches): ``merge_tiles``, then ``active`` clipped to 1.

    ``merge_tiles`` sums ``active`` because its inputs are normally different days (active
    days add up); two partial tiles of the same day are the same active day.
    """
    out = merge_tiles(tiles, group)
    for c in out.columns:
        if c.endswith("__active"):
            out[c] = np.minimum(out[c].to_numpy(), 1).astype(np.int64)
    return out


class StreamingUpdater:
    """Online tile state per streamed source, updated per micro-batch; writes ``stream`` rows to the online store."""

    def __init__(self, store_root: str, online: OnlineStore, *, feature_sets: list[FeatureSet] | None = None,
                 source_cfg: SourceConfig | None = None, max_future: pd.Timedelta = pd.Timedelta(hours=1),
                 clock: Callable[[], int] = time.time_ns):
        self.store_root = str(store_root)
        self.online = online
        self.cfg = replace(source_cfg or load_source_config(), store_root=self.store_root)
        self._explicit_sets = feature_sets
        self.max_future_ns = int(max_future.value)
        self.clock = clock
        self.sets: list[FeatureSet] = []
        self.groups: dict[str, FeatureGroup] = {}
        self.recents: dict[str, RecentItems] = {}
        self.base_day: str | None = None
        self.base_tiles: dict[str, dict[str, pd.DataFrame]] = {}
        self.base_state: dict[str, pd.DataFrame | None] = {}
        self.base_recent: dict[str, pd.DataFrame | None] = {}
        self.live_tiles: dict[str, dict[str, pd.DataFrame]] = {}
        self.live_recent: dict[str, dict[str, pd.DataFrame]] = {}
        self.seen: dict[str, set] = {}
        self.current_day: str | None = None
        self.watermark_ns: int | None = None
        self.products: pd.DataFrame | None = None
        self._pending_close: list[str] = []
        self._dirty: dict[str, pd.DataFrame] = {}
        self.totals: Counter = Counter()

    # -- setup
    def _resolve_sets(self) -> None:
        if self._explicit_sets is not None:
            sets = list(self._explicit_sets)
        else:
            sets = [self.online.feature_set(s["name"]) for s in self.online.served_sets()]
            sets = list({fs.name: fs for fs in sets}.values())  # latest version of each name
        self.sets = sets
        self.groups = {s: GROUPS[s] for fs in sets for s in fs.sources if s in GROUPS}
        self.recents = {s: RECENT_ITEMS[s] for fs in sets for s in fs.sources if s in RECENT_ITEMS}
        for name in self.groups:
            self.live_tiles.setdefault(name, {})
        for name in self.recents:
            self.live_recent.setdefault(name, {})

    def _required_assets(self) -> list[str]:
        req = []
        for g in self.groups.values():
            req.append(tiles_asset(g))
            if g.has_all_time:
                req.append(group_state_asset(g))
        req += [recent_state_asset(r) for r in self.recents.values()]
        return req

    def latest_batch_day(self) -> str | None:
        """The latest day for which every streamed source has its batch tiles/state in the offline store."""
        common = None
        for asset in self._required_assets():
            folder = Path(self.store_root) / asset
            days = {p.name[5:] for p in folder.iterdir() if p.name.startswith("date=")} if folder.is_dir() else set()
            common = days if common is None else common & days
        return max(common) if common else None

    def bootstrap(self) -> dict:
        """Resolve the served sets and load the base (last batch day) from the offline store."""
        self._resolve_sets()
        if not self.sets:
            raise ValueError(f"no feature set is served by {redact(self.online.url)} yet: materialize the "
                             "online_features asset first (or pass feature_sets=)")
        if not self.groups and not self.recents:
            raise ValueError("no streamable source: the served feature sets use neither declared groups nor RecentItems")
        b = self.latest_batch_day()
        self._load_base(b)
        return {"base_day": b, "groups": sorted(self.groups), "recent": sorted(self.recents),
                "sets": [f"{fs.name} v{fs.version}" for fs in self.sets]}

    def _load_base(self, b: str | None) -> None:
        self.base_day = b
        self.base_tiles = {n: {} for n in self.groups}
        self.base_state = {n: None for n in self.groups}
        self.base_recent = {n: None for n in self.recents}
        if any(g.enrich for g in self.groups.values()):
            try:
                self.products = read_snapshot(self.store_root, "products")
            except FileNotFoundError:
                log.warning("no products snapshot in %s: enriched features (e.g. category shares) stay empty",
                            self.store_root)
                self.products = None
        if b is None:
            return
        for name, g in self.groups.items():
            w = g.max_window_days
            if w > 1:
                for d in day_range(shift_day(b, -(w - 2)), b):
                    if partition_exists(self.store_root, tiles_asset(g), d):
                        self.base_tiles[name][d] = read_partition(self.store_root, tiles_asset(g), d)
            if g.has_all_time:
                self.base_state[name] = read_partition(self.store_root, group_state_asset(g), b)
        for name, r in self.recents.items():
            self.base_recent[name] = read_partition(self.store_root, recent_state_asset(r), b)

    def refresh_base(self) -> bool:
        """Rebase on a newer batch day if the daily run wrote one; rewrites the rows of live entities."""
        b = self.latest_batch_day()
        if b is None or (self.base_day is not None and b <= self.base_day):
            return False
        self._load_base(b)
        for d in [d for d in self.seen if d <= b]:
            del self.seen[d]
        for store in list(self.live_tiles.values()) + list(self.live_recent.values()):
            for d in [d for d in store if d <= b]:
                del store[d]
        self._pending_close = [d for d in self._pending_close if d > b]
        if self.current_day is not None and self.current_day <= b:
            self.current_day = None
        self._dirty = {}
        if self.current_day is not None:
            for name, g in self.groups.items():
                frames = [t[list(g.keys)] for t in self.live_tiles[name].values()]
                if frames:
                    self._mark_dirty(name, pd.concat(frames, ignore_index=True))
            for name, r in self.recents.items():
                frames = [t[list(r.keys)] for t in self.live_recent[name].values()]
                if frames:
                    self._mark_dirty(name, pd.concat(frames, ignore_index=True))
        self.totals["rebases"] += 1
        self.flush()
        return True

    # -- micro-batches
    def _enrich(self, ev: pd.DataFrame) -> pd.DataFrame:
        cols = sorted({c for g in self.groups.values() for c in g.enrich})
        if not cols or self.products is None or "product_id" not in ev.columns:
            return ev
        have = [c for c in cols if c in self.products.columns]
        ev = ev.drop(columns=[c for c in have if c in ev.columns])
        return ev.merge(self.products[["product_id", *have]], on="product_id", how="left", validate="many_to_one")

    def _dedup_keys(self, ev: pd.DataFrame) -> np.ndarray:
        ids = ev["event_id"]
        contract = [c for c in ("event_id", "user_id", "ts", "event_type", "product_id", "price", "quantity",
                                "device_type", "referrer", "session_id") if c in ev.columns]
        h = pd.util.hash_pandas_object(ev[contract], index=False).astype(str)
        return np.where(ids.notna(), "id:" + ids.astype(str), "h:" + h).astype(object)

    def apply(self, raw: pd.DataFrame, label: str = "micro-batch") -> dict:
        """Apply one micro-batch of landing-format events; returns its statistics."""
        t0 = time.perf_counter()
        if not self.groups and not self.recents:
            self.bootstrap()
        st: Counter = Counter(events_in=len(raw))
        typed = type_events(raw, label, self.cfg.mapping("events"))
        st["quarantined"] = len(typed.quarantine)
        ev = typed.good
        if len(ev):
            t = ts_ns(ev["ts"])
            day_no = t // NS_PER_DAY
            days = pd.to_datetime(day_no * NS_PER_DAY, utc=True).strftime("%Y-%m-%d").to_numpy(dtype=object)
            if self.base_day is None:
                self.base_day = shift_day(min(days), -1)  # nothing in batch yet: the stream starts the history
            late = days <= self.base_day
            future = t > self.clock() + self.max_future_ns
            keys = self._dedup_keys(ev)
            dup = pd.Series(keys).duplicated().to_numpy()
            for i in np.flatnonzero(~late & ~future & ~dup):
                if keys[i] in self.seen.get(days[i], ()):
                    dup[i] = True
            keep = ~late & ~future & ~dup
            st["late_ignored"] = int(late.sum())
            st["future_rejected"] = int((future & ~late).sum())
            st["duplicates"] = int((dup & ~late & ~future).sum())
            ev, days, t = ev.loc[keep].reset_index(drop=True), days[keep], t[keep]
            for d, k in zip(days, keys[keep]):
                self.seen.setdefault(d, set()).add(k)
        if len(ev):
            ev = self._enrich(ev)
            for d in sorted(set(days)):
                grp = ev.loc[days == d]
                for name, g in self.groups.items():
                    tile = compute_tile(grp, g, d)
                    old = self.live_tiles[name].get(d)
                    self.live_tiles[name][d] = tile if old is None else merge_same_day([old, tile], g)
                for name, r in self.recents.items():
                    self.live_recent[name][d] = merge_states([self.live_recent[name].get(d), state_of_events(grp, r)], r)
            self.watermark_ns = max(self.watermark_ns or t.max(), int(t.max()))
            st["applied"] = len(ev)
            newest = max(days)
            start = self.current_day or shift_day(self.base_day, 1)
            if newest > start:
                self._pending_close += [d for d in day_range(start, shift_day(newest, -1)) if d not in self._pending_close]
            self.current_day = max(start, newest)
            for name, g in self.groups.items():
                self._mark_dirty(name, ev[list(g.keys)])
            for name, r in self.recents.items():
                self._mark_dirty(name, ev[list(r.keys)])
        st["closed_days"] = len(self._pending_close)
        st.update(self.flush())
        st["seconds"] = time.perf_counter() - t0
        self.totals.update({k: v for k, v in st.items() if k != "seconds"})
        return dict(st)

    def _mark_dirty(self, name: str, keys: pd.DataFrame) -> None:
        keys = keys.dropna().drop_duplicates()
        old = self._dirty.get(name)
        self._dirty[name] = keys if old is None else pd.concat([old, keys], ignore_index=True).drop_duplicates()

    def advance_to(self, day: str) -> dict:
        """Close every live day before ``day`` (full rewrite of their rows) and make ``day`` current."""
        if self.base_day is None:
            return {"closed_days": 0}
        start = self.current_day or shift_day(self.base_day, 1)
        if day > start:
            self._pending_close += [d for d in day_range(start, shift_day(day, -1)) if d not in self._pending_close]
            self.current_day = day
        n = len(self._pending_close)
        out = self.flush()
        out["closed_days"] = n
        return out

    # -- computing and writing rows
    def rows_for_day(self, day: str, entities: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
        """Feature rows of ``day`` per streamed source (all entities, or only ``entities[source]``)."""
        out = {}
        for name, g in self.groups.items():
            if entities is not None and name not in entities:
                continue
            ents = None if entities is None else entities[name]
            keys = list(g.keys)
            w = max(g.max_window_days, 1)
            tiles = {}
            for d in day_range(shift_day(day, -(w - 1)), day):
                t = self.live_tiles[name].get(d) if (self.base_day is None or d > self.base_day) \
                    else self.base_tiles[name].get(d)
                if t is not None:
                    tiles[d] = _restrict(t, keys, ents)
            prev = None
            if g.has_all_time:
                parts = [_restrict(self.base_state[name], keys, ents)] + [
                    _restrict(t, keys, ents) for d, t in sorted(self.live_tiles[name].items()) if d < day]
                parts = [p for p in parts if p is not None]
                prev = state_from_tiles(parts, g) if parts else None
            out[name], _ = features_for_day(tiles, prev, g, day)
        for name, r in self.recents.items():
            if entities is not None and name not in entities:
                continue
            ents = None if entities is None else entities[name]
            keys = list(r.keys)
            parts = [_restrict(self.base_recent[name], keys, ents)] + [
                _restrict(s, keys, ents) for d, s in sorted(self.live_recent[name].items()) if d <= day]
            out[name] = features_from_state(merge_states(parts, r), r, day)
        return out

    def _write(self, rows: dict[str, pd.DataFrame], as_of_ns: int) -> int:
        n = 0
        for fs in self.sets:
            for s in fs.sources:
                if s in rows and len(rows[s]):
                    n += self.online.write_frame(fs, s, rows[s], origin=STREAM, as_of=as_of_ns)["written"]
        return n

    def flush(self) -> dict:
        """Write pending closed days and the dirty entities' current rows; kept pending if the store is down."""
        out = Counter()
        while self._pending_close:
            d = self._pending_close[0]
            rows = self.rows_for_day(d)
            out["rows_written"] += self._write(rows, int(cutoff(d).value))
            out["entities_closed"] += sum(len(v) for v in rows.values())
            self._pending_close.pop(0)
        if self._dirty and self.current_day is not None:
            day = self.current_day
            rows = self.rows_for_day(day, self._dirty)
            as_of = min(int(self.watermark_ns or 0) + 1, int(cutoff(day).value))
            out["rows_written"] += self._write(rows, as_of)
            out["entities_updated"] += sum(len(v) for v in rows.values())
            self._dirty = {}
        return dict(out)

    def run(self, source, *, interval: float = 2.0, max_polls: int | None = None, close_by_clock: bool = False,
            max_batch_events: int = 50_000, on_batch: Callable[[str, dict], None] | None = None) -> Counter:
        """Poll ``source`` and apply what arrives; rebase on new batch days; survive a store that is down.

        What one poll returns is applied as few micro-batches of up to ``max_batch_events``
        events: each micro-batch pays a fixed cost (typing, merges, feature finalize), so
        a backlog is cheaper in larger batches and gives the same values.
        """
        polls = 0
        while max_polls is None or polls < max_polls:
            polls += 1
            got: list = []
            try:
                self.refresh_base()
                got = source.poll()
                for label, df in _coalesce(got, max_batch_events):
                    stats = self.apply(df, label)
                    if on_batch:
                        on_batch(label, stats)
                if close_by_clock and self.current_day and self.clock() >= cutoff(self.current_day).value:
                    self.advance_to(shift_day(self.current_day, 1))
            except StoreUnavailable as e:
                log.error("%s; retrying in %.1f s", e, interval)
                self.totals["store_errors"] += 1
            if not got and (max_polls is None or polls < max_polls):
                time.sleep(interval)
        return self.totals


def _coalesce(frames: list[tuple[str, pd.DataFrame]], max_events: int) -> Iterable[tuple[str, pd.DataFrame]]:
    """Consecutive (label, frame) pairs joined into frames of at most ``max_events`` rows (a bigger one stays alone)."""
    group: list[tuple[str, pd.DataFrame]] = []
    size = 0
    for label, df in frames + [("", None)]:
        if df is None or (group and size + len(df) > max_events):
            if group:
                labels = [lb for lb, _ in group]
                name = labels[0] if len(labels) == 1 else f"{len(labels)} parts ({labels[0]} .. {labels[-1]})"
                yield name, pd.concat([d for _, d in group], ignore_index=True) if len(group) > 1 else group[0][1]
            group, size = [], 0
        if df is not None:
            group.append((label, df))
            size += len(df)


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m featurecore.streaming_update",
                                 description="Streaming micro-batch updater of the online store.")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--folder", help="watch this folder for new event files (default: <landing>/events)")
    src.add_argument("--redis-stream", help="consume this Redis stream (XADD entries of event columns)")
    ap.add_argument("--redis-url", help="Redis of the event stream (default $REDIS_URL)")
    ap.add_argument("--store-root", help="offline store root (default: the source config)")
    ap.add_argument("--online-url", help="online store URL (default: $ONLINE_STORE_URL, $REDIS_URL or SQLite in the store)")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between polls when idle")
    ap.add_argument("--once", action="store_true", help="poll once, apply, exit")
    ap.add_argument("--close-through", help="after polling, close every live day before this day (YYYY-MM-DD)")
    ap.add_argument("--close-by-clock", action="store_true", help="close the current day when the wall clock passes its cutoff")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = load_source_config()
    root = a.store_root or cfg.store_root
    url = a.online_url or default_store_url(root)
    online = open_store(url)
    up = StreamingUpdater(root, online, source_cfg=cfg)
    info = up.bootstrap()
    log.info("online store %s; base day %s; streaming %s for %s", redact(url), info["base_day"],
             ", ".join(info["groups"] + info["recent"]), ", ".join(info["sets"]))
    if a.redis_stream:
        import os

        source: Any = RedisStreamSource(a.redis_url or os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                                        a.redis_stream)
    else:
        folder = a.folder or str(Path(cfg.landing_root) / "events")
        source = FolderSource(folder, cfg.csv_options, since_day=info["base_day"])

    def report(label: str, s: dict) -> None:
        log.info("%s: %s", label, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}))

    up.run(source, interval=a.interval, max_polls=1 if a.once else None, close_by_clock=a.close_by_clock,
           on_batch=report)
    if a.close_through:
        report(f"closed through {a.close_through}", up.advance_to(a.close_through))


if __name__ == "__main__":
    _main()
