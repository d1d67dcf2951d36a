"""Drive candidate computations on a Dask cluster: plan shards, submit, commit, record costs.

Used by the Dagster assets, the tests and the benchmark alike (it takes a
``distributed.Client``, never a Dagster context). All days of a run and all their
shards are submitted at once so the workers stay busy across day boundaries (DFS: a group
of days' shards as soon as its readers report their bucket counts, with the next group's
readers already submitted); a day is committed (staging folder renamed to ``date=D``, then ``_costs.json`` written) only when
every one of its shards succeeded. Failed days are cleaned up and reported together at
the end with their shard's message, after the good days are committed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from ..store import remove_folder, sweep_leftovers
from ..timeutil import to_day
from . import dfs, encodings, interactions, tsfresh_features
from .common import (
    CandidateError, EmptyShardError, EntityConfigError, commit_partition, discard_staging, new_token, plan_shards, plan_weighted_shards,
    ceil_div, shard_count, staging_dir, window_rows, write_part,
)
from .costs import family_costs, write_costs


# Featuretools pays ~0.2 s CPU per calculate_feature_matrix call for ~100 features whatever the
# shard size, and ~0.7 ms per entity on the demo: shards under ~1000 entities mostly pay overhead.
DFS_MIN_SHARD = 1000
# A DFS shard computes up to this many cutoffs from one EntitySet: one read of their windows'
# union instead of one per cutoff, while a long backfill's shard still holds a bounded window.
DFS_DAYS_PER_TASK = 8
# A DFS shard's cost per (entity, cutoff) row, in events of the row's window: shards are balanced
# by events + this per row (Featuretools' work grows with both).
DFS_ROW_COST_EVENTS = 10
# At most this many (entity, cutoff) rows per DFS shard task: bounds the feature rows a task
# holds (rows x ~100-200 float features) whatever the entity count and days per task. Within
# a task, entities are computed in batches of ``dfs.BATCH_ROWS``.
DFS_MAX_ROWS_PER_TASK = 250_000
# A DFS reader task decodes at most about this many stored events (whole days), and a shard
# task holds at most about this many: memory per task stays bounded as the window grows.
DFS_MAX_EVENTS_PER_READER = 5_000_000
DFS_MAX_EVENTS_PER_TASK = 5_000_000
# Entity buckets per planned shard: shards are whole buckets, so more buckets balance better
# (heaviest first onto the lightest shard) at the price of more, smaller buckets to plan.
DFS_BUCKETS_PER_SHARD = 16
# tsfresh's cost is per series (~35 ms each with EfficientFCParameters on 28 points) and a shard's fixed
# cost (read, frame, a 1,500-column Parquet part) is ~0.25 s: 50 entities keep that near 5%.
TSFRESH_MIN_SHARD = 50


@dataclass
class RunReport:
    """What a run did: per-day statistics, failures, the artifact manifest and timings."""

    asset: str
    days: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    prepare_seconds: float = 0.0

    @property
    def entities(self) -> int:
        """Entity rows written over all days."""
        return sum(d["entities"] for d in self.days)

    @property
    def max_worker_cpu(self) -> float:
        """CPU seconds of the busiest worker over the run: the wall time on an otherwise idle machine, roughly."""
        per: dict[str, float] = {}
        for d in self.days:
            for w, c in d.get("cpu_by_worker", {}).items():
                per[w] = per.get(w, 0.0) + c
        return max(per.values(), default=0.0)

    @property
    def throughput(self) -> float:
        """Entity rows per wall second over the whole run."""
        return self.entities / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def raise_errors(self) -> None:
        """Raise one CandidateError listing every failed day (after the good ones were committed)."""
        if self.errors:
            raise CandidateError(f"{self.asset}: {len(self.errors)} day(s) failed:\n" + "\n".join(f"- {e}" for e in self.errors))


def n_workers(client) -> int:
    """Total worker threads of the cluster (each runs one shard at a time)."""
    return max(sum(client.nthreads().values()), 1)


def _finish_day(store_root: str, asset: str, day: str, staging: Path, futures: list, families: dict, t0: float,
                extra: dict | None = None, per_day: bool = False, empty: Callable | None = None) -> tuple[dict | None, str | None]:
    """Commit a day once all its shards finished (`per_day`: a shard's result maps day -> its stats;
    when no shard had the day's entities, `empty(day)` writes its empty partition)."""
    from distributed import wait

    wait(futures)
    failed = [f for f in futures if f.status != "finished"]
    if failed:
        discard_staging(staging)
        exc = failed[0].exception()
        return None, f"{day}: {type(exc).__name__}: {exc}" + (f" (and {len(failed) - 1} more shard(s))" if len(failed) > 1 else "")
    results = [f.result() for f in futures]
    if per_day:
        results = [r[day] for r in results if day in r]
        if not results and empty is not None:
            return empty(day), None
    commit_partition(store_root, asset, day, staging)
    seconds: dict[str, float] = {}
    col_bytes: dict[str, int] = {}
    for r in results:
        for k, v in r["seconds"].items():
            seconds[k] = seconds.get(k, 0.0) + v
        for k, v in r["column_bytes"].items():
            col_bytes[k] = col_bytes.get(k, 0) + v
    costs = family_costs(families, seconds, col_bytes)
    write_costs(store_root, asset, day, costs)
    rows = sum(r["rows"] for r in results)
    by_worker: dict[str, float] = {}
    for r in results:
        by_worker[r.get("worker", "?")] = by_worker.get(r.get("worker", "?"), 0.0) + r.get("cpu_seconds", 0.0)
    stat = {
        "day": day, "entities": sum(r["entities"] for r in results), "rows": rows, "shards": len(results),
        "bytes": sum(r["bytes"] for r in results), "compute_seconds": round(sum(r["task_seconds"] for r in results), 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(sum(by_worker.values()), 3),
        "cpu_by_worker": {k: round(v, 3) for k, v in by_worker.items()},
        "null_share": round(sum(r["null_share"] * r["rows"] for r in results) / rows, 4) if rows else 0.0,
        "families": {k: {"seconds": round(v["seconds"], 3), "bytes": v["bytes"], "n_features": len(v["features"])} for k, v in costs.items()},
        **(extra or {}),
    }
    dropped = [e for r in results for e in r.get("dropped_short", [])]
    if any(r.get("n_dropped_short") for r in results):
        stat["dropped_short"] = sum(r["n_dropped_short"] for r in results)
        stat["dropped_short_examples"] = dropped[:10]
    return stat, None


def _finish_all(store_root: str, asset: str, pending: list, families: dict, t0: float, report: RunReport,
                per_day: bool = False, empty: Callable | None = None) -> RunReport:
    """Commit every (day, staging, futures) of a run in turn; failed days become report errors."""
    for day, staging, futs in pending:
        stat, err = _finish_day(store_root, asset, day, staging, futs, families, t0, per_day=per_day, empty=empty)
        if err:
            report.errors.append(err)
        else:
            report.days.append(stat)
    report.days.sort(key=lambda s: s["day"])
    report.wall_seconds = time.perf_counter() - t0
    return report


def _empty_day(store_root: str, asset: str, day: str, token: str, keys: list[str], features: list[str], families: dict) -> dict:
    """A day with no entities: an empty partition with the full schema, and a note."""
    from .common import as_candidates

    staging = staging_dir(store_root, asset, day, token, make=True)
    frame = as_candidates(pd.DataFrame({f: pd.Series(dtype="float64") for f in features}), pd.DataFrame({k: pd.Series(dtype=object) for k in keys}), day)
    w = write_part(frame, staging, 0)
    commit_partition(store_root, asset, day, staging)
    write_costs(store_root, asset, day, family_costs(families, {}, w["column_bytes"]))
    return {"day": day, "entities": 0, "rows": 0, "shards": 0, "bytes": w["bytes"], "compute_seconds": 0.0,
            "wall_seconds": 0.0, "null_share": 0.0, "note": "no entities before the cutoff: empty partition written"}


def _run_sharded(client, store_root: str, asset: str, days: list[str], entities_of: Callable, submit_shard: Callable,
                 families: dict, keys: list[str], features: list[str], shards_per_worker: int, min_shard_entities: int,
                 report: RunReport, only_entities: list | None = None) -> RunReport:
    t0 = time.perf_counter()
    token = new_token()
    with _cleanup_on_error(client, Path(store_root) / asset, _RunCleanup(token)) as run:
        entity_lists = client.gather([client.submit(entities_of, d, pure=False) for d in days])
        if only_entities is not None:
            keep = set(only_entities)
            entity_lists = [[e for e in ents if e in keep] for ents in entity_lists]
        workers = n_workers(client)
        pending = []
        for day, ents in zip(days, entity_lists):
            if not ents:
                run.staging(staging_dir(store_root, asset, day, token))
                report.days.append(_empty_day(store_root, asset, day, token, keys, features, families))
                continue
            shards = plan_shards(ents, shard_count(len(ents), workers, shards_per_worker, min_shard_entities, days_in_run=len(days)))
            staging = run.staging(staging_dir(store_root, asset, day, token, make=True))
            futs = run.track([submit_shard(day, shard, str(staging), i, len(shards)) for i, shard in enumerate(shards)])
            pending.append((day, staging, futs))
        return _finish_all(store_root, asset, pending, families, t0, report)


class _RunCleanup:
    """What an interrupted or failed run must cancel (its futures) and remove (its staging folders)."""

    def __init__(self, token: str):
        self.token = token
        self.futures: list = []
        self.folders: list[Path] = []

    def track(self, futures: list) -> list:
        self.futures.extend(futures)
        return futures

    def staging(self, folder: Path) -> Path:
        self.folders.append(folder)
        return folder


# A live run touches its `.live-<token>` marker this often; a run's folders are swept only once
# its marker (or, without one, the folder itself) is older than STALE_SECONDS.
HEARTBEAT_SECONDS = 600
STALE_SECONDS = 24 * 3600


@contextlib.contextmanager
def _cleanup_on_error(client, asset_dir: Path, run: _RunCleanup):
    """Mark the run live and sweep what dead runs left in `asset_dir`; on an error or interrupt, cancel
    the run's tasks and remove the staging folders of the days it had not committed (a committed one
    was renamed away). A cancelled task still running cannot write: the folders are made only by
    the client and removed by rename first (``store.remove_folder``)."""
    asset_dir.mkdir(parents=True, exist_ok=True)
    marker = asset_dir / f".live-{run.token}"
    marker.touch()
    stop = threading.Event()

    def heartbeat() -> None:  # a backfill can outlast STALE_SECONDS: its folders must not look dead
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                marker.touch()

    threading.Thread(target=heartbeat, name=f"run-{run.token}-heartbeat", daemon=True).start()
    try:
        _sweep_stale(asset_dir)
        yield run
    except BaseException:
        with contextlib.suppress(Exception):  # a lost cluster must not hide the run's own error
            client.cancel(run.futures)
        for folder in run.folders:
            discard_staging(folder)
        raise
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            marker.unlink()


def _day_groups(days: list[str], days_per_task: int, workers: int) -> list[list[str]]:
    """Consecutive groups of at most `days_per_task` days, as even as possible, and (when there
    are at least as many groups as workers) a multiple of the workers so none idles at the end."""
    if not days:
        return []
    n = ceil_div(len(days), max(days_per_task, 1))
    if n >= workers:
        n = min(ceil_div(n, workers) * workers, len(days))
    return _even_parts(days, n)


def run_dfs(client, store_root: str, days: list[str], start: str, cfg: dfs.DFSConfig, *, shards_per_worker: int = 1,
            min_shard_entities: int = DFS_MIN_SHARD, days_per_task: int = DFS_DAYS_PER_TASK, rediscover: bool = False,
            only_entities: list | None = None) -> RunReport:
    """DFS candidates for `days`: discover definitions on a sample if needed; then, per group of up to
    `days_per_task` days, reader tasks decode the group's window once (split by day) into entity
    buckets, and one task per shard of buckets computes all its entities' cutoffs from one EntitySet.

    Shards are planned from the readers' per-bucket counts (events, entities), so no listing pass
    precedes them and no event of a group is decoded twice. `only_entities` restricts every day to those
    entities (benchmarks, partial recomputes).
    """
    from distributed import wait

    report = RunReport(dfs.ASSET)
    t0 = time.perf_counter()
    manifest = None if rediscover else dfs.load_manifest(store_root, cfg)
    if manifest is None:
        manifest = client.submit(dfs.discover, store_root, days[0], start, cfg, pure=False).result()
        manifest = {**manifest, "discovered_in_this_run": True}
    report.manifest, report.prepare_seconds = manifest, time.perf_counter() - t0
    fams = dfs.families(manifest)
    features = manifest["features"] + fams.get(dfs.PCA_FAMILY, [])

    t0 = time.perf_counter()
    token = new_token()
    days = sorted(set(days), key=to_day)
    failed: dict[str, str] = {}
    for d in days:
        try:
            dfs.check_source(store_root, d, start, cfg)
        except EntityConfigError:
            raise  # a misconfigured entity fails the whole run at once, naming the columns
        except Exception as exc:  # an unreadable file: this day fails, the others go on
            failed[d] = f"{d}: {type(exc).__name__}: {exc}"
    days = [d for d in days if d not in failed]
    workers = n_workers(client)
    groups = _day_groups(days, days_per_task, workers)
    staging = {d: staging_dir(store_root, dfs.ASSET, d, token) for d in days}
    futures: dict[str, list] = {d: [] for d in days}

    shuffle = Path(store_root) / dfs.ASSET / f".shuffle-{token}"
    run = _RunCleanup(token)  # every future of the run (what an error cancels, the final cleanup waits for), its staging
    for d in days:
        run.staging(staging[d])

    def read(k: int, group: list[str]) -> list:
        union = dfs._union_window(group, start, cfg)
        stored = window_rows(store_root, cfg.source, union)
        n_readers = max(1, min(len(union), max(workers, ceil_div(stored, DFS_MAX_EVENTS_PER_READER))))
        n_buckets = DFS_BUCKETS_PER_SHARD * max(workers * max(shards_per_worker, 1), ceil_div(stored, DFS_MAX_EVENTS_PER_TASK))
        before = max(dfs.cutoff_of(d) for d in group)
        # made here, never by a reader: a reader still running after its group was cleaned up then
        # fails to write instead of leaving a file behind
        folder = shuffle / f"group-{k:04d}"
        folder.mkdir(parents=True)
        return run.track([client.submit(dfs.read_buckets, store_root, part, cfg, before, n_buckets, only_entities,
                                        str(folder / f"reader-{i:04d}.arrow"), pure=False)
                          for i, part in enumerate(_even_parts(union, n_readers))])

    def empty(day: str) -> dict:
        return _empty_day(store_root, asset=dfs.ASSET, day=day, token=token, keys=[cfg.entity], features=features, families=fams)

    try:
        with _cleanup_on_error(client, Path(store_root) / dfs.ASSET, run):
            # one group of readers ahead: the cluster decodes the next window while the client plans
            # this one (windows of a backfill overlap); a group's files go once its shards are done
            ahead = read(0, groups[0]) if groups else []
            for k, group in enumerate(groups):
                readers, ahead = ahead, (read(k + 1, groups[k + 1]) if k + 1 < len(groups) else [])
                shards, err = _submit_dfs_shards(client, readers, store_root, start, cfg, manifest, group, staging, futures,
                                                 workers, shards_per_worker, min_shard_entities, len(groups), only_entities)
                run.track(shards)
                folder = str(shuffle / f"group-{k:04d}")
                if err:  # a reader failed: its siblings are not needed (one still running fails to write)
                    failed.update({d: f"{d}: {err}" for d in group})
                    client.cancel(readers)
                    _remove_tree(folder)
                else:
                    run.track([client.submit(_remove_tree, folder, *shards, pure=False)])
            report.errors.extend(failed.values())
            _finish_all(store_root, dfs.ASSET, [(d, staging[d], futures[d]) for d in days if d not in failed], fams, t0,
                        report, per_day=True, empty=empty)
    finally:
        # after a success every task has ended; after an error the cancelled ones may still run,
        # but none makes a folder and the removal renames the run's folder away first
        with contextlib.suppress(Exception):  # never hides the run's own error
            wait(run.futures, timeout=60)
        _remove_tree(str(shuffle))
    report.errors.sort()  # day order, whichever step failed
    return report


def _submit_dfs_shards(client, readers: list, store_root: str, start: str, cfg: dfs.DFSConfig, manifest: dict,
                       group: list[str], staging: dict, futures: dict, workers: int, shards_per_worker: int,
                       min_shard_entities: int, n_groups: int, only_entities: list | None) -> tuple[list, str | None]:
    """Plan one group's shards from its readers' bucket counts and submit them (appending to
    `futures`); returns the shard futures, and the readers' error message when one failed."""
    try:
        stats = [b.stats() for b in client.gather(readers)]  # small: the events stay in the shuffle files
    except Exception as exc:
        return [], f"{type(exc).__name__}: {exc}"
    events = sum(s[0] for s in stats)
    entities = sum(s[1] for s in stats)  # an entity seen by two readers counts twice: an upper bound
    n_buckets = len(events)
    n = max(1, shard_count(int(entities.sum()), workers, shards_per_worker, min_shard_entities, days_in_run=n_groups),
            ceil_div(int(entities.sum()) * len(group), DFS_MAX_ROWS_PER_TASK), ceil_div(int(events.sum()), DFS_MAX_EVENTS_PER_TASK))
    for d in group:  # made by the client, never by a shard (see staging_dir)
        Path(staging[d]).mkdir(parents=True, exist_ok=True)
    weight = events + DFS_ROW_COST_EVENTS * entities * len(group)
    # every bucket belongs to a shard, empty ones too (their snapshot users still get rows)
    shards = plan_weighted_shards({b: float(weight[b]) for b in range(n_buckets)}, min(n, n_buckets))
    submitted = []
    for i, buckets in enumerate(shards):
        fut = client.submit(dfs.shard_task, store_root, start, cfg, manifest, group, readers, buckets, n_buckets,
                            {d: str(staging[d]) for d in group}, i, len(shards), only_entities, dfs.BATCH_ROWS,
                            pure=False)
        submitted.append(fut)
        for d in group:
            futures[d].append(fut)
    return submitted, None


def _remove_tree(path: str, *_after) -> None:
    """Delete a run's shuffle files (as a Dask task: scheduled after the shards that read them)."""
    remove_folder(Path(path))


def _sweep_stale(asset_dir: Path, older_than_s: float = STALE_SECONDS) -> None:
    """Remove what runs killed outright left behind: the `.staging-*` and `.shuffle-*` folders of runs
    whose `.live-<token>` marker is gone or stale, once untouched for `older_than_s` (folders of runs
    started before markers existed have only their own age), and the store's own leftovers
    (``store.sweep_leftovers``: `.trash-*`, a killed commit's `.old-*`)."""
    now = time.time()
    sweep_leftovers(asset_dir, older_than_s)

    def age(p: Path) -> float:
        try:
            return now - p.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    live = set()
    for m in asset_dir.glob(".live-*"):
        if age(m) <= older_than_s:
            live.add(m.name[len(".live-"):])
        else:
            with contextlib.suppress(OSError):
                m.unlink()
    for old in [*asset_dir.glob(".shuffle-*"), *asset_dir.glob(".staging-*")]:
        token = old.name.rsplit("-", 1)[-1]
        if token not in live and age(old) > older_than_s:
            _remove_tree(str(old))


def _even_parts(items: list, n: int) -> list[list]:
    """`items` in `n` consecutive parts of nearly equal length (none empty)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, i = [], 0
    for k in range(n):
        j = i + size + (1 if k < extra else 0)
        out.append(items[i:j])
        i = j
    return out


def run_tsfresh(client, store_root: str, asset: str, days: list[str], start: str, cfg: tsfresh_features.TsfreshConfig, *,
                shards_per_worker: int = 3, min_shard_entities: int = TSFRESH_MIN_SHARD, reprepare: bool = False,
                only_entities: list | None = None) -> RunReport:
    """tsfresh candidates for `days`: resolve parameters (and fit PCA) if needed, then one task per entity shard."""
    report = RunReport(asset)
    t0 = time.perf_counter()
    manifest = None if reprepare else tsfresh_features.load_manifest(store_root, asset, cfg)
    if manifest is None:
        manifest = client.submit(tsfresh_features.prepare, store_root, asset, days[0], start, cfg, pure=False).result()
        manifest = {**manifest, "prepared_in_this_run": True}
    report.manifest, report.prepare_seconds = manifest, time.perf_counter() - t0
    fams = tsfresh_features.families(manifest)

    def submit(day, shard, staging, i, n):
        return client.submit(tsfresh_features.shard_task, store_root, asset, day, start, cfg, manifest, shard, staging, i, n, pure=False)

    def entities_of(day):
        tsfresh_features.check_source(store_root, day, start, cfg.source)
        return tsfresh_features.list_entities(store_root, day, start, cfg.source)

    return _run_sharded(client, store_root, asset, days, entities_of, submit, fams, [cfg.source.entity],
                        [f for fs in fams.values() for f in fs], shards_per_worker, min_shard_entities, report, only_entities)


def _run_daily(client, store_root: str, asset: str, days: list[str], task: Callable, families: dict, report: RunReport) -> RunReport:
    t0 = time.perf_counter()
    token = new_token()
    with _cleanup_on_error(client, Path(store_root) / asset, _RunCleanup(token)) as run:
        pending = []
        for day in days:
            staging = run.staging(staging_dir(store_root, asset, day, token, make=True))
            pending.append((day, staging, run.track([task(day, str(staging))])))
        return _finish_all(store_root, asset, pending, families, t0, report)


def run_interactions(client, store_root: str, days: list[str], cfg: interactions.InteractionConfig, *, replan: bool = False) -> RunReport:
    """Interaction candidates for `days`: plan on the first day if needed, then one task per day."""
    report = RunReport(interactions.ASSET)
    t0 = time.perf_counter()
    plan = None if replan else interactions.load_plan(store_root, cfg)
    if plan is None:
        plan = {**client.submit(interactions.make_plan, store_root, days[0], cfg, pure=False).result(), "planned_in_this_run": True}
    report.manifest, report.prepare_seconds = plan, time.perf_counter() - t0
    return _run_daily(client, store_root, interactions.ASSET, days,
                      lambda d, st: client.submit(interactions.day_task, store_root, d, cfg, plan, st, pure=False),
                      interactions.families(plan), report)


def run_encodings(client, store_root: str, days: list[str], start: str, cfg: encodings.EncodingConfig, *, replan: bool = False) -> RunReport:
    """Encoded candidates for `days`: fit the encoding plan if needed, then one task per day."""
    report = RunReport(encodings.ASSET)
    t0 = time.perf_counter()
    plan = None if replan else encodings.load_plan(store_root, cfg)
    if plan is None:
        plan = {**client.submit(encodings.make_plan, store_root, days[0], cfg, pure=False).result(), "planned_in_this_run": True}
    report.manifest, report.prepare_seconds = plan, time.perf_counter() - t0
    return _run_daily(client, store_root, encodings.ASSET, days,
                      lambda d, st: client.submit(encodings.day_task, store_root, d, start, cfg, plan, st, pure=False),
                      encodings.families(plan, cfg), report)


__all__ = ["RunReport", "run_dfs", "run_tsfresh", "run_interactions", "run_encodings", "EmptyShardError"]
