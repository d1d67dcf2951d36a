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
