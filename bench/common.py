"""Shared parts of the benchmarks: sizes, input data, the Dask cluster, memory sampling, tables.

Input data is generated with ``featurecore.demo_data`` and ingested with
``featurecore.ingest.ingest_events_day`` into ``<data>/store/raw_events/date=D/``. It is
cached per size under ``bench/results/data/`` (keyed by the generator configuration), so
a second invocation skips generation and ingestion; neither is ever timed. Each
benchmark writes its own outputs into a fresh *work store* whose ``raw_events`` is a
symlink to the cached one, so outputs of one run never leak into the next.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
START = "2026-09-01"


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Size:
    """One benchmark size: the generated world plus how the slow reference is sampled."""

    name: str
    days: int
    users: int
    products: int
    events_per_day: int
    seed: int = 7
    #: Featuretools runs on at most this many users (None = all); its time is extrapolated.
    ft_sample_users: int | None = None
    #: repetitions of the short one-day measurements (the median is reported)
    repeats: int = 3
    #: benchmark 2: the two backfill lengths compared (days), and the days timed per group
    scaling_days: tuple[int, int] = (30, 90)
    per_day_days: int = 10
    #: also time DuckDB over every day's cutoff (info; ~15 GB and minutes at 10M events)
    duckdb_all_cutoffs: bool = True

    def demo_config(self):
        """The ``featurecore.demo_data.DemoConfig`` that generates this size's world."""
        from featurecore.demo_data import DemoConfig

        return DemoConfig(start=START, days=self.days, users=self.users, products=self.products,
                          events_per_day=self.events_per_day, seed=self.seed)


SIZES = {
    # seconds: the smoke test (a 30-day window still gets exercised)
    "tiny": Size("tiny", days=36, users=150, products=60, events_per_day=300, repeats=1,
                 scaling_days=(12, 36), per_day_days=3),
    # a couple of minutes on 2 cores
    "small": Size("small", days=90, users=2_000, products=300, events_per_day=4_000),
    # 10M events, the generator's "large" preset
    "large": Size("large", days=100, users=100_000, products=5_000, events_per_day=100_000,
                  ft_sample_users=2_000, per_day_days=10, duckdb_all_cutoffs=False),
}


# --------------------------------------------------------------------------- input data


@dataclass
class Dataset:
    """Generated and ingested events: ``<store_root>/raw_events/date=D/part-0.parquet``."""

    size: Size
    root: Path
    landing_root: str
    store_root: str
    days: list[str]
    events_per_day: dict[str, int]

    @property
    def n_events(self) -> int:
        """Total ingested events over all days."""
        return sum(self.events_per_day.values())

    @property
    def raw_glob(self) -> str:
        """Glob matching every raw_events Parquet file of the dataset's store."""
        return str(Path(self.store_root) / "raw_events" / "*" / "*.parquet")

    def events_in(self, days: list[str]) -> int:
        """Ingested events of the given days (0 for a day without data)."""
        return sum(self.events_per_day.get(d, 0) for d in days)


def _fingerprint(size: Size) -> str:
    cfg = asdict(size.demo_config())
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]


def prepare_data(size: Size, client, root: Path | None = None, log=print) -> Dataset:
    """Generate the landing zone and ingest every day into raw_events (cached; not timed)."""
    from featurecore import demo_data
    from featurecore.config import load_source_config
    from featurecore.ingest import ingest_events_day
    from featurecore.timeutil import day_range, shift_day

    root = Path(root or RESULTS_DIR / "data" / f"{size.name}-{_fingerprint(size)}")
    marker = root / "ready.json"
    days = day_range(START, shift_day(START, size.days - 1))
    landing, store = root / "landing", root / "store"
    if marker.exists():
        info = json.loads(marker.read_text())
        return Dataset(size, root, str(landing), str(store), days, info["events_per_day"])

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    cfg = size.demo_config()
    t0 = time.perf_counter()
    log(f"  generating {size.days} days x ~{size.events_per_day:,} events, {size.users:,} users -> {root}")
    if size.days * size.events_per_day > 2_000_000:
        # one day per Dask task (append_day writes exactly what generate writes)
        demo_data.append_day(str(landing), cfg, days[0])
        client.gather(client.map(demo_data.append_day, [str(landing)] * (len(days) - 1), [cfg] * (len(days) - 1),
                                 days[1:], pure=False))
    else:
        demo_data.generate(str(landing), cfg)
    src = replace(load_source_config(), landing_root=str(landing), store_root=str(store), partition_start=START)
    stats = client.gather(client.map(ingest_events_day, days, [src] * len(days), pure=False))
    per_day = {s["day"]: int(s["rows"]) for s in stats}
    bad = [s for s in stats if s["quarantined"]]
    if bad:
        log(f"  note: ingestion quarantined rows on {len(bad)} day(s) (first: {bad[0]['quarantine_examples'][:1]})")
    marker.write_text(json.dumps({"events_per_day": per_day, "config": asdict(cfg)}, indent=1))
    log(f"  prepared {sum(per_day.values()):,} events in {time.perf_counter() - t0:.1f}s (not timed)")
    return Dataset(size, root, str(landing), str(store), days, per_day)


