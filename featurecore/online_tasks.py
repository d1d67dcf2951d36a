"""Dask-task entry points of the online store: materialize a day, compare online with offline.

Both run on a worker, read the offline store and talk to the online store themselves,
and return only small statistics (no Dagster imports).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .feature_sets import FeatureSet
from .online import EXPIRED, MISSING, PRESENT, entity_dict, entity_ids, iso, open_store, redact, to_ns
from .store import partition_exists, read_partition
from .timeutil import cutoff
from .training import is_static, static_rows

FLOAT_RTOL = 1e-9
# HLL/KLL estimates depend on how sketches were grouped when merged (the batch path merges
# sliding prefix/suffix aggregates, a recompute merges the window's tiles directly), so
# sketch features are compared within their error bound, not to the last digit.
SKETCH_RTOL = 0.05


def read_source_day(store_root: str, fs: FeatureSet, source: str, day: str) -> pd.DataFrame | None:
    """The set's columns (keys, cutoff, features) of one source partition, or None when it does not exist.

    A static source (``<store>/<source>/snapshot.parquet``, e.g. ``users_wide``) has no
    partitions: every entity of its snapshot is a row of the day, with the day's cutoff
    and the values the training join serves at that time (``training.static_values``).
    """
    if is_static(store_root, source):
        return static_frame(store_root, fs, source, int(cutoff(day).value))
    if not partition_exists(store_root, source, day):
        return None
    cols = [*fs.entity_keys, "cutoff", *fs.features_of(source)]
    return read_partition(store_root, source, day, columns=cols)


def static_frame(store_root: str, fs: FeatureSet, source: str, at_ns: int) -> pd.DataFrame:
    """A static source's rows for `fs` as served at `at_ns`: keys, ``cutoff`` = `at_ns`, features."""
    keys = tuple(fs.entity_keys)
    df = static_rows(store_root, source, keys, fs.features_of(source), at_ns).to_pandas()
    df.insert(len(keys), "cutoff", pd.Timestamp(at_ns, tz="UTC"))
    return df


def materialize_day(fs: FeatureSet, day: str, store_root: str, url: str, preview_rows: int = 5,
                    status_sample: int = 1000) -> dict:
    """Write the batch rows of every source of ``fs`` for ``day`` into the online store (Dask task)."""
    t0 = time.perf_counter()
    store = open_store(url)
    try:
        store.register(fs)
        per_source, skipped, entities = {}, [], set()
        for source in fs.sources:
            t1 = time.perf_counter()
            try:
                frame = read_source_day(store_root, fs, source, day)
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a missing column
                skipped.append(f"{source}: cannot read the set's columns: {str(e).splitlines()[0][:200]}")
                continue
            if frame is None:
                skipped.append(f"{source}: no partition {day}")
                continue
            read_s = time.perf_counter() - t1
            st = store.write_frame(fs, source, frame)
            st.update(read_seconds=round(read_s, 4), write_seconds=round(time.perf_counter() - t1 - read_s, 4))
            per_source[source] = st
            entities.update(entity_ids(frame, fs.entity_keys))
        if per_source:
            store.mark_materialized(fs, day)
        sample = sorted(entities)[:status_sample]
        ents = [entity_dict(fs.entity_keys, e) for e in sample]
        now = store.lookup(fs, ents) if ents else None
        at_cut = store.lookup(fs, ents[:preview_rows], at=cutoff(day)) if ents else None
        status_now = _status_shares(now) if now else {}
        preview = []
        if at_cut:
            for i, e in enumerate(at_cut.entities):
                row = dict(e)
                for name, v, s in zip(at_cut.features, at_cut.values[i], at_cut.statuses[i]):
                    row[name.split(".", 1)[1]] = v if s == PRESENT else f"<{s}>"
                preview.append(row)
        return {
            "feature_set": fs.name, "version": fs.version, "day": day, "url": redact(url), "kind": store.kind,
            "sources": per_source, "skipped_sources": skipped, "entities": len(entities),
            "rows": sum(s["rows"] for s in per_source.values()),
            "written": sum(s["written"] for s in per_source.values()),
            "bytes": sum(s["bytes"] for s in per_source.values()),
            "status_now": status_now, "preview": preview, "seconds": time.perf_counter() - t0,
        }
    finally:
        store.close()


def _status_shares(res) -> dict:
    """Share of present / missing / expired values over a lookup result."""
    flat = [s for row in res.statuses for s in row]
    return {s: round(flat.count(s) / len(flat), 4) for s in (PRESENT, MISSING, EXPIRED)} if flat else {}


def _existing_days(store_root: str, source: str) -> list[str]:
    folder = Path(store_root) / source
    return sorted(p.name[5:] for p in folder.iterdir() if p.name.startswith("date=")) if folder.is_dir() else []


