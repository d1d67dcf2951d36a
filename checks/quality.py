"""Quality evaluation of one partition of any feature asset (Dask-task entry points, no Dagster).

Two steps per partition, each a Dask task that returns a small dict:

1. `profile_day` reads the partition once, evaluates the relations (and the schema for
   assets whose writer does not validate) and writes its profile (`profiles.py`). A
   current profile (same file size and mtime as the partition) is reused.
2. `evaluate_day` reads the partition's profile and the reference profiles — never the
   reference data — and returns the verdicts of the `stats`, `relations` and `drift`
   checks plus a per-feature table (missing, zero and outlier rates, PSI, KS) for
   monitoring.

Reference (`Reference`): by default the same weekday of the trailing 28 days (D-7,
D-14, D-21, D-28), or any trailing N days, or a pinned window (e.g. the training window
of a published feature set). Same-weekday because a 30-day window holds two weekdays
five times and the others four: the weekday shares of such a window follow a 7-day cycle
that a mixed-weekday reference reports as drift every day (KS ~0.13 on the demo).

A feature is compared only on reference days where its window is full
(`FeatureInfo.warmup_days`); cumulative all-time aggregates, which grow by construction,
are never compared; and a partition whose row count differs from the reference mean by
more than `DriftRules.max_row_change` (a growing all-time universe, a partial day) is
not compared either: a different population is not a drifted distribution, and the row
count has its own rule in the `stats` check.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from featurecore.groups import GROUPS
from featurecore.spec import FeatureGroup
from featurecore.store import partition_dir, partition_exists, read_partition
from featurecore.timeutil import day_range, shift_day

from .drift import DriftRules, add_counts, categorical_drift, merge_sketches, numeric_drift, worst
from .feature_schemas import validate_partition
from .freshness import Freshness, freshness_for
from .layout import FeatureLayout, layout_of_frame, layout_of_group, with_features
from .profiles import (
    PROFILE_VERSION,
    feature_rows,
    partition_rows,
    profile_frame,
    profile_is_current,
    read_profile,
    source_stamp,
    stored_stamp,
    write_profile,
)
from .relations import AnyRelation, evaluate_relations, relations_for
from .stats import StatRules, evaluate_stats


@dataclass(frozen=True)
class QualitySource:
    """A feature asset to check: its keys, what is known about its features, its relations."""

    name: str
    keys: tuple[str, ...]
    layout: FeatureLayout | None = None  # None: inferred from each partition (candidate assets)
    relations: tuple[AnyRelation, ...] = ()
    validate_on_profile: bool = False  # the writer does not validate: run the schema when profiling
    freshness: Freshness | None = field(default_factory=Freshness)  # None: no freshness check (e.g. a cadence)
    window_days: int | None = None  # largest window (None: all time) -- which inputs a partition depends on
    all_time_universe: bool = False  # rows are every entity ever seen: the row count only grows

    @classmethod
    def from_group(cls, group: FeatureGroup) -> "QualitySource":
        """A declared group: layout, relations and freshness from its declarations."""
        return cls(group.name, tuple(group.keys), layout_of_group(group), tuple(relations_for(group)),
                   False, freshness_for(group.name), None if group.has_all_time else group.max_window_days,
                   group.has_all_time)

    @classmethod
    def candidate(cls, name: str, keys: Iterable[str], *, layout: FeatureLayout | None = None,
                  relations: Iterable[AnyRelation] = (), window_days: int | None = 30) -> "QualitySource":
        """A candidate asset (keys + cutoff + generated features): schema validated when profiled.

        `window_days` is the history its features look back on (DFS, encodings and the
        30-day group features behind interactions: 30; tsfresh: 28): an inferred layout
        gets it as every feature's warm-up. No freshness check: candidate assets compute on
        a cadence (run config) that decides which partitions exist.
        """
        rel = tuple(relations) + tuple(relations_for(None, name))
        return cls(name, tuple(keys), layout, rel, True, None, window_days)

    def layout_for(self, df: pd.DataFrame) -> FeatureLayout:
        """The declared layout, or one inferred from this partition."""
        if self.layout is not None:
            return self.layout
        return with_features(layout_of_frame(self.name, self.keys, df), warmup_days=self.window_days or 30)


def group_sources(groups: Iterable[FeatureGroup] | None = None) -> list[QualitySource]:
    """Quality sources of the declared groups."""
    return [QualitySource.from_group(g) for g in (groups or GROUPS.values())]


@dataclass(frozen=True)
class Reference:
    """Which partitions a day is compared with."""

    trailing_days: int = 28
    pinned: tuple[str, str] | None = None  # inclusive (start, end), e.g. a training window
    same_weekday: bool = True  # only the same weekday of the trailing days (weekly seasonality)
    min_days: int = 3  # fewer usable reference partitions: drift is not judged

    def days_for(self, day: str) -> list[str]:
        """Candidate reference days for `day` (the day itself never)."""
        if self.pinned:
            days = [d for d in day_range(*self.pinned) if d != day]
        else:
            days = day_range(shift_day(day, -self.trailing_days), shift_day(day, -1))
        if self.same_weekday:
            wd = pd.Timestamp(day).weekday()
            days = [d for d in days if pd.Timestamp(d).weekday() == wd]
        return days

    def describe(self) -> str:
        """A short text for metadata."""
        base = f"pinned {self.pinned[0]}..{self.pinned[1]}" if self.pinned else f"trailing {self.trailing_days} days"
        return base + (", same weekday" if self.same_weekday else "")


@dataclass(frozen=True)
class QualitySettings:
    """Reference windows and thresholds of the quality checks."""

    reference: Reference = field(default_factory=Reference)
    drift: DriftRules = field(default_factory=DriftRules)
    stats: StatRules = field(default_factory=StatRules)
    stats_days: int = 14  # trailing partitions for the statistical bounds


# --------------------------------------------------------------------------- step 1: profile


def profile_day(store_root: str, source: QualitySource, day: str, force: bool = False) -> dict:
    """Profile one partition (reusing a current profile); a small summary."""
    t0 = time.perf_counter()
    if not partition_exists(store_root, source.name, day):
        return {"day": day, "exists": False}
    old = None if force else stored_stamp(store_root, source.name, day)
    if profile_is_current(store_root, source.name, day, old):
        return {"day": day, "exists": True, "reused": True, "seconds": time.perf_counter() - t0}
    stamp = source_stamp(store_root, source.name, day)
    df = read_partition(store_root, source.name, day)
    layout = source.layout_for(df)
    results = evaluate_relations(df, source.relations, source.keys)
    schema = validate_partition(df, layout, day, source.relations) if source.validate_on_profile else None
    prof = profile_frame(df, layout, relation_results=results, schema_errors=schema, stamp=stamp)
    w = write_profile(prof, store_root, source.name, day)
    return {"day": day, "exists": True, "reused": False, "rows": len(df), "bytes": w["bytes"],
            "seconds": time.perf_counter() - t0}


def load_profile(store_root: str, source: QualitySource, day: str) -> pd.DataFrame | None:
    """The current profile of a partition, computed now when missing or outdated; None if no partition."""
    prof = read_profile(store_root, source.name, day)
    if profile_is_current(store_root, source.name, day, prof):
        return prof
    if not partition_exists(store_root, source.name, day):
        return None
    profile_day(store_root, source, day, force=True)
    return read_profile(store_root, source.name, day)


# --------------------------------------------------------------------------- step 2: evaluate


def _relations_verdict(profile: pd.DataFrame) -> dict:
    rel = profile[profile["section"] == "relation"]
    findings = [
        {"item": r["name"], "status": r["status"], "message": r["message"], "hard": bool(r["hard"]),
         "value": None if pd.isna(r["statistic"]) else float(r["statistic"]),
         "examples": json.loads(r["examples"]) if isinstance(r["examples"], str) else []}
        for _, r in rel.iterrows() if r["status"] != "ok"
    ]
    table = [{"relation": r["name"], "status": r["status"], "rows": int(r["rows"]) if pd.notna(r["rows"]) else 0,
              "violations": int(r["n_outlier"]) if pd.notna(r["n_outlier"]) else 0,
              "statistic": None if pd.isna(r["statistic"]) else float(r["statistic"])} for _, r in rel.iterrows()]
    return {"status": worst(f["status"] for f in findings), "findings": findings, "table": table,
            "evaluated": len(rel)}


def _schema_verdict(profile: pd.DataFrame) -> dict:
    sch = profile[profile["section"] == "schema"]
    findings = [{"item": "schema", "status": "error", "message": m} for m in sch["message"]]
    return {"status": "error" if findings else "ok", "findings": findings}


def _drift_verdict(source: QualitySource, layout: FeatureLayout, day: str, current: pd.DataFrame,
                   refs: dict[str, pd.DataFrame], settings: QualitySettings, start: str) -> tuple[dict, dict]:
    """(verdict, per-feature drift table) of one partition against its reference profiles."""
    ref_days = sorted(refs)
    cur = feature_rows(current)
    ref_rows = {d: feature_rows(p) for d, p in refs.items()}
    table, findings = {}, []
    need = settings.reference.min_days
    rows = partition_rows(current)
    rows_of = {d: partition_rows(p) for d, p in refs.items()}
    for f in layout.features:
        entry = {"feature": f.name}
        if f.name not in cur.index:
            continue
        ready = shift_day(start, max((f.warmup_days or 0) - 1, 0))
        # a reference day counts for a feature once the feature's window is full on it
        usable = [d for d in ref_days if d >= ready and f.name in ref_rows[d].index]
        growth = (rows / np.mean([rows_of[d] for d in usable]) - 1) if usable and rows else 0.0
        if f.warmup_days is None:
            entry.update(severity="skipped", note="cumulative all-time aggregate: grows by construction, not compared")
        elif day < ready or len(usable) < need:
            entry.update(severity="skipped", note=f"{len(usable)} usable reference partition(s), need {need}"
                         + (f" (window full from {ready})" if ready > start else ""))
        elif abs(growth) > settings.drift.max_row_change:
            entry.update(severity="skipped", note=f"population changed {growth:+.0%} vs the reference mean "
                         f"(limit {settings.drift.max_row_change:.0%}): not comparable, see the row-count rule")
        elif f.categorical or cur.loc[f.name, "dtype"] == "object":
            rc = add_counts(json.loads(ref_rows[d].loc[f.name, "categories"]) for d in usable
                            if isinstance(ref_rows[d].loc[f.name, "categories"], str))
            cc = json.loads(cur.loc[f.name, "categories"]) if isinstance(cur.loc[f.name, "categories"], str) else {}
            entry.update(categorical_drift(rc, cc, settings.drift), reference_days=len(usable))
        else:
            ref_sk = merge_sketches(ref_rows[d].loc[f.name, "sketch"] for d in usable)
            entry.update(numeric_drift(ref_sk, cur.loc[f.name, "sketch"], settings.drift), reference_days=len(usable))
        table[f.name] = entry
        if entry["severity"] in ("warn", "error"):
            ks = f", KS {entry['ks']:.3f} (bound +-{entry.get('ks_bound', 0):.3f}, noise {entry['ks_noise']:.3f})" \
                if entry.get("ks") is not None else f", chi2 {entry.get('chi2')} (p={entry.get('chi2_p', float('nan')):.2g})"
            findings.append({
                "item": f.name, "status": entry["severity"], "psi": entry["psi"], "ks": entry.get("ks"),
                "message": f"{source.name}.{f.name}: PSI {entry['psi']:.3f} (noise {entry['psi_noise']:.3f}){ks} "
                           f"vs {settings.reference.describe()} ({entry['reference_days']} partitions, {entry['n_ref']} values; "
                           f"this partition {entry['n_cur']} values)",
            })
    findings.sort(key=lambda x: -(x["psi"] or 0))
    compared = sum(1 for e in table.values() if e["severity"] != "skipped")
    verdict = {"status": worst(f["status"] for f in findings), "findings": findings, "compared": compared,
               "skipped": len(table) - compared, "reference_days": len(ref_days),
               "reference": settings.reference.describe()}
    return verdict, table


EVALUATION_VERSION = "1"


def _inputs_key(store_root: str, source: QualitySource, day: str, settings: QualitySettings, start: str) -> str:
    """What an evaluation depends on: rules, settings and the partition files of the day and its reference days.

    File sizes and mtimes only (no reads): a rewritten partition changes the key, and its
    profile is then recomputed by the evaluation itself.
    """
    stamps = []
    for d in reference_days_needed([day], settings):
        folder = partition_dir(store_root, source.name, d)
        for f in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            st = f.stat()
            stamps.append(f"{d}/{f.name}:{st.st_size}:{st.st_mtime_ns}")
    blob = repr((EVALUATION_VERSION, PROFILE_VERSION, source, settings, start, stamps))
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_path(store_root: str, source: str, day: str) -> Path:
    return Path(store_root) / "_monitoring" / "evaluations" / source / f"date={day}.json"


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o)}")


def evaluate_day(store_root: str, source: QualitySource, day: str, settings: QualitySettings, start: str) -> dict:
    """Verdicts of the profile-based checks for one partition and its per-feature monitoring table.

    The result is kept in ``<store>/_monitoring/evaluations/<asset>/date=D.json`` with a key
    over the settings and the profile files it read, so the monitoring asset reuses what the
    checks computed in the same run (and a re-run with nothing changed costs a file read).
    """
    key = _inputs_key(store_root, source, day, settings, start)
    cache = _cache_path(store_root, source.name, day)
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                return {**cached["result"], "cached": True}
        except (OSError, ValueError):
            pass  # a half-written or foreign file: recompute
    result = _evaluate_day(store_root, source, day, settings, start)
    if not result.get("missing"):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps({"key": key, "result": result}, default=_jsonable))
        tmp.replace(cache)
    return result


def _evaluate_day(store_root: str, source: QualitySource, day: str, settings: QualitySettings, start: str) -> dict:
    t0 = time.perf_counter()
    current = load_profile(store_root, source, day)
    if current is None:
        # nothing written for this day (e.g. a candidate asset off its cadence): nothing to judge
        note = f"{source.name}: no partition {day} in the store, nothing to check"
        empty = {"status": "ok", "findings": [], "note": note, "evaluated": 0, "compared": 0, "table": []}
        return {"day": day, "stats": empty, "relations": empty, "drift": empty, "schema": empty, "features": [],
                "missing": True}
    part = current[current["section"] == "partition"]
    cols = json.loads(part["message"].iloc[0]) if len(part) and isinstance(part["message"].iloc[0], str) else {}
    layout = source.layout_for(pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.get("dtypes", {}).items()}))

    def profiles(days: list[str]) -> dict[str, pd.DataFrame]:
        """Current profiles of the days that have a partition."""
        out = {}
        for d in days:
            if d >= start and partition_exists(store_root, source.name, d):
                p = load_profile(store_root, source, d)
                if p is not None:
                    out[d] = p
        return out

    drift_refs = profiles(settings.reference.days_for(day))
    stat_days = day_range(shift_day(day, -settings.stats_days), shift_day(day, -1))
    stat_refs = {d: drift_refs[d] for d in stat_days if d in drift_refs}
    stat_refs.update(profiles([d for d in stat_days if d not in stat_refs]))
    stats = evaluate_stats(current, stat_refs, settings.stats, source.name, day=day, start=start, layout=layout,
                           all_time_universe=source.all_time_universe)
    relations = _relations_verdict(current)
    drift, drift_table = _drift_verdict(source, layout, day, current, drift_refs, settings, start)

    feats = feature_rows(current)
    table = []
    for name, r in feats.iterrows():
        n = r["rows"] or np.nan
        nn = (r["rows"] - r["n_missing"]) or np.nan
        d = drift_table.get(name, {})
        table.append({
            "source": source.name, "feature": name, "day": day,
            "missing_rate": r["n_missing"] / n, "zero_rate": r["n_zero"] / nn, "outlier_rate": r["n_outlier"] / nn,
            "psi": d.get("psi"), "ks": d.get("ks"), "drift": d.get("severity", "skipped"), "note": d.get("note", ""),
        })
    return {"day": day, "stats": stats, "relations": relations, "drift": drift, "schema": _schema_verdict(current),
            "features": table, "seconds": round(time.perf_counter() - t0, 3)}


def reference_days_needed(days: Iterable[str], settings: QualitySettings) -> list[str]:
    """Every day whose profile evaluating `days` reads (the days themselves included)."""
    need = set(days)
    for d in days:
        need.update(settings.reference.days_for(d))
        need.update(day_range(shift_day(d, -settings.stats_days), shift_day(d, -1)))
    return sorted(need)
