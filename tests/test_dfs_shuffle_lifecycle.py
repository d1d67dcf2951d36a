"""DFS shuffle files never outlive their run: a failed reader, an interrupted client and a killed
run's leftovers. An in-process LocalCluster (threads), so a patched reader runs on its workers."""

import os
import time
from pathlib import Path

import pytest
from candidate_store import START, SUNDAY, build_store
from distributed import Client, LocalCluster

from featurecore.candidates import dfs, runner
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
