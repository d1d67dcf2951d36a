"""Benchmark 4: candidate throughput (entity rows/s) of DFS and tsfresh, one process vs the 2-worker cluster.

For a growing number of entities N (users, a seeded sample of those active in the window),
each implementation produces and writes the candidates of the N entities — DFS for 4
weekly cutoffs ending on the last day of the data (a backfill, the asset's real workload;
one cutoff of the small size is about a second of work, too little to amortise a run's
fixed cost), tsfresh for the last day's cutoff:

- **one process**: ``dfs.compute_window`` / ``tsfresh_features.compute`` over all N entities
  in this process (for DFS the same code as a cluster shard: one read of the cutoffs'
  windows' union, each day's entities found in the events read, one EntitySet and one
  ``calculate_feature_matrix`` for all 4 cutoffs per batch of ``dfs.BATCH_ROWS`` (entity,
  day) rows; for tsfresh listing the entities and one
  ``extract_features(n_jobs=0)`` call), plus writing the Parquet.
- **cluster**: ``runner.run_dfs`` / ``runner.run_tsfresh`` on the LocalCluster (2 workers x
  1 thread), with the assets' default sharding. DFS: reader tasks decode the window once
  (split by day) into entity buckets in shuffle files, one task per shard of buckets
  computes all 4 cutoffs of its entities (in the same batches). tsfresh: list entities on a worker, one task per entity shard reading
  its entities' rows. Each shard writes its own parts; the client only commits partitions
  and writes ``_costs.json``.
- **shards alone vs side by side** (largest DFS N): the cluster run's two shard tasks, timed
  from the task stream, against the same two shards run one after the other on a 1-worker
  LocalCluster (``shards_per_worker=2`` plans the same buckets). The difference is what two
  busy cores cost each other on this machine; the run's wall time without it shows what
  the scheduling and the reads leave of the target.
- **tsfresh ClusterDaskDistributor** (reference, middle N): tsfresh's own distributor on
  the same cluster, default chunking, called from this process; results come back through
  the client and are written here.

Definitions (DFS discovery on a 400-entity sample) and tsfresh parameters are prepared
once before timing; their cost is reported apart. DFS: default ``DFSConfig`` (depth 3,
30-day training window). tsfresh: ``EfficientFCParameters``, daily event counts and
purchase amounts over 28 days (2 series per entity). The cluster output is compared with
the one-process output (same rows, values equal to 1e-9 relative). "CPU bound" = CPU
seconds of the computing thread in one process / those of the busiest worker's task
threads (``time.thread_time``, so Dask's own background threads do not count): the
speed-up to expect on an idle machine, since wall-clock ratios on a shared machine are noise.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from featurecore.timeutil import shift_day

from .common import fmt_ratio, fmt_seconds, fresh_work_store, table, timed

ALL = 10**12  # every user active at the last cutoff: a partition computes all its entities, not a sample
SCALES = {
    "tiny": {"dfs": (50, 150), "tsfresh": (24, 48)},
    "small": {"dfs": (300, 700, ALL), "tsfresh": (100, 200, 400)},
    "large": {"dfs": (2000, 10000, ALL), "tsfresh": (250, 500, 1000)},
}
TARGET = 1.8
DFS_CUTOFFS = 4


@dataclass
class Point:
    """One (family, N) measurement."""

    family: str
    n: int
    single_s: float
    cluster_s: float
    shards: int
    agree: bool
    single_cpu: float = 0.0  # CPU seconds of the computing thread, one-process run
    worker_cpu: float = 0.0  # CPU seconds of the busiest worker's task thread, cluster run
    distributor_s: float | None = None
    label: str = ""  # how the entity rows were made (e.g. "1,000 x 4 cutoffs")
    runs: list[float] = field(default_factory=list)  # speed-up of each repeated run (largest N)

    @property
    def speedup(self) -> float:
        """One-process wall seconds / cluster wall seconds."""
        return self.single_s / self.cluster_s if self.cluster_s > 0 else float("nan")

    @property
    def cpu_speedup(self) -> float:
        """One-process CPU time / busiest worker's CPU time: the speed-up on an idle machine, roughly."""
        return self.single_cpu / self.worker_cpu if self.worker_cpu > 0 else float("nan")


