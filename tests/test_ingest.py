"""Ingestion on real files: typing, dedup, routing by ts, quarantine with reasons, nothing lost."""

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from featurecore.ingest import IngestionError, ingest_dimension, ingest_events_day, read_snapshot
from featurecore.store import read_partition

DAY = "2026-09-02"


def _events(n=6, day=DAY, **overrides):
    base = pd.Timestamp(day, tz="UTC")
    df = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [f"u{i % 3}" for i in range(n)],
            "ts": [base + pd.Timedelta(hours=i) for i in range(n)],
            "event_type": ["view"] * (n - 1) + ["purchase"],
            "product_id": [f"p{i % 2}" for i in range(n)],
            "price": [10.0 + i for i in range(n)],
            "quantity": [1] * n,
        }
    )
    for k, v in overrides.items():
        df[k] = v
    return df


def _land(cfg, df, name="part-0", day=DAY, fmt="parquet"):
    folder = Path(cfg.landing_root) / "events" / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


def _accounted(stats):
    """Every row read is written, routed to another day, or quarantined."""
    return stats["rows"] - stats["rows_routed_in"] + stats["rows_routed_out"] + stats["quarantined"] == stats["rows_read"]


def _quarantine(cfg, day=DAY):
    return read_partition(cfg.store_root, "quarantine", day)


def test_clean_day_is_typed_and_complete(source_cfg):
    _land(source_cfg, _events())
    stats = ingest_events_day(DAY, source_cfg)
    out = read_partition(source_cfg.store_root, "raw_events", DAY)
    assert stats["rows"] == 6 and stats["quarantined"] == 0 and _accounted(stats)
    assert str(out["ts"].dtype) == "datetime64[ns, UTC]"
    assert out["price"].dtype == "float64" and out["quantity"].dtype == "float64"
    assert set(out["source_file"]) == {f"events/{DAY}/part-0.parquet"}


def test_missing_required_column_quarantines_the_file_and_names_it(source_cfg):
    _land(source_cfg, _events())
    _land(source_cfg, _events().drop(columns=["ts"]).assign(event_id=lambda d: "x" + d.event_id), name="part-1")
    stats = ingest_events_day(DAY, source_cfg)
    q = _quarantine(source_cfg)
    assert stats["rows"] == 6 and stats["quarantined"] == 6 and _accounted(stats)
    assert (q["column"] == "ts").all()
    assert q["reason"].str.contains(f"events/{DAY}/part-1.parquet: missing required column 'ts'").all()
    # the whole original record is kept
    assert q["record"].str.contains('"event_id":"xe0"').any()
    assert stats["bad_share"] == pytest.approx(0.5)


def test_wrong_types_and_unparsable_timestamps_are_quarantined_per_row(source_cfg):
    df = _events().astype({"price": object, "ts": object})
    df.loc[1, "price"] = "ten"
    df.loc[2, "ts"] = "not a time"
    df.loc[3, "price"] = -5.0
    df["ts"] = [t.isoformat() if isinstance(t, pd.Timestamp) else t for t in df["ts"]]
    _land(source_cfg, df, fmt="csv")
    stats = ingest_events_day(DAY, replace(source_cfg, file_format="csv"))
    q = _quarantine(source_cfg).set_index("row_number")
    assert stats["rows"] == 3 and stats["quarantined"] == 3 and _accounted(stats)
    assert q.loc[1, "column"] == "price" and "not a number: ten" in q.loc[1, "reason"]
    assert q.loc[2, "column"] == "ts" and "unparsable timestamp" in q.loc[2, "reason"]
    assert q.loc[3, "column"] == "price" and "greater_than_or_equal_to(0)" in q.loc[3, "reason"]
    assert (q["source_file"] == f"events/{DAY}/part-0.csv").all()


def test_duplicates_keep_first_and_quarantine_the_copies(source_cfg):
    df = _events()
    _land(source_cfg, df)
    _land(source_cfg, df.iloc[:2], name="part-1")  # redelivered
    stats = ingest_events_day(DAY, source_cfg)
    q = _quarantine(source_cfg)
    assert stats["rows"] == 6 and stats["duplicates"] == 2 and _accounted(stats)
    assert q["reason"].str.startswith("duplicate event_id e").all()
    assert q["source_file"].eq(f"events/{DAY}/part-1.parquet").all()
    assert stats["bad_share"] == 0  # duplicates are reported, not counted as invalid


def test_duplicates_without_event_id_use_all_columns(source_cfg):
    df = _events().drop(columns=["event_id"])
    _land(source_cfg, pd.concat([df, df.iloc[[0]]]))
    stats = ingest_events_day(DAY, source_cfg)
    assert stats["rows"] == 6 and stats["duplicates"] == 1 and _accounted(stats)