def fresh_work_store(data: Dataset, name: str, base: Path | None = None) -> str:
    """An empty store whose raw_events is a symlink to the dataset's (outputs go here)."""
    base = Path(base or data.root)
    store = base / "work" / name
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    (store / "raw_events").symlink_to(Path(data.store_root).resolve() / "raw_events", target_is_directory=True)
    return str(store)


def clear_assets(store_root: str, *assets: str) -> None:
    """Delete the named asset folders from a store (missing ones are ignored)."""
    for a in assets:
        shutil.rmtree(Path(store_root) / a, ignore_errors=True)


# --------------------------------------------------------------------------- cluster


def _warm_imports(featuretools: bool = False) -> bool:
    """Import what the benchmarked tasks import, so no timing pays for module loading."""
    import warnings

    warnings.filterwarnings("ignore")
    import checks.feature_schemas  # noqa: F401
    import featurecore.pipeline  # noqa: F401
    import featurecore.tiles  # noqa: F401

    if featuretools:
        import featuretools as _ft  # noqa: F401
    return True


def _quiet_logs() -> None:
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler",
                 "distributed.core", "distributed.comm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class Cluster:
    """The cluster the Dagster assets use, in miniature: LocalCluster, 2 worker processes x 1 thread.

    ``fresh()`` replaces it with a new one, so a measured phase starts from idle workers.
    (A new cluster rather than ``Client.restart``: with featuretools imported in the
    workers, ``restart`` intermittently times out waiting for them with distributed 2026.8.)
    """

    def __init__(self, n_workers: int = 2, threads_per_worker: int = 1):
        self.n_workers, self.threads_per_worker = n_workers, threads_per_worker
        self.cluster = self.client = None
        _quiet_logs()
        self.fresh()

    def fresh(self, featuretools: bool = False):
        """Replace the cluster with a new one, imports warmed (featuretools too if asked); return its client."""
        from distributed import Client

        from resources.local_cluster import start_local_cluster

        self.close()
        self.cluster = start_local_cluster(self.n_workers, self.threads_per_worker, memory_limit=None,
                                           dashboard_address=":0")
        self.client = Client(self.cluster)
        self.client.run(_warm_imports, featuretools)
        return self.client

    def close(self) -> None:
        """Close the client and the cluster, if any."""
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.cluster = self.client = None


# --------------------------------------------------------------------------- memory


@dataclass
class MemoryWindow:
    """RSS statistics of one measured phase (bytes)."""

    baseline: int = 0  # total RSS at the start of the phase
    peak: int = 0  # peak total RSS (this process + every child process, e.g. Dask workers)
    peak_worker: int = 0  # peak RSS of the largest single child process
    peak_main: int = 0  # peak RSS of this process (DuckDB runs here)
    samples: int = 0

    @property
    def delta(self) -> int:
        """Peak above the baseline (bytes, never negative)."""
        return max(self.peak - self.baseline, 0)