@dataclass
class CandidatesResult:
    """Every measurement of the benchmark and how to print it."""

    size: str
    day: str
    points: list[Point] = field(default_factory=list)
    prepare: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    contention: dict = field(default_factory=dict)  # DFS shards side by side vs alone, largest N

    def top(self, family: str) -> Point:
        """The largest measurement of a family."""
        return max((p for p in self.points if p.family == family), key=lambda p: p.n)

    def render(self) -> str:
        """The result table and notes as text."""
        rows = []
        for p in self.points:
            rows.append([p.family, p.label or f"{p.n:,}", fmt_seconds(p.single_s), f"{p.n / p.single_s:,.1f}", fmt_seconds(p.cluster_s),
                         f"{p.n / p.cluster_s:,.1f}", fmt_ratio(p.speedup), fmt_ratio(p.cpu_speedup), str(p.shards),
                         "yes" if p.agree else "NO", ", ".join(fmt_ratio(r) for r in p.runs)])
            if p.distributor_s:
                rows.append([f"{p.family} ClusterDaskDistributor", f"{p.n:,}", "", "", fmt_seconds(p.distributor_s),
                             f"{p.n / p.distributor_s:,.1f}", fmt_ratio(p.single_s / p.distributor_s), "", "-", "", ""])
        out = table(["candidates", "entity rows", "1 process", "ent/s", "2 workers", "ent/s", "speed-up", "CPU bound", "shards", "equal", "runs"], rows,
                    title=f"Candidate throughput, last cutoff {self.day} (size={self.size}; target speed-up >= {TARGET}x on 2 workers)")
        prep = ", ".join(f"{k} {fmt_seconds(v)}" for k, v in self.prepare.items())
        return out + f"\n  prepared once, not timed above: {prep}\n" + "\n".join(f"  - {n}" for n in self.notes)


def _warm(_=None) -> bool:
    warnings.filterwarnings("ignore")
    import featuretools  # noqa: F401
    import tsfresh  # noqa: F401

    import featurecore.candidates.dfs  # noqa: F401
    import featurecore.candidates.tsfresh_features  # noqa: F401
    return True


def _shard_seconds(client, run) -> tuple[list[float], object]:
    """Compute seconds of each DFS shard task of `run()` (from the task stream), and its result."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        out = run()
    secs = [ss["stop"] - ss["start"] for x in ts.data if str(x["key"]).startswith("shard_task")
            for ss in x["startstops"] if ss["action"] == "compute"]
    return sorted(secs), out


def shards_alone(store: str, days: list[str], start: str, cfg, ents: list) -> list[float]:
    """Seconds of the 2-worker run's two DFS shards run one at a time on a warmed 1-worker cluster: the same
    shards (``shards_per_worker=2`` plans the same buckets), each with the machine to itself."""
    from distributed import Client

    from featurecore.candidates import runner
    from resources.local_cluster import start_local_cluster

    cluster = start_local_cluster(n_workers=1)
    try:
        with Client(cluster) as client:
            client.run(_warm)
            runner.run_dfs(client, store, days, start, cfg, shards_per_worker=2, only_entities=ents[:2000])
            secs, rep = _shard_seconds(client, lambda: runner.run_dfs(client, store, days, start, cfg,
                                                                       shards_per_worker=2, only_entities=ents))
            rep.raise_errors()
            return secs
    finally:
        cluster.close()


def _work_store(data, name: str) -> str:
    """Fresh work store: raw_events symlinked, users/products ingested from the landing zone (not timed)."""
    from featurecore.config import load_source_config
    from featurecore.ingest import ingest_dimension

    store = fresh_work_store(data, name)
    cfg = replace(load_source_config(), landing_root=data.landing_root, store_root=store, partition_start=data.days[0])
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    return store


def _read_all(store: str, asset: str, day: str, key: str) -> pd.DataFrame:
    from featurecore.store import read_partition

    return read_partition(store, asset, day).sort_values(key, ignore_index=True)


def _equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    try:
        pd.testing.assert_frame_equal(a, b, rtol=1e-9, check_dtype=False)
        return True
    except AssertionError:
        return False


def _single_many(store: str, asset: str, fn) -> tuple[float, float]:
    """Wall and CPU seconds of fn() -> {day: frame} and writing each frame as its day's partition, in this process."""
    from featurecore.candidates.common import commit_partition, new_token, staging_dir, write_part

    t0, c0 = time.perf_counter(), time.thread_time()
    token = new_token()
    for d, df in fn().items():
        staging = staging_dir(store, asset, d, token, make=True)
        write_part(df, staging, 0)
        commit_partition(store, asset, d, staging)
    return time.perf_counter() - t0, time.thread_time() - c0