def offline_asof(store_root: str, fs: FeatureSet, entities: list[str], at: Any) -> dict[str, dict[str, tuple]]:
    """Training-set as-of rows from the offline store: source -> entity -> (cutoff_ns, values).

    Per source, the latest partition ``P`` with ``cutoff(P) <= at`` that holds the
    entity, as long as ``at - cutoff(P) <= TTL``; an entity without such a row is absent
    (the as-of join gives nulls). Scans partitions newest first and stops at the TTL.
    A static source gives its snapshot row as served at ``at`` (cutoff None).
    """
    at_ns = to_ns(at)
    out: dict[str, dict[str, tuple]] = {}
    for source in fs.sources:
        ttl = fs.ttl(source)
        feats = fs.features_of(source)
        if is_static(store_root, source):  # joined on the keys alone, at any time (training.static_values)
            df = static_frame(store_root, fs, source, at_ns)
            ids = entity_ids(df, fs.entity_keys)
            want = set(entities)
            out[source] = {eid: (None, list(row)) for eid, row in zip(ids, df[feats].itertuples(index=False, name=None))
                           if eid in want}
            continue
        remaining = set(entities)
        found: dict[str, tuple] = {}
        for d in reversed(_existing_days(store_root, source)):
            c = int(cutoff(d).value)
            if c > at_ns:
                continue
            if ttl is not None and at_ns - c > ttl.total_seconds() * 1e9:
                break
            df = read_partition(store_root, source, d, columns=[*fs.entity_keys, "cutoff", *feats])
            ids = np.asarray(entity_ids(df, fs.entity_keys), dtype=object)
            hit = np.flatnonzero(pd.Index(ids).isin(list(remaining)))
            if len(hit):
                vals = df.iloc[hit][feats]
                for eid, row in zip(ids[hit], vals.itertuples(index=False, name=None)):
                    found[eid] = (c, list(row))
                remaining.difference_update(ids[hit].tolist())
            if not remaining:
                break
        out[source] = found
    return out


def recompute_rows(store_root: str, group_name: str, day: str, entities: list[str], keys: tuple[str, ...]) -> pd.DataFrame | None:
    """The feature rows of ``day`` for some entities, recomputed from the offline tiles with ``features_for_day``.

    None when the inputs are not all in the store (no tiles of the day, or no carried
    state of the day before for a group with all-time features).
    """
    from .groups import GROUPS
    from .pipeline import state_asset, tiles_asset
    from .tiles import features_for_day
    from .timeutil import day_range, shift_day

    g = GROUPS[group_name]
    if not partition_exists(store_root, tiles_asset(g), day):
        return None
    ids = set(entities)

    def restrict(df: pd.DataFrame) -> pd.DataFrame:
        return df[pd.Index(entity_ids(df, keys)).isin(ids)]

    w = max(g.max_window_days, 1)
    tiles = {d: restrict(read_partition(store_root, tiles_asset(g), d))
             for d in day_range(shift_day(day, -(w - 1)), day) if partition_exists(store_root, tiles_asset(g), d)}
    prev = None
    if g.has_all_time:
        before = shift_day(day, -1)
        if partition_exists(store_root, state_asset(g), before):
            prev = restrict(read_partition(store_root, state_asset(g), before))
        elif partition_exists(store_root, tiles_asset(g), before):
            return None  # history exists but its carried state does not: cannot recompute exactly
    feats, _ = features_for_day(tiles, prev, g, day)
    return feats


def _norm(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.ndarray):
        return [_norm(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, np.generic):
        return _norm(v.item())
    return v


def values_equal(a: Any, b: Any, rtol: float = FLOAT_RTOL) -> bool:
    """Null equals null; floats within ``rtol``; lists element-wise; anything else by ``==``."""
    a, b = _norm(a), _norm(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y, rtol) for x, y in zip(a, b))
    return a == b


def _recompute(store_root: str, fs: FeatureSet, offline: dict[str, dict[str, tuple]]) -> int:
    """Replace as-of rows of declared groups by their recomputation from tiles (in place); rows recomputed.

    Approximate kinds (KLL quantiles) keep the stored value: a merge grouped differently may differ.
    """
    from .groups import GROUPS
    from .streaming_update import APPROXIMATE_KINDS, feature_kinds

    n = 0
    for source, rows in offline.items():
        if source not in GROUPS or not rows:
            continue
        feats = fs.features_of(source)
        kinds = feature_kinds(source)
        by_cut: dict[int, list[str]] = {}
        for eid, (c, _) in rows.items():
            by_cut.setdefault(c, []).append(eid)
        for c, eids in by_cut.items():
            day = pd.Timestamp(c - 86_400 * 10**9, tz="UTC").strftime("%Y-%m-%d")
            df = recompute_rows(store_root, source, day, eids, fs.entity_keys)
            if df is None:
                continue
            got = dict(zip(entity_ids(df, fs.entity_keys), df[feats].itertuples(index=False, name=None)))
            for eid in eids:
                if eid in got:
                    old = rows[eid][1]
                    rows[eid] = (c, [old[j] if kinds.get(f) in APPROXIMATE_KINDS else v
                                     for j, (f, v) in enumerate(zip(feats, got[eid]))])
                    n += 1
    return n


