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