def run(ctx) -> CandidatesResult:
    """Measure DFS and tsfresh, one process vs the cluster, for each N of the size."""
    from featurecore.candidates import dfs, runner
    from featurecore.candidates import tsfresh_features as tsf

    warnings.filterwarnings("ignore")
    data = ctx.data
    size = data.size.name
    scales = SCALES[size]
    start, day = data.days[0], data.days[-1]
    res = CandidatesResult(size, day)
    repeats = data.size.repeats
    client = ctx.cluster.fresh(featuretools=True)
    client.run(_warm)
    _warm()
    store = _work_store(data, "candidates")
    single_store = str(Path(store).parent / "candidates-single")
    shutil.rmtree(single_store, ignore_errors=True)
    shutil.copytree(store, single_store, symlinks=True)

    # ---- DFS
    cfg = dfs.DFSConfig()
    t0 = time.perf_counter()
    manifest = client.submit(dfs.discover, store, day, start, cfg, pure=False).result()
    res.prepare["DFS discovery (400-entity sample)"] = time.perf_counter() - t0
    shutil.copytree(Path(store) / "_artifacts", Path(single_store) / "_artifacts", dirs_exist_ok=True)
    everyone = dfs.list_entities(store, day, start, replace(cfg, entities="active"))
    rng = np.random.default_rng(0)
    order = list(rng.permutation(np.array(everyone, dtype=object)))
    ns = sorted({min(n, len(order)) for n in scales["dfs"]})
    ctx.log(f"  DFS: {len(manifest['features'])} features, {len(everyone):,} active users; N = {ns}")
    # a weekly backfill of DFS_CUTOFFS cutoffs: the asset's real workload, and enough work per run to amortise
    # the fixed cost of a run (reading the window, scheduling, committing)
    days = [shift_day(day, -7 * k) for k in range(DFS_CUTOFFS)][::-1]
    runner.run_dfs(client, store, [day], start, cfg, only_entities=order[: ns[0]])  # warm the workers (not timed)
    def dfs_pair(ents: list) -> tuple[float, float, float, object]:
        def one_process() -> dict:
            return dfs.compute_window(single_store, days, start, cfg, manifest, ents)[0]

        one, one_cpu = _single_many(single_store, dfs.ASSET, one_process)
        with timed() as t:
            rep = runner.run_dfs(client, store, days, start, cfg, only_entities=ents)
        rep.raise_errors()
        return one, one_cpu, t["seconds"], rep

    # what every shard pays whatever its size (Featuretools' work per cutoff and feature, reading the window,
    # writing): measured on 10 entities in one process, best of 3
    tiny = sorted(order[:10])
    fixed = min(_single_many(single_store, dfs.ASSET, lambda: dfs.compute_window(single_store, days, start, cfg, manifest,
                                                                                  tiny)[0])[0] for _ in range(3))
    for n in ns:
        ents = sorted(order[:n])
        one, one_cpu, cl, rep, runs = _repeated(dfs_pair, ents, repeats if n == ns[-1] else 1)
        same = all(_equal(_read_all(single_store, dfs.ASSET, d, "user_id"), _read_all(store, dfs.ASSET, d, "user_id")) for d in days)
        rows = sum(x["entities"] for x in rep.days)
        res.points.append(Point("DFS", rows, one, cl, rep.days[-1]["shards"], same, one_cpu, rep.max_worker_cpu,
                                label=f"{n:,}{' (all)' if n == len(order) else ''} x {len(days)} cutoffs", runs=runs))
        ctx.log(f"    N={n} x {len(days)} cutoffs: 1 process {one:.1f}s, cluster {cl:.1f}s")

    top = res.top("DFS")
    bound = top.single_s / (fixed + (top.single_s - fixed) / 2)
    res.notes.append(f"DFS fixed cost: 10 entities x {len(days)} cutoffs take {fmt_seconds(fixed)} in one process (decoding "
                     "the window, Featuretools' work per call, writing); every shard pays Featuretools' part again, so if "
                     "none of it halved on the cluster, the speed-up with one shard per worker at "
                     f"{top.label} would be at most {top.single_s:.2f} / ({fixed:.2f} + {top.single_s - fixed:.2f} / 2) "
                     f"= {bound:.2f}x before any scheduling or two-busy-cores cost. The one-process runs read with one "
                     "Arrow thread, like a worker (Dask's Nanny sets OMP_NUM_THREADS=1 in this process too).")

    # the same shards with the machine to themselves: what two busy cores cost each other here
    top_ents = sorted(order[: ns[-1]])
    t0 = time.perf_counter()
    both, _ = _shard_seconds(client, lambda: runner.run_dfs(client, store, days, start, cfg, only_entities=top_ents))
    wall = time.perf_counter() - t0
    alone = shards_alone(store, days, start, cfg, top_ents)
    if len(both) == len(alone) == 2:
        # the wall time waits for the slower shard: what it lost side by side is what could be saved
        # (nothing when the slower lone shard came out slower still: the machine's noise)
        spared = max(max(both) - max(alone), 0.0)
        c = res.contention = {"both": both, "alone": alone, "wall": wall, "slowdown": sum(both) / sum(alone) - 1,
                              "speedup_without": top.single_s / max(wall - spared, 1e-9)}
        without = (f"~{fmt_seconds(wall - spared)} had the slower shard run as fast as alone" if spared > 0 else
                   "and nothing to take away (the slower shard alone was no faster than side by side)")
        res.notes.append(
            f"two busy cores: the cluster's 2 DFS shards at {top.label} take {', '.join(fmt_seconds(x) for x in both)} "
            f"side by side and {', '.join(fmt_seconds(x) for x in alone)} one at a time on a 1-worker cluster "
            f"({c['slowdown']:+.0%} in total shard time); that run took {fmt_seconds(wall)}, {without}: "
            f"{fmt_ratio(c['speedup_without'])} over the one-process median (the rest: the readers before the shards, "
            "scheduling, commits).")
        ctx.log(f"    DFS shards side by side vs alone: {c['slowdown']:+.0%}")

    # ---- tsfresh
    tcfg = tsf.TsfreshConfig()
    t0 = time.perf_counter()
    tman = client.submit(tsf.prepare, store, "tsfresh_candidates", day, start, tcfg, pure=False).result()
    res.prepare["tsfresh parameters"] = time.perf_counter() - t0
    shutil.copytree(Path(store) / "_artifacts", Path(single_store) / "_artifacts", dirs_exist_ok=True)
    active = tsf.list_entities(store, day, start, tcfg.source)
    order = list(rng.permutation(np.array(active, dtype=object)))
    ns = sorted({min(n, len(order)) for n in scales["tsfresh"]})
    ctx.log(f"  tsfresh: {len(tman['features'])} features per entity (2 series x 28 days); N = {ns}")
    runner.run_tsfresh(client, store, "tsfresh_candidates", [day], start, tcfg, only_entities=order[: min(ns[0], 12)])
    def tsfresh_pair(ents: list) -> tuple[float, float, float, object]:
        one, one_cpu = _single_many(single_store, "tsfresh_candidates", lambda: {day: tsf.compute(
            single_store, "tsfresh_candidates", day, start, tcfg, tman,
            [e for e in tsf.list_entities(single_store, day, start, tcfg.source) if e in set(ents)])[0]})
        with timed() as t:
            rep = runner.run_tsfresh(client, store, "tsfresh_candidates", [day], start, tcfg, only_entities=ents)
        rep.raise_errors()
        return one, one_cpu, t["seconds"], rep

    for i, n in enumerate(ns):
        ents = sorted(order[:n])
        one, one_cpu, cl, rep, runs = _repeated(tsfresh_pair, ents, repeats if n == ns[-1] else 1)
        same = _equal(_read_all(single_store, "tsfresh_candidates", day, "user_id"), _read_all(store, "tsfresh_candidates", day, "user_id"))
        p = Point("tsfresh", n, one, cl, rep.days[0]["shards"], same, one_cpu, rep.max_worker_cpu, runs=runs)
        if i == len(ns) // 2:
            p.distributor_s = _distributor(client, single_store, day, start, tcfg, ents)
        res.points.append(p)
        ctx.log(f"    N={n}: 1 process {one:.1f}s, cluster {cl:.1f}s")
    if repeats > 1:
        res.notes.append(f"the largest N of each family is measured {repeats} times (one process, then the cluster, in "
                         "turn): medians are shown (speed-up = median one-process time / median cluster time), every run's speed-up "
                         "is listed under 'runs'.")
    res.notes.append("ent/s = entity rows (entities x cutoffs) / wall seconds, including finding the entities (DFS: in the "
                     "events read; tsfresh: a listing task), reading the rows and writing Parquet.")
    res.notes.append("CPU bound = thread CPU seconds of the one-process run / those of the busiest worker's tasks: what the "
                     "speed-up would be on an idle machine (ignores scheduling latency); on a shared machine (see the "
                     "load average at the top) the wall-clock speed-up is noise and this column is the better guide.")
    return res