def skew_check(fs: FeatureSet, day: str, store_root: str, url: str, *, sample: int = 200, seed: int = 0,
               at: Any = None, recompute: bool = True) -> dict:
    """Compare, for a sample of entities of ``day``, the online lookup at ``at`` with offline (Dask task).

    Offline = the training-set as-of rows at ``at`` (default: the day's cutoff); with
    ``recompute``, rows of declared groups are recomputed from the offline tiles with
    ``features_for_day`` instead of read back, so online is compared with what the
    current code computes. A feature mismatches for an entity when one side serves a
    value and the other does not, or both serve different values.
    """
    t0 = time.perf_counter()
    at_ns = to_ns(at) if at is not None else int(cutoff(day).value)
    store = open_store(url, readonly=True)
    served_day = store.materialized_day(fs)
    if at is None and served_day is not None and served_day > day:
        store.close()  # the online store already serves a later day: nothing of `day` left to compare
        return {"feature_set": fs.name, "version": fs.version, "day": day, "at": iso(at_ns), "sample": 0,
                "population": 0, "mismatch_rate": {}, "mismatches": 0, "examples": [], "recomputed_rows": 0,
                "skipped": f"online store serves {served_day}", "seconds": time.perf_counter() - t0}
    ents: set[str] = set()
    for source in fs.sources:
        if partition_exists(store_root, source, day):
            df = read_partition(store_root, source, day, columns=list(fs.entity_keys))
            ents.update(entity_ids(df, fs.entity_keys))
    if not ents:  # a set of static sources only: their snapshots are the population
        for source in fs.sources:
            if is_static(store_root, source):
                ents.update(entity_ids(static_frame(store_root, fs, source, at_ns), fs.entity_keys))
    population = sorted(ents)
    rng = np.random.default_rng(seed)
    chosen = [population[i] for i in sorted(rng.choice(len(population), size=min(sample, len(population)),
                                                        replace=False))] if population else []
    offline = offline_asof(store_root, fs, chosen, at_ns)
    recomputed = _recompute(store_root, fs, offline) if recompute else 0
    try:
        res = store.lookup(fs, [entity_dict(fs.entity_keys, e) for e in chosen], at=at_ns)
    finally:
        store.close()
    names = [f.qualified for f in fs.features]
    pos = {s: [i for i, f in enumerate(fs.features) if f.source == s] for s in fs.sources}
    rtols = [_rtol(f.source, f.feature) for f in fs.features]
    mismatches = {n: 0 for n in names}
    examples = []
    for i, eid in enumerate(chosen):
        for s in fs.sources:
            off = offline[s].get(eid)
            for j, k in enumerate(pos[s]):
                on_served = res.statuses[i][k] == PRESENT
                ok = (off is None and not on_served) or (
                    off is not None and on_served and values_equal(res.values[i][k], off[1][j], rtols[k]))
                if not ok:
                    mismatches[names[k]] += 1
                    if len(examples) < 10:
                        examples.append({
                            "entity": eid, "feature": names[k],
                            "online": res.values[i][k] if on_served else f"<{res.statuses[i][k]}>",
                            "offline": _norm(off[1][j]) if off is not None else "<absent>",
                            "offline_cutoff": iso(off[0]) if off is not None else None,
                            "online_row": res.rows[i].get(s),
                        })
    n = len(chosen)
    return {
        "feature_set": fs.name, "version": fs.version, "day": day, "at": iso(at_ns), "sample": n,
        "population": len(population),
        "mismatch_rate": {k: (v / n if n else 0.0) for k, v in mismatches.items()},
        "mismatches": sum(mismatches.values()), "examples": examples, "recomputed_rows": recomputed,
        "seconds": time.perf_counter() - t0,
    }


def _rtol(source: str, feature: str) -> float:
    """Comparison tolerance of one feature: the sketch bound for distinct/quantile features."""
    from .groups import GROUPS

    g = GROUPS.get(source)
    kinds = {f.name: f.kind for f in g.features()} if g else {}
    return SKETCH_RTOL if kinds.get(feature) in ("distinct", "quantile") else FLOAT_RTOL
