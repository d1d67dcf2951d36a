"""Benchmark: online lookup latency and streaming update throughput, SQLite and Redis.

Setup (not timed): a work store over the cached raw events; tiles of every day but the
last for the user groups, the batch features and last-N lists of the second-to-last day
(the base day ``B``); both default feature sets materialized into each online store
(a SQLite file in the work store; a redis-server child process on a free port).

Measured, per backend, with ``user_realtime`` (4 sources, 22 features incl. lists):
(1) lookup latency, p50 / p99 over repeated requests of random known users:
    in-process ``OnlineStore.lookup`` and HTTP (``python -m featurecore.serving_api`` in a
    child process, one keep-alive httpx client), for 1 entity and for 1,000 entities;
(2) streaming throughput: the last day's events (landing format, in memory, shuffled)
    fed to ``StreamingUpdater.apply`` in micro-batches of 1,000 and of 10,000 events,
    online writes included, in events per second; plus the time to close the day (every
    user's rows rewritten). A micro-batch has a fixed cost (typing and validation, tile
    merges, feature finalize for the touched users), so bigger batches go faster.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .common import fmt_rate, fmt_ratio, fresh_work_store, table

PROJECT = Path(__file__).resolve().parent.parent
MICRO_BATCH = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def start_redis() -> tuple[subprocess.Popen, str] | None:
    """A redis-server child process on a free loopback port (None when not installed)."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    _wait_for(lambda: redis.Redis.from_url(url).ping(), "redis-server")
    return proc, url


def start_service(url: str) -> tuple[subprocess.Popen, str]:
    """The HTTP service in a child process, as `make serve` starts it."""
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "featurecore.serving_api", "--port", str(port), "--store-url", url],
                            cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    _wait_for(lambda: httpx.get(base + "/health", timeout=1).status_code == 200, "serving")
    return proc, base


