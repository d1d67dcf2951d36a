"""Candidate runs leave nothing behind: DFS shuffle files after a failed reader, an interrupted client
or a killed run; staging folders of days an interrupted run had not committed (DFS and the sharded
tsfresh run) and of killed runs. An in-process LocalCluster (threads), so a patched task runs on its
workers."""

import os
import time
from pathlib import Path

import pytest
from candidate_store import START, SUNDAY, build_store
from distributed import Client, LocalCluster

from featurecore.candidates import dfs, runner
from featurecore.candidates import tsfresh_features as tsf
from featurecore.candidates.common import CandidateError, write_part
from featurecore.timeutil import shift_day

CFG = dfs.DFSConfig(sample_entities=60, max_features=30)
_read = dfs.read_buckets


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = build_store(tmp_path_factory.mktemp("shuffle")).store_root
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        runner.run_dfs(client, root, [SUNDAY], START, CFG).raise_errors()  # discovery once
        yield client, root


def _leftover(root: str) -> list[str]:
    return sorted(str(p) for p in (Path(root) / dfs.ASSET).glob(".shuffle-*/**/*"))


def _staging(root: str, asset: str) -> list[str]:
    return sorted(str(p) for p in (Path(root) / asset).glob(".staging-*"))


def test_a_failed_reader_leaves_no_file_of_its_slower_sibling(env, monkeypatch):
    client, root = env

    def first_fails_others_slow(store_root, days, cfg, before, n_buckets, entities=None, shuffle_to=None):
        if shuffle_to.endswith("reader-0000.arrow"):
            raise OSError("reader 0 fails at once")
        time.sleep(1.5)  # still writing when the group's failure is known
        return _read(store_root, days, cfg, before, n_buckets, entities, shuffle_to)

    monkeypatch.setattr(dfs, "read_buckets", first_fails_others_slow)
    rep = runner.run_dfs(client, root, [SUNDAY], START, CFG)
    assert len(rep.errors) == 1 and "reader 0 fails at once" in rep.errors[0]
    time.sleep(2)
    assert not _leftover(root)


def test_an_interrupted_run_cancels_its_tasks_and_leaves_no_file(env, monkeypatch):
    client, root = env

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dfs, "read_buckets", lambda *a, **k: (time.sleep(1), _read(*a, **k))[1])
    monkeypatch.setattr(runner, "plan_weighted_shards", interrupt)  # while the next group's readers run
    with pytest.raises(KeyboardInterrupt):
        runner.run_dfs(client, root, [shift_day(SUNDAY, -7), SUNDAY], START, CFG, days_per_task=1)
    time.sleep(2.5)  # a reader that was already running finds its folder gone and writes nothing
    assert not _leftover(root)


def test_a_killed_runs_folder_is_swept_after_a_day_and_a_live_one_is_not(env):
    client, root = env
    asset = Path(root) / dfs.ASSET
    dead, live = asset / ".shuffle-dead", asset / ".shuffle-live"
    for folder in (dead, live):
        (folder / "group-0000").mkdir(parents=True)
        (folder / "group-0000" / "reader-0000.arrow").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(dead, (two_days_ago, two_days_ago))
    runner.run_dfs(client, root, [SUNDAY], START, CFG).raise_errors()
    assert not dead.exists() and live.exists()
    runner._remove_tree(str(live))


@pytest.mark.parametrize("kind", ["dfs", "tsfresh"])
def test_an_interrupted_commit_leaves_no_staging_folder(env, monkeypatch, kind):
    """Interrupted while committing its first day: the days it had not committed lose their staging folders."""
    client, root = env
    calls = []

    def commit_then_interrupt(*a, **k):
        calls.append(a)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "commit_partition", commit_then_interrupt)
    days = [shift_day(SUNDAY, -7), SUNDAY]
    with pytest.raises(KeyboardInterrupt):
        if kind == "dfs":
            runner.run_dfs(client, root, days, START, CFG, days_per_task=1)
        else:
            cfg = tsf.TsfreshConfig(source=tsf.SeriesSource(window_days=10), parameters="minimal")
            runner.run_tsfresh(client, root, "lifecycle_tsfresh", days, START, cfg, min_shard_entities=6)
    asset = dfs.ASSET if kind == "dfs" else "lifecycle_tsfresh"
    assert calls and not _staging(root, asset)
    assert not _leftover(root)


def test_a_task_never_makes_a_staging_folder(tmp_path):
    """A shard still running after its run cleaned up fails to write instead of leaving a folder."""
    import pandas as pd

    gone = tmp_path / ".staging-date=2026-09-13-abc"
    with pytest.raises(CandidateError, match="is gone"):
        write_part(pd.DataFrame({"x": [1.0]}), gone, 0)
    assert not gone.exists()


def test_a_killed_runs_staging_folder_is_swept_after_a_day(env):
    client, root = env
    asset = Path(root) / dfs.ASSET
    dead, live = asset / ".staging-date=2026-09-06-dead", asset / ".staging-date=2026-09-06-live"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "part-0000.parquet").write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(dead, (two_days_ago, two_days_ago))
    runner.run_dfs(client, root, [SUNDAY], START, CFG).raise_errors()
    assert not dead.exists() and live.exists()
    runner._remove_tree(str(live))


def test_an_interrupted_empty_day_leaves_no_staging_folder(env, monkeypatch):
    """A day without entities gets an empty partition through a staging folder: tracked like the others."""
    client, root = env

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "commit_partition", interrupt)
    cfg = tsf.TsfreshConfig(source=tsf.SeriesSource(window_days=10), parameters="minimal")
    with pytest.raises(KeyboardInterrupt):
        runner.run_tsfresh(client, root, "lifecycle_empty", [SUNDAY], START, cfg, only_entities=[])
    assert not _staging(root, "lifecycle_empty")


def test_a_lost_cluster_keeps_the_runs_error_and_still_removes_its_staging(tmp_path):
    """Cancelling on a closed client raises; that neither replaces the run's error nor skips the cleanup."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        client = Client(cluster)
        run = runner._RunCleanup("lost")
        with pytest.raises(RuntimeError, match="scheduler lost"):
            with runner._cleanup_on_error(client, tmp_path / "asset", run):
                run.staging(runner.staging_dir(tmp_path, "asset", "2026-09-06", "lost", make=True))
                run.track([client.submit(time.sleep, 5, pure=False)])
                client.close()
                raise RuntimeError("scheduler lost")
    assert not list((tmp_path / "asset").glob(".staging-*")) and not list((tmp_path / "asset").glob(".live-*"))


def test_a_long_live_runs_old_folders_are_not_swept(tmp_path):
    """Folders untouched for days survive while their run's marker is fresh; a stale marker goes with them."""
    asset = tmp_path / "asset"
    old = time.time() - 3 * 86400
    for token in ("alive", "dead"):
        folder = asset / f".staging-date=2026-09-06-{token}"
        folder.mkdir(parents=True)
        os.utime(folder, (old, old))
        (asset / f".live-{token}").touch()
    os.utime(asset / ".live-dead", (old, old))
    (asset / ".trash-date=2026-09-01-x").mkdir()
    runner._sweep_stale(asset)
    assert sorted(p.name for p in asset.iterdir()) == [".live-alive", ".staging-date=2026-09-06-alive"]
