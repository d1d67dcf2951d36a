"""raw_events on a real, separately started Dask cluster: one `dask scheduler` process and
two `dask worker` processes (loopback, a free port, no dashboards), reached through
DaskResource(scheduler_address=...). Checks the files and that the work ran on those
workers (the scheduler's task stream, and the worker processes' parent pids)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey
from distributed import Client, get_task_stream

from feature_assets.definitions import build_defs
from featurecore.groups import GROUPS
from featurecore import demo_data
from featurecore.store import partition_dir, read_partition
from resources import DaskResource, LandingZone, OfflineStore

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parent.parent
DASK = PROJECT / ".venv" / "bin" / "dask"
RAW = AssetKey("raw_events")
DAYS = ["2026-09-01", "2026-09-02"]
DEMO = demo_data.DemoConfig(start=DAYS[0], days=2, users=300, products=80, events_per_day=1500, seed=23)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process we started (and its own process group), then kill if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_processes(tmp_path_factory):
    """A scheduler and two single-threaded workers as separate OS processes."""
    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    procs: list[subprocess.Popen] = []
    files = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        f = open(logs / f"{name}.log", "w")
        files.append(f)
        p = subprocess.Popen([str(DASK), *args], cwd=PROJECT, env=env, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    client = None
    try:
        scheduler = start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"])
        workers = [
            start(f"worker-{i}", ["worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                                  "--no-dashboard", "--name", f"ext-{i}", "--memory-limit", "2GiB"])
            for i in range(2)
        ]
        deadline = time.monotonic() + 60
        while True:
            try:
                client = Client(address, timeout="5s")
                break
            except OSError:
                if time.monotonic() > deadline or scheduler.poll() is not None:
                    raise RuntimeError("dask scheduler did not come up:\n" + (logs / "scheduler.log").read_text())
                time.sleep(0.5)
        client.wait_for_workers(2, timeout=60)
        yield {"address": address, "client": client, "scheduler": scheduler, "workers": workers, "logs": logs}
    finally:
        if client is not None:
            client.close()
        for p in reversed(procs):
            stop(p)
        for f in files:
            f.close()


def test_cluster_is_two_external_worker_processes(dask_processes):
    """The workers the scheduler knows are the two processes we started, one thread each."""
    client = dask_processes["client"]
    info = client.scheduler_info(n_workers=-1)["workers"]
    assert sorted(w["name"] for w in info.values()) == ["ext-0", "ext-1"]
    assert all(w["nthreads"] == 1 for w in info.values())
    parents = client.run(os.getppid)  # a worker process is a child of its `dask worker` nanny process
    assert sorted(parents.values()) == sorted(p.pid for p in dask_processes["workers"])
    assert os.getpid() not in client.run(os.getpid).values()


def test_raw_events_on_external_cluster(dask_processes, tmp_path):
    """Two days in one run through DaskResource(scheduler_address=...); the tasks ran on our workers."""
    landing, store = tmp_path / "landing", tmp_path / "store"
    demo_data.generate(landing, DEMO)
    address, client = dask_processes["address"], dask_processes["client"]
    d = build_defs(
        dask=DaskResource(scheduler_address=address),
        landing=LandingZone(landing_root=str(landing)),
        store=OfflineStore(root=str(store)),
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance, get_task_stream(client=client) as stream:
        assert d.resolve_job_def("dimensions").execute_in_process(instance=instance).success
        # The whole daily graph: ingestion, tiles and every feature group.
        result = d.resolve_job_def("daily_features").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        )
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]

    # The run's Dask client talked to our scheduler, not to a LocalCluster of its own.
    assert f"Dask client connected to {address}" in messages

    # Files: one folder per day with every landing row (no late data in this world).
    assert sorted(p.name for p in (store / "raw_events").iterdir()) == [f"date={day}" for day in DAYS]
    for day in DAYS:
        landing_rows = pq.ParquetFile(landing / "events" / day / "part-0.parquet").metadata.num_rows
        df = read_partition(store, "raw_events", day)
        assert (partition_dir(store, "raw_events", day) / "part-0.parquet").is_file()
        assert len(df) == landing_rows > 0
        assert df["event_id"].is_unique and (df["ts"].dt.strftime("%Y-%m-%d") == day).all()
    mats = {e.partition: e.materialization for e in result.get_asset_materialization_events() if e.asset_key == RAW}
    assert sorted(mats) == DAYS
    for name in GROUPS:  # every group wrote one folder per day
        assert sorted(p.name for p in (store / name).iterdir()) == [f"date={day}" for day in DAYS]
    assert any("features_range" in str(t["key"]) for t in stream.data)
    assert all(e.passed for e in result.get_asset_check_evaluations())

    # Evidence from the scheduler: the ingestion tasks ran on the two external workers.
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    ingest = [t for t in stream.data if "ingest_events_day" in str(t["key"])]
    assert len(ingest) >= len(DAYS)  # one per day (plus redone days, if any rows were routed)
    assert {t["worker"] for t in ingest} <= workers
    assert all(any(s["action"] == "compute" for s in t["startstops"]) for t in ingest)

    # And from the workers: the partition files were written by the worker processes, whose
    # parent is one of the `dask worker` processes started above.
    pids = client.run(os.getpid)
    assert set(pids) == workers
    assert set(client.run(os.getppid).values()) == {p.pid for p in dask_processes["workers"]}
    all_rows = pd.concat([read_partition(store, "raw_events", day) for day in DAYS])
    assert mats[DAYS[-1]].metadata["rows_in_run"].value == len(all_rows)


def test_dfs_shuffle_files_on_external_cluster(dask_processes, tmp_path):
    """DFS on the external workers: readers write shuffle files, shards on either process read
    them; the values equal the one-process computation and no shuffle file is left."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from candidate_store import START, SUNDAY, build_store

    from featurecore.candidates import dfs, runner
    from featurecore.timeutil import shift_day

    root = build_store(tmp_path).store_root
    client = dask_processes["client"]
    cfg = dfs.DFSConfig(sample_entities=60, max_features=30)
    days = [shift_day(SUNDAY, -7), SUNDAY]
    with get_task_stream(client=client) as stream:
        rep = runner.run_dfs(client, root, days, START, cfg, min_shard_entities=20, shards_per_worker=2)
    rep.raise_errors()
    workers = set(client.scheduler_info(n_workers=-1)["workers"])
    ran = {name: {t["worker"] for t in stream.data if name in str(t["key"])} for name in ("read_buckets", "shard_task")}
    assert ran["read_buckets"] == workers and ran["shard_task"] == workers  # files written and read across processes
    assert not list((Path(root) / dfs.ASSET).glob(".shuffle-*"))
    alone, _ = dfs.compute_window(root, days, START, cfg, rep.manifest)
    for d in days:
        got = read_partition(root, dfs.ASSET, d).sort_values("user_id", ignore_index=True)
        pd.testing.assert_frame_equal(got, alone[d].sort_values("user_id", ignore_index=True), rtol=1e-12, check_dtype=False)