def _repeated(pair, ents: list, repeats: int):
    """Run a (one process, cluster) pair `repeats` times; medians of each and every run's speed-up."""
    runs = [pair(ents) for _ in range(max(repeats, 1))]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    one, one_cpu, cl = med([r[0] for r in runs]), med([r[1] for r in runs]), med([r[2] for r in runs])
    speedups = [r[0] / r[2] for r in runs] if len(runs) > 1 else []
    return one, one_cpu, cl, runs[-1][3], speedups


def _distributor(client, store: str, day: str, start: str, cfg, ents: list) -> float:
    """tsfresh's ClusterDaskDistributor on the same cluster, default chunking, written from this process."""
    from tsfresh import extract_features
    from tsfresh.utilities.distribution import ClusterDaskDistributor

    from featurecore.candidates import tsfresh_features as tsf

    t0 = time.perf_counter()
    rows = tsf.read_rows(store, day, start, cfg.source, ents)
    series = tsf.build_series(rows, cfg.source, day, ents, start)
    dist = ClusterDaskDistributor(address=client.scheduler.address)
    x = extract_features(series, column_id="id", column_sort="t", column_kind="kind", column_value="value",
                         default_fc_parameters=tsf.resolve_parameters(cfg.parameters, ["x"])["x"], distributor=dist,
                         disable_progressbar=True)
    dist.close()
    x.reset_index().to_parquet(Path(store) / "_distributor.parquet")
    return time.perf_counter() - t0


