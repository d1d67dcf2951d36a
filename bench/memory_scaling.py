"""Benchmark 2: memory and per-day cost of the project's backfill as the range and windows grow.

(1) Peak memory of a full backfill (tiles + features, the Dagster code path, on the
    2-worker LocalCluster) over the first N1 vs the first N2 days of the same data (same
    daily volume; 30 vs 90 days at the real sizes). A task holds one day of raw events
    (tiles) or one window of tiles plus the all-time state (features), so the peak should
    stay flat however many days a backfill covers. Workers are restarted before each run
    so both start from the same idle baseline. The first N1 days are not a steady state
    for memory: the 30-day windows are still filling and new users keep arriving (10M
    events: 81k users by day 30, 92k by day 90), so (1b) also runs the feature step alone
    (tiles already there) over the last N1 vs all N2 days, both ending on the same day:
    same windows and users at the end, only the number of days differs.
(2) Per-day feature cost of 30-day vs 1-day windows: ``bench_user_30d`` and
    ``bench_user_1d`` are ``bench_user`` with every finite window replaced by 30 days, resp.
    1 day (duplicates dropped; the all-time recency kept), so they have the same features
    and tile columns and differ only in window length. Both read tiles only (a 30-day
    window: the stored prefix and suffix aggregates of its blocks plus the day's tile), so a
    day should cost about the same. ``bench_user`` itself (1d, 7d and 30d windows, more
    features) is shown for information. Measured as the median
    ``features_range`` seconds per day (read tiles, merge, features, write, schema check)
    over the last days of the range (the first timed day, which also rebuilds the all-time
    state from tiles, is left out), each group run alone on one worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from featurecore.spec import FeatureGroup

from .common import (
    MemoryWindow, clear_assets, fmt_bytes, fmt_ratio, fmt_seconds, fresh_work_store, table,
    timed,
)
from .windowed_features import GROUP, project_backfill


def window_variant(group: FeatureGroup, window: str, name: str) -> FeatureGroup:
    """The same group with every finite window replaced by `window` (duplicates dropped)."""
    aggs = []
    for a in group.aggregations:
        wins = tuple(dict.fromkeys(window if not w.is_all_time else w for w in a.windows))
        aggs.append(replace(a, windows=wins))
    return FeatureGroup(name, keys=group.keys, aggregations=aggs, derived=group.derived,
                        description=group.description + f" ({window} windows)")


GROUP_30D = window_variant(GROUP, "30d", "bench_user_30d")
GROUP_1D = window_variant(GROUP, "1d", "bench_user_1d")


@dataclass
class ScalingRun:
    """One timed run over ``days`` days: its events, seconds and memory."""
    days: int
    events: int
    seconds: float
    memory: MemoryWindow


@dataclass
class MemoryScalingResult:
    """Backfill runs, feature-only runs and per-day window costs of benchmark 2, rendered as tables."""
    size: str
    runs: list[ScalingRun]
    per_day: dict[str, dict]  # group -> {median, mean, days, tile_columns, features}
    feature_runs: list[ScalingRun]  # (1b): the feature step alone, the last N1 vs all N2 days

    @property
    def feature_peak_ratio(self) -> float:
        """Largest-worker peak RSS of the longer feature-only run over the shorter one's."""
        return self.feature_runs[1].memory.peak_worker / self.feature_runs[0].memory.peak_worker

    @property
    def peak_ratio(self) -> float:
        """Total peak RSS of the longer full backfill over the shorter one's."""
        return self.runs[1].memory.peak / self.runs[0].memory.peak

    @property
    def delta_ratio(self) -> float:
        """Peak RSS above idle of the longer full backfill over the shorter one's."""
        return self.runs[1].memory.delta / max(self.runs[0].memory.delta, 1)

    @property
    def worker_ratio(self) -> float:
        """Largest-worker peak RSS of the longer full backfill over the shorter one's."""
        return self.runs[1].memory.peak_worker / self.runs[0].memory.peak_worker

    @property
    def cost_ratio(self) -> float:
        """Median per-day feature seconds with 30-day windows over those with 1-day windows."""
        return self.per_day[GROUP_30D.name]["median"] / self.per_day[GROUP_1D.name]["median"]

    def render(self) -> str:
        """The run and per-day cost tables plus the ratios, as plain text."""
        rows = [[f"full backfill, {r.days} days", f"{r.events:,}", fmt_seconds(r.seconds),
                 fmt_seconds(r.seconds / r.days), fmt_bytes(r.memory.peak), fmt_bytes(r.memory.delta),
                 fmt_bytes(r.memory.peak_worker)] for r in self.runs]
        rows += [[f"features only, last {r.days} days", f"{r.events:,}", fmt_seconds(r.seconds),
                  fmt_seconds(r.seconds / r.days), fmt_bytes(r.memory.peak), fmt_bytes(r.memory.delta),
                  fmt_bytes(r.memory.peak_worker)] for r in self.feature_runs]
        a = table(["run (bench_user)", "events", "time", "per day", "peak RSS", "above idle", "largest worker"], rows,
                  title=f"Benchmark 2 - memory scaling and window cost ({self.size})")
        b = table(
            ["group", "windows", "feature s/day (median)", "mean", "days timed"],
            [[g, v["windows"], fmt_seconds(v["median"]), fmt_seconds(v["mean"]), v["days"]]
             for g, v in self.per_day.items()],
        )
        n0, n1 = self.runs[0].days, self.runs[1].days
        lines = [a, "", b, "",
                 f"peak RSS {n1} days / {n0} days: {fmt_ratio(self.peak_ratio)} total, {fmt_ratio(self.delta_ratio)} "
                 f"above idle, {fmt_ratio(self.worker_ratio)} largest worker (flat = ~1x)",
                 f"features only, same last day, {n1} days / {n0} days: largest worker "
                 f"{fmt_ratio(self.feature_peak_ratio)} (flat = ~1x)",
                 f"per-day feature cost 30-day windows / 1-day windows: {fmt_ratio(self.cost_ratio)} (close = ~1x)"]
        return "\n".join(lines)