def test_empty_day_folder_gives_empty_partition_and_flag(source_cfg):
    (Path(source_cfg.landing_root) / "events" / DAY).mkdir(parents=True)
    stats = ingest_events_day(DAY, source_cfg)
    assert stats["empty_folder"] and stats["rows"] == 0
    assert len(read_partition(source_cfg.store_root, "raw_events", DAY)) == 0


def test_corrupt_parquet_raises_naming_the_file(source_cfg):
    folder = Path(source_cfg.landing_root) / "events" / DAY
    folder.mkdir(parents=True)
    (folder / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(IngestionError, match=r"broken\.parquet: cannot read parquet file"):
        ingest_events_day(DAY, source_cfg)


def test_event_of_another_day_is_routed_to_that_day(source_cfg):
    prev = "2026-09-01"
    late = _events(n=2, day=prev).assign(event_id=["late0", "late1"])
    _land(source_cfg, _events(n=4, day=prev), day=prev)
    _land(source_cfg, pd.concat([_events(), late]))  # folder DAY carries two events of `prev`
    s_prev = ingest_events_day(prev, source_cfg)
    assert s_prev["rows"] == 4 and _accounted(s_prev)
    s_day = ingest_events_day(DAY, source_cfg)
    assert s_day["routed_to"] == {prev: 2} and s_day["rows"] == 6 and _accounted(s_day)
    ingest_events_day(prev, source_cfg)  # what the late-data sensor triggers
    out = read_partition(source_cfg.store_root, "raw_events", prev)
    assert len(out) == 6 and {"late0", "late1"} <= set(out["event_id"])
    assert (out["ts"].dt.strftime("%Y-%m-%d") == prev).all()
    # re-running the carrier folder replaces its routed rows rather than appending
    ingest_events_day(DAY, source_cfg)
    assert len(read_partition(source_cfg.store_root, "raw_events", prev)) == 6


def test_event_far_outside_the_range_is_quarantined(source_cfg):
    df = _events()
    df.loc[0, "ts"] = pd.Timestamp("1970-01-01", tz="UTC")
    _land(source_cfg, df)
    stats = ingest_events_day(DAY, source_cfg)
    q = _quarantine(source_cfg)
    assert stats["quarantined"] == 1 and "outside the accepted range" in q["reason"][0] and _accounted(stats)


def test_column_mapping_and_csv(source_cfg):
    df = _events().rename(columns={"user_id": "customer", "ts": "event_time", "event_type": "action"})
    df["event_time"] = df["event_time"].map(lambda t: t.isoformat())
    _land(source_cfg, df, fmt="csv")
    cfg = replace(source_cfg, file_format="csv", column_mapping={"events": {"customer": "user_id", "event_time": "ts", "action": "event_type"}})
    stats = ingest_events_day(DAY, cfg)
    assert stats["rows"] == 6 and stats["quarantined"] == 0


def test_optional_columns_may_be_absent(source_cfg):
    _land(source_cfg, _events()[["user_id", "ts", "event_type"]])
    stats = ingest_events_day(DAY, source_cfg)
    out = read_partition(source_cfg.store_root, "raw_events", DAY)
    assert stats["rows"] == 6 and out["price"].isna().all() and out["event_id"].isna().all()


def test_reingesting_replaces_the_partition(source_cfg):
    _land(source_cfg, _events())
    ingest_events_day(DAY, source_cfg)
    ingest_events_day(DAY, source_cfg)
    files = list((Path(source_cfg.store_root) / "raw_events" / f"date={DAY}").iterdir())
    assert len(files) == 1 and pq.read_metadata(files[0]).num_rows == 6


def test_generated_demo_day_is_clean(small_landing):
    stats = ingest_events_day("2026-09-02", small_landing)
    assert stats["quarantined"] == 0 and stats["rows"] > 500 and _accounted(stats)


def test_dimensions_validate_and_quarantine(small_landing):
    stats = ingest_dimension("products", small_landing)
    assert stats["quarantined"] == 0 and stats["rows"] == 80
    users = pd.read_parquet(Path(small_landing.landing_root) / "users" / "users.parquet")
    bad = pd.concat([users, users.iloc[[0]], users.iloc[[1]].assign(user_id=None)])
    (Path(small_landing.landing_root) / "users" / "users.parquet").unlink()
    bad.to_parquet(Path(small_landing.landing_root) / "users" / "users.parquet", index=False)
    stats = ingest_dimension("users", small_landing)
    snap = read_snapshot(small_landing.store_root, "users")
    assert stats["quarantined"] == 2 and len(snap) == len(users) and snap["user_id"].is_unique