def summary_rows(r: CandidatesResult) -> list[list[str]]:
    """Rows for the final summary table: (benchmark, figure, value, target, met)."""
    rows = []
    for fam in ("DFS", "tsfresh"):
        p = r.top(fam)
        what = p.label or f"N={p.n:,}"
        rows.append(["4 candidates", f"{fam} 2 workers vs 1 process ({what})", fmt_ratio(p.speedup), f">= {TARGET}x",
                     "yes" if p.speedup >= TARGET else "NO"])
        rows.append(["4 candidates", f"{fam} CPU-time bound on the speed-up ({what})", fmt_ratio(p.cpu_speedup), "", ""])
        rows.append(["4 candidates", f"{fam} entity rows/s, 2 workers ({what})", f"{p.n / p.cluster_s:,.1f}", "", ""])
    if r.contention:
        rows.append(["4 candidates", "DFS shard time side by side vs alone (two busy cores)", f"{r.contention['slowdown']:+.0%}", "", ""])
        rows.append(["4 candidates", "DFS speed-up had the slower shard run as alone", fmt_ratio(r.contention["speedup_without"]), "", ""])
    ok = all(p.agree for p in r.points)
    rows.append(["4 candidates", "cluster output == one-process output", "yes" if ok else "NO", "yes", "yes" if ok else "NO"])
    return rows
