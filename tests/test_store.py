"""Offline store: one folder per day, idempotent replace, lazy range reads."""

import pandas as pd

from featurecore.store import partition_dir, read_partition, read_range, write_partition


def test_write_replaces_and_range_reads(tmp_path):
    for i, day in enumerate(["2026-09-01", "2026-09-02", "2026-09-04"]):
        write_partition(pd.DataFrame({"k": ["a", "b"], "v": [i, i]}), tmp_path, "t", day)
    write_partition(pd.DataFrame({"k": ["a"], "v": [9]}), tmp_path, "t", "2026-09-02")  # replace, never append
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["date=2026-09-01", "date=2026-09-02", "date=2026-09-04"]
    assert read_partition(tmp_path, "t", "2026-09-02")["v"].tolist() == [9]
    ddf = read_range(tmp_path, "t", "2026-09-01", "2026-09-04", with_date=True)
    assert ddf.npartitions == 3  # missing days are skipped, one task per existing day
    got = ddf.compute()
    assert len(got) == 5 and sorted(got["date"].unique()) == ["2026-09-01", "2026-09-02", "2026-09-04"]
    assert list(partition_dir(tmp_path, "t", "2026-09-02").iterdir())[0].name == "part-0.parquet"


def test_replace_folder_puts_the_old_partition_back_when_the_swap_fails(tmp_path):
    """Failing (or interrupted) between its two renames, replace_folder leaves the old partition in place."""
    import pytest

    from featurecore.store import remove_folder, replace_folder

    target = tmp_path / "date=2026-09-01"
    target.mkdir()
    (target / "part-0.parquet").write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        replace_folder(target, tmp_path / ".tmp-missing")
    assert (target / "part-0.parquet").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2026-09-01"]
    remove_folder(target)
    remove_folder(target)  # already gone: nothing to do
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_no_temp_folder_and_keeps_the_partition(tmp_path):
    """A write that fails (here: a value its schema cannot hold) removes its temp folder; the old partition stays."""
    import pyarrow as pa
    import pytest

    write_partition(pd.DataFrame({"v": [1]}), tmp_path, "t", "2026-09-01")
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_partition(pd.DataFrame({"v": ["not a number"]}), tmp_path, "t", "2026-09-01",
                        schema=pa.schema([("v", pa.int64())]))
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["date=2026-09-01"]
    assert read_partition(tmp_path, "t", "2026-09-01")["v"].tolist() == [1]


def test_leftovers_of_killed_writes_are_swept_once_stale(tmp_path, monkeypatch):
    """`.tmp-*`/`.old-*` folders a killed process left go on the asset's next write in a process, once
    stale; fresh ones (a live write's) and partitions stay; a `.trash-*` one (already doomed) goes at once."""
    import time

    from featurecore import store

    asset = tmp_path / "t"
    write_partition(pd.DataFrame({"v": [1]}), tmp_path, "t", "2026-09-01")
    for name in (".tmp-date=2026-09-02-0badc0de", ".old-date=2026-09-01-0badc0de"):
        (asset / name).mkdir()
        (asset / name / "part-0.parquet").write_bytes(b"x")
    (asset / ".trash-date=2026-09-04-0badc0de").mkdir()
    assert store.sweep_leftovers(asset) == 1  # the trash; the fresh ones could be a live write's
    assert sorted(p.name for p in asset.iterdir())[0] == ".old-date=2026-09-01-0badc0de"
    time.sleep(0.05)
    monkeypatch.setattr(store, "LEFTOVER_SECONDS", 0.01)
    monkeypatch.setattr(store, "_swept", set())
    write_partition(pd.DataFrame({"v": [2]}), tmp_path, "t", "2026-09-03")
    assert sorted(p.name for p in asset.iterdir()) == ["date=2026-09-01", "date=2026-09-03"]
    assert read_partition(tmp_path, "t", "2026-09-01")["v"].tolist() == [1]