def _percentiles(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


@dataclass
class BackendResult:
    """Figures of one backend."""

    backend: str
    latency: dict = field(default_factory=dict)  # (mode, n) -> (p50 ms, p99 ms, requests)
    materialize_rows_per_s: float = 0.0
    streams: list["StreamRun"] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        """Throughput at the reference micro-batch size."""
        return self.streams[0].events_per_s if self.streams else 0.0


@dataclass
class StreamRun:
    """One streaming run at one micro-batch size."""

    batch: int
    events: int = 0
    seconds: float = 0.0
    batch_p50_ms: float = 0.0
    close_seconds: float = 0.0
    closed_entities: int = 0

    @property
    def events_per_s(self) -> float:
        """Applied events per second of apply time."""
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class ServingResult:
    """The benchmark's result, rendered as tables."""

    size: str
    users: int
    base_day: str
    stream_day: str
    backends: list[BackendResult]
    notes: list[str]

    def render(self) -> str:
        """Latency and streaming tables plus ratios."""
        rows = []
        for b in self.backends:
            for (mode, n), (p50, p99, reqs) in b.latency.items():
                rows.append([f"{b.backend} {mode}", f"{n:,}", f"{p50:.2f}", f"{p99:.2f}", reqs])
        lat = table(["lookup", "entities", "p50 ms", "p99 ms", "requests"], rows,
                    title=f"Lookup latency, feature set user_realtime ({self.users:,} users served, one run)")
        srows = [[b.backend, f"{r.batch:,}", f"{r.events:,}", f"{r.seconds:.2f} s", fmt_rate(r.events_per_s),
                  f"{r.batch_p50_ms:.0f} ms", f"{r.close_seconds:.2f} s ({r.closed_entities:,} rows)",
                  fmt_rate(b.materialize_rows_per_s)] for b in self.backends for r in b.streams]
        st = table(["backend", "micro-batch", "events", "apply total", "events/s", "p50 per micro-batch",
                    "close day", "batch materialize rows/s"], srows,
                   title=f"Streaming updates of {self.stream_day} on base {self.base_day} (online writes included)")
        extra = []
        by = {b.backend: b for b in self.backends}
        for b in self.backends:
            if ("HTTP", 1) in b.latency and ("in-process", 1) in b.latency:
                extra.append(f"{b.backend}: HTTP / in-process p50, 1 entity {fmt_ratio(b.latency[('HTTP', 1)][0] / b.latency[('in-process', 1)][0])}, "
                             f"1,000 entities {fmt_ratio(b.latency[('HTTP', 1000)][0] / b.latency[('in-process', 1000)][0])}")
        if "sqlite" in by and "redis" in by:
            extra.append("redis / sqlite p50 in-process 1,000 entities: "
                         f"{fmt_ratio(by['redis'].latency[('in-process', 1000)][0] / by['sqlite'].latency[('in-process', 1000)][0])}")
        return "\n\n".join([lat, st, "\n".join(extra + self.notes)])


def _prepare(ctx) -> tuple[str, str, str, object]:
    """Work store with base-day features and the products snapshot; returns (store, base day, stream day, cfg)."""
    from featurecore.config import load_source_config
    from featurecore.groups import GROUPS
    from featurecore.ingest import ingest_dimension
    from featurecore.pipeline import features_range, tile_day
    from featurecore.recent_items import USER_RECENT_ITEMS, recent_items_range

    data, client, log = ctx.data, ctx.client, ctx.log
    store = fresh_work_store(data, "serving")
    cfg = replace(load_source_config(), landing_root=data.landing_root, store_root=store, partition_start=data.days[0])
    ingest_dimension("products", cfg)
    base, nxt = data.days[-2], data.days[-1]
    groups = [GROUPS[n] for n in ("user_behavior", "user_temporal", "user_context")]
    log(f"  batch features of {base} (tiles of {len(data.days) - 1} days; not timed) ...")
    client.gather(client.map(tile_day, data.days[:-1], groups=groups, store_root=store, pure=False))
    futs = [client.submit(features_range, [base], g, store, data.days[0], pure=False) for g in groups]
    futs.append(client.submit(recent_items_range, [base], USER_RECENT_ITEMS, store, data.days[0], pure=False))
    client.gather(futs)
    return store, base, nxt, cfg


def _latency(ctx, b: BackendResult, url: str, users: list[str], repeats_single: int, repeats_batch: int) -> None:
    import httpx

    from featurecore.online import open_store

    rng = np.random.default_rng(1)
    s = open_store(url, readonly=True)
    s.lookup("user_realtime", users[:5])  # warm: definitions cached, connection open
    for n, reps in ((1, repeats_single), (1000, repeats_batch)):
        times = []
        for _ in range(reps):
            ents = rng.choice(users, size=min(n, len(users)), replace=False).tolist()
            t0 = time.perf_counter()
            res = s.lookup("user_realtime", ents)
            times.append(time.perf_counter() - t0)
            assert len(res.values) == len(ents)
        b.latency[("in-process", n)] = (*_percentiles(times), reps)
    s.close()
    proc, base = start_service(url)
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            c.get("/features/user_realtime", params={"user_id": users[0]})
            for n, reps in ((1, repeats_single), (1000, repeats_batch)):
                times = []
                for _ in range(reps):
                    ents = rng.choice(users, size=min(n, len(users)), replace=False).tolist()
                    t0 = time.perf_counter()
                    if n == 1:
                        r = c.get("/features/user_realtime", params={"user_id": ents[0]})
                    else:
                        r = c.post("/features/user_realtime", json={"entities": ents})
                    r.json()
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                b.latency[("HTTP", n)] = (*_percentiles(times), reps)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _stream(b: BackendResult, url: str, store: str, cfg, events: pd.DataFrame, nxt: str, batch: int) -> None:
    from featurecore.online import open_store
    from featurecore.streaming_update import StreamingUpdater
    from featurecore.timeutil import shift_day

    online = open_store(url)
    up = StreamingUpdater(store, online, source_cfg=cfg, clock=lambda: pd.Timestamp(shift_day(nxt, 2), tz="UTC").value)
    up.bootstrap()
    run = StreamRun(batch)
    per = []
    t0 = time.perf_counter()
    for i in range(0, len(events), batch):
        t1 = time.perf_counter()
        st = up.apply(events.iloc[i:i + batch])
        per.append(time.perf_counter() - t1)
        run.events += st.get("applied", 0)
    run.seconds = time.perf_counter() - t0
    run.batch_p50_ms = float(np.median(per) * 1000)
    t1 = time.perf_counter()
    closed = up.advance_to(shift_day(nxt, 1))
    run.close_seconds = time.perf_counter() - t1
    run.closed_entities = closed.get("entities_closed", 0)
    b.streams.append(run)
    online.close()


def run(ctx) -> ServingResult:
    """Prepare the store, then measure each backend."""
    from featurecore.online_tasks import materialize_day
    from featurecore.served_sets import served_sets
    from featurecore.store import read_partition

    log = ctx.log
    store, base, nxt, cfg = _prepare(ctx)
    sets = served_sets(store)
    users = sorted(read_partition(store, "user_behavior", base, columns=["user_id"])["user_id"])
    events = read_partition(store, "raw_events", nxt).drop(columns=["source_file", "row_number"])
    events = events.sample(frac=1.0, random_state=3).reset_index(drop=True)  # arrival order is not ts order
    repeats_single, repeats_batch = (300, 40) if ctx.data.size.name != "tiny" else (60, 10)
    notes = []
    backends = [("sqlite", f"sqlite:///{Path(store) / 'online' / 'online.sqlite'}", None)]
    redis_proc = start_redis()
    if redis_proc is None:
        notes.append("redis-server not installed: Redis rows skipped (apt-get install redis-server)")
    else:
        backends.append(("redis", redis_proc[1], redis_proc[0]))
    results = []
    try:
        for name, url, _ in backends:
            log(f"  {name}: materialize, lookups, streaming ...")
            b = BackendResult(name)
            t0 = time.perf_counter()
            st = [materialize_day(fs, base, store, url) for fs in sets]
            b.materialize_rows_per_s = sum(s["rows"] for s in st) / (time.perf_counter() - t0)
            _latency(ctx, b, url, users, repeats_single, repeats_batch)
            for size in (MICRO_BATCH, 10 * MICRO_BATCH):
                _stream(b, url, store, cfg, events, nxt, size)
            results.append(b)
    finally:
        if redis_proc is not None:
            redis_proc[0].terminate()
            redis_proc[0].wait(timeout=10)
    return ServingResult(ctx.data.size.name, len(users), base, nxt, results, notes)


def summary_rows(r: ServingResult) -> list[list[str]]:
    """Rows for the final summary table."""
    rows = []
    for b in r.backends:
        for (mode, n), (p50, p99, _) in b.latency.items():
            rows.append(["serving", f"{b.backend} {mode} {n:,} entit{'y' if n == 1 else 'ies'} p50/p99",
                         f"{p50:.2f}/{p99:.2f} ms", "", ""])
        for r in b.streams:
            rows.append(["serving", f"{b.backend} streaming, micro-batches of {r.batch:,}", fmt_rate(r.events_per_s), "", ""])
    return rows