class MemorySampler:
    """Samples the RSS of this process and all its descendants in a background thread."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.proc = psutil.Process(os.getpid())
        self._lock = threading.Lock()
        self._windows: list[MemoryWindow] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def sample(self) -> tuple[int, int, int]:
        """(total, largest child, main) RSS now."""
        main = self.proc.memory_info().rss
        largest = total_children = 0
        for ch in self.proc.children(recursive=True):
            try:
                r = ch.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total_children += r
            largest = max(largest, r)
        return main + total_children, largest, main

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                total, largest, main = self.sample()
            except Exception:  # a process vanished mid-sample
                time.sleep(self.interval)
                continue
            with self._lock:
                for w in self._windows:
                    w.peak = max(w.peak, total)
                    w.peak_worker = max(w.peak_worker, largest)
                    w.peak_main = max(w.peak_main, main)
                    w.samples += 1
            time.sleep(self.interval)

    @contextmanager
    def measure(self) -> Iterator[MemoryWindow]:
        """Context manager: a MemoryWindow that tracks RSS peaks while the block runs."""
        total, largest, main = self.sample()
        w = MemoryWindow(baseline=total, peak=total, peak_worker=largest, peak_main=main)
        with self._lock:
            self._windows.append(w)
        try:
            yield w
        finally:
            total, largest, main = self.sample()  # catch a final peak of a very short phase
            with self._lock:
                self._windows.remove(w)
                w.peak = max(w.peak, total)
                w.peak_worker = max(w.peak_worker, largest)
                w.peak_main = max(w.peak_main, main)

    def close(self) -> None:
        """Stop the sampling thread."""
        self._stop.set()
        self._thread.join(timeout=2)


# --------------------------------------------------------------------------- timing + results


@dataclass
class Measurement:
    """One timed implementation/phase."""

    label: str
    seconds: float
    events: int | None = None  # events the events/s figure refers to
    memory: MemoryWindow | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def events_per_second(self) -> float | None:
        """Events per second; None without an event count or a positive time."""
        return self.events / self.seconds if self.events and self.seconds > 0 else None


@contextmanager
def timed(sampler: MemorySampler | None = None) -> Iterator[dict]:
    """``with timed(sampler) as t: ...`` then ``t['seconds']``, ``t['memory']``."""
    out: dict[str, Any] = {}
    if sampler is None:
        t0 = time.perf_counter()
        yield out
        out["seconds"] = time.perf_counter() - t0
        return
    with sampler.measure() as mem:
        t0 = time.perf_counter()
        yield out
        out["seconds"] = time.perf_counter() - t0
    out["memory"] = mem


def median_run(fn, repeats: int, sampler: MemorySampler | None = None) -> tuple[float, MemoryWindow | None, Any, list[float]]:
    """Run ``fn`` ``repeats`` times; median seconds, the memory window of the worst peak, last result."""
    secs, mems, res = [], [], None
    for _ in range(max(repeats, 1)):
        with timed(sampler) as t:
            res = fn()
        secs.append(t["seconds"])
        mems.append(t.get("memory"))
    ordered = sorted(secs)
    med = ordered[len(ordered) // 2]
    mem = max((m for m in mems if m is not None), key=lambda m: m.peak, default=None)
    return med, mem, res, secs


# --------------------------------------------------------------------------- formatting


def fmt_seconds(s: float | None) -> str:
    """Seconds as text: ``1,234 s``, ``12.34 s`` or ``123 ms``; ``-`` for None."""
    if s is None:
        return "-"
    if s >= 100:
        return f"{s:,.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1000:.0f} ms"


def fmt_rate(r: float | None) -> str:
    """A rate as text: ``1.23 M/s``, ``4.5 k/s`` or ``123 /s``; ``-`` for None."""
    if r is None:
        return "-"
    if r >= 1e6:
        return f"{r / 1e6:.2f} M/s"
    if r >= 1e3:
        return f"{r / 1e3:.1f} k/s"
    return f"{r:.0f} /s"


def fmt_bytes(b: int | float | None) -> str:
    """Bytes as text in MiB; ``-`` for None."""
    if b is None:
        return "-"
    return f"{b / 2**20:,.0f} MiB"


def fmt_ratio(x: float | None) -> str:
    """A ratio as text: ``1.23x`` (``1,234x`` from 100 on); ``-`` for None or NaN."""
    if x is None or x != x:
        return "-"
    return f"{x:.2f}x" if x < 100 else f"{x:,.0f}x"


def table(headers: list[str], rows: list[list[Any]], title: str | None = None) -> str:
    """A plain-text table; the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def measurement_row(m: Measurement) -> list[str]:
    """A Measurement as a table row under ``MEASUREMENT_HEADERS``."""
    mem = m.memory
    return [
        m.label,
        fmt_seconds(m.seconds),
        fmt_rate(m.events_per_second),
        fmt_bytes(mem.peak) if mem else "-",
        fmt_bytes(mem.delta) if mem else "-",
        m.note,
    ]


MEASUREMENT_HEADERS = ["implementation", "time", "events/s", "peak RSS", "above idle", "note"]


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What a benchmark's ``run(ctx)`` gets."""

    cluster: Cluster
    sampler: MemorySampler
    data: Dataset
    log: Any = print
    results: dict = field(default_factory=dict)

    @property
    def client(self):
        """The current cluster's client."""
        return self.cluster.client