def run(ctx) -> MemoryScalingResult:
    """Benchmark 2: full backfills and the feature step alone at two lengths, per-day cost of 30-day vs 1-day windows."""
    from featurecore.pipeline import features_range, internal_assets, plan_chunks, tile_day, tiles_asset

    sampler, data, log = ctx.sampler, ctx.data, ctx.log
    size = data.size
    n_short, n_long = size.scaling_days
    n_long = min(n_long, len(data.days))
    store = fresh_work_store(data, "scaling")
    runs = []
    for n in (n_short, n_long):
        days = data.days[:n]
        clear_assets(store, tiles_asset(GROUP), GROUP.name, *internal_assets(GROUP))
        client = ctx.cluster.fresh()
        log(f"  full backfill of {n} days ...")
        with timed(sampler) as t:
            bf = project_backfill(client, [GROUP], store, days, days[0])
        if bf["schema_errors"]:
            log(f"  note: schema failures {bf['schema_errors'][:2]}")
        runs.append(ScalingRun(n, data.events_in(days), t["seconds"], t["memory"]))
        log(f"      {fmt_seconds(t['seconds'])}, peak {fmt_bytes(t['memory'].peak)}")

    # per-day cost: the 90-day run left bench_user's tiles; add the variants' (not timed),
    # then each group alone: features_range over the last days in one task. Its first day
    # also rebuilds the all-time state from the tiles (no stored state), so it is left out.

    log("  per-day cost 30d vs 1d windows ...")
    days = data.days[:n_long]
    client.gather([client.submit(tile_day, d, [GROUP_30D, GROUP_1D], store, pure=False) for d in days])
    timed_days = days[-(size.per_day_days + 1):]
    per_day = {}
    for g in (GROUP_30D, GROUP_1D, GROUP):
        clear_assets(store, g.name, *internal_assets(g))
        t0 = time.perf_counter()
        stats = client.submit(features_range, timed_days, g, store, days[0], pure=False).result()
        wall = time.perf_counter() - t0
        secs = [s["seconds"] for s in stats[1:]]
        per_day[g.name] = {
            "windows": ", ".join(w.label for w in g.windows),
            "median": float(np.median(secs)), "mean": float(np.mean(secs)), "days": len(secs), "wall": wall,
        }
    # (1b) the feature step alone over the last n_short vs all n_long days (same last day)
    feature_runs = []
    for n in (n_short, n_long):
        fdays = days[-n:]
        clear_assets(store, GROUP.name, *internal_assets(GROUP))
        client = ctx.cluster.fresh()
        log(f"  features only, the last {n} days ...")
        with timed(sampler) as t:
            client.gather([client.submit(features_range, chunk, GROUP, store, days[0], pure=False)
                           for chunk in plan_chunks(fdays, GROUP, len(client.scheduler_info()["workers"]))])
        feature_runs.append(ScalingRun(n, data.events_in(fdays), t["seconds"], t["memory"]))
        log(f"      {fmt_seconds(t['seconds'])}, largest worker {fmt_bytes(t['memory'].peak_worker)}")
    return MemoryScalingResult(size.name, runs, per_day, feature_runs)


def summary_rows(r: MemoryScalingResult) -> list[list[str]]:
    """Rows for the final summary table: (benchmark, figure, value, target, met)."""
    n0, n1 = r.runs[0].days, r.runs[1].days
    return [
        ["2 scaling", f"peak RSS backfill {n0} days", fmt_bytes(r.runs[0].memory.peak), "", ""],
        ["2 scaling", f"peak RSS backfill {n1} days", fmt_bytes(r.runs[1].memory.peak), "", ""],
        ["2 scaling", f"peak RSS {n1}d / {n0}d (above idle)",
         f"{fmt_ratio(r.peak_ratio)} ({fmt_ratio(r.delta_ratio)})", "flat (~1x)", _yn(r.peak_ratio <= 1.25)],
        ["2 scaling", f"features only, same last day: worker peak {n1}d / {n0}d", fmt_ratio(r.feature_peak_ratio),
         "flat (~1x)", _yn(r.feature_peak_ratio <= 1.25)],
        ["2 scaling", "feature s/day 30d / 1d windows", fmt_ratio(r.cost_ratio), "close (~1x)",
         _yn(r.cost_ratio <= 1.5)],
    ]


def _yn(b: bool) -> str:
    return "yes" if b else "NO"
