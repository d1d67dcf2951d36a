"""tsfresh candidates: cluster == one process, a generic sensor table with labels, selection
via from_columns, leakage, and clear errors for short series and empty shards."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from candidate_store import START, SUNDAY, build_store
from tsfresh import extract_features
from tsfresh.feature_extraction import EfficientFCParameters

from featurecore.candidates import runner
from featurecore.candidates import tsfresh_features as tsf
from featurecore.candidates.common import CandidateError, EmptyShardError, EntityConfigError, SeriesTooShortError
from featurecore.candidates.costs import read_costs
from featurecore.store import partition_dir, read_partition, write_partition
from featurecore.timeutil import cutoff, day_range, shift_day

ASSET = "tsfresh_candidates"
DEMO_CFG = tsf.TsfreshConfig(source=tsf.SeriesSource(window_days=10), parameters="efficient")

SENSOR_DAYS = day_range("2026-09-01", "2026-09-04")
SENSOR_SOURCE = tsf.SeriesSource(
    asset="sensor_readings", entity="sensor_id", time="ts", window_days=1, frequency="30min",
    kinds=(tsf.SeriesKind("temperature", column="temperature", agg="mean"),
           tsf.SeriesKind("vibration", column="vibration", agg="max")),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("tsf"))


def _demo_entities(root):
    # a subset keeps the single-process reference quick; the cluster run gets the same entities
    return tsf.list_entities(root, SUNDAY, START, DEMO_CFG.source)[:36]


def test_cluster_equals_one_process(store, dask_client, tmp_path):
    root = store.store_root
    ents = _demo_entities(root)
    # restrict the store to these users, so the asset's entity list is exactly `ents`
    sub = tmp_path / "sub"
    shutil.copytree(root, sub)
    for d in day_range(START, shift_day(SUNDAY, 1)):
        ev = read_partition(root, "raw_events", d)
        write_partition(ev[ev["user_id"].isin(ents)], sub, "raw_events", d)
    rep = runner.run_tsfresh(dask_client, str(sub), ASSET, [SUNDAY], START, DEMO_CFG, min_shard_entities=6)
    rep.raise_errors()
    assert rep.days[0]["shards"] == 6 and rep.days[0]["entities"] == len(ents)
    assert len(list(partition_dir(sub, ASSET, SUNDAY).glob("part-*.parquet"))) == 6
    got = read_partition(sub, ASSET, SUNDAY).set_index("user_id").sort_index()
    assert (got["cutoff"] == cutoff(SUNDAY)).all()

    # one process: the same series through tsfresh's extract_features with EfficientFCParameters
    rows = tsf.read_rows(root, SUNDAY, START, DEMO_CFG.source, ents)
    series = tsf.build_series(rows, DEMO_CFG.source, SUNDAY, ents, START)
    assert series.groupby(["id", "kind"]).size().eq(10).all()  # 10 daily points per kind
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = extract_features(series, column_id="id", column_sort="t", column_kind="kind", column_value="value",
                               default_fc_parameters=EfficientFCParameters(), n_jobs=0, disable_progressbar=True)
    assert ref.shape[1] > 1000
    ref = ref.sort_index()
    pd.testing.assert_frame_equal(got[list(ref.columns)], ref.astype("float64"), check_names=False, check_index_type=False, rtol=1e-12)
    # the demo series are what they claim: a user's daily event counts sum to their events in the window
    n_events = rows.groupby("user_id").size().sort_index()
    np.testing.assert_array_equal(got.loc[n_events.index, "event_count__sum_values"].to_numpy(), n_events.to_numpy())
    costs = read_costs(sub, ASSET).set_index("family")
    assert costs.loc["tsfresh", "n_features"] == ref.shape[1] and costs.loc["tsfresh", "seconds"] > 0


def test_demo_leakage_events_at_or_after_cutoff(store, tmp_path):
    root = store.store_root
    ents = _demo_entities(root)[:12]
    manifest = tsf.prepare(root, ASSET, SUNDAY, START, tsf.TsfreshConfig(source=DEMO_CFG.source, parameters="minimal"))
    cfg = tsf.TsfreshConfig(source=DEMO_CFG.source, parameters="minimal")
    clean, _, _ = tsf.compute(root, ASSET, SUNDAY, START, cfg, manifest, ents)
    leaky_root = tmp_path / "leaky"
    shutil.copytree(root, leaky_root)
    ev = read_partition(root, "raw_events", SUNDAY)
    leak = ev[ev["user_id"].isin(ents)].assign(ts=cutoff(SUNDAY), event_type="purchase", price=999.0)
    later = leak.assign(ts=cutoff(SUNDAY) + pd.Timedelta(hours=2))
    write_partition(pd.concat([ev, leak], ignore_index=True), leaky_root, "raw_events", SUNDAY)
    nxt = shift_day(SUNDAY, 1)
    write_partition(pd.concat([read_partition(root, "raw_events", nxt), leak, later], ignore_index=True), leaky_root, "raw_events", nxt)
    after, _, _ = tsf.compute(str(leaky_root), ASSET, SUNDAY, START, cfg, manifest, ents)
    pd.testing.assert_frame_equal(clean, after, check_exact=True)
    # and the series do see an event just before the cutoff (the test could fail)
    before = leak.assign(ts=cutoff(SUNDAY) - pd.Timedelta(seconds=1))
    write_partition(pd.concat([ev, before], ignore_index=True), leaky_root, "raw_events", SUNDAY)
    moved, _, _ = tsf.compute(str(leaky_root), ASSET, SUNDAY, START, cfg, manifest, ents)
    hit = clean["user_id"].isin(leak["user_id"])
    assert hit.sum() >= 3
    assert (moved.loc[hit, "purchase_amount__sum_values"] > clean.loc[hit, "purchase_amount__sum_values"]).all()


def _sensor_store(root):
    """Readings every 10 minutes of 30 sensors; the faulty third vibrate much more. Labels per day."""
    rng = np.random.default_rng(4)
    sensors = [f"s{i:02d}" for i in range(30)]
    faulty = set(sensors[::3])
    labels = []
    for d in SENSOR_DAYS:
        ts = pd.date_range(d, periods=144, freq="10min", tz="UTC")
        frames = []
        for s in sensors:
            amp = 5.0 if s in faulty else 1.0
            frames.append(pd.DataFrame({"sensor_id": s, "ts": ts, "temperature": 20 + rng.normal(0, 1, len(ts)),
                                        "vibration": np.abs(rng.normal(0, amp, len(ts)))}))
            labels.append({"entity_id": s, "label_ts": pd.Timestamp(d, tz="UTC") + pd.Timedelta(days=1, hours=6),
                           "label": int(s in faulty)})
        write_partition(pd.concat(frames, ignore_index=True), root, "sensor_readings", d)
    return pd.DataFrame(labels)


def test_sensor_table_with_labels_selection_and_from_columns(tmp_path, dask_client):
    root = str(tmp_path / "store")
    labels = _sensor_store(root)
    days = SENSOR_DAYS[2:]
    # efficient without change_quantiles (its slowest calculator) keeps the test quick
    cfg = tsf.TsfreshConfig(source=SENSOR_SOURCE, parameters="efficient-no-cq")
    rep = runner.run_tsfresh(dask_client, root, "sensor_tsfresh", days, SENSOR_DAYS[0], cfg, min_shard_entities=5)
    rep.raise_errors()
    assert [d["entities"] for d in rep.days] == [30, 30]
    full = pd.concat([read_partition(root, "sensor_tsfresh", d) for d in days], ignore_index=True)
    assert full["sensor_id"].nunique() == 30 and full.filter(like="vibration__").shape[1] > 300

    sel = tsf.select_from_labels(full, labels, "sensor_id")
    assert sel["label_rows"] == 60 and 0 < len(sel["columns"]) < sel["tested"]
    assert any(c.startswith("vibration__") for c in sel["columns"])
    path = tsf.save_selection(root, "sensor_tsfresh", sel)

    # a later run extracts only the selected features (kind_to_fc_parameters via from_columns)
    cfg2 = tsf.TsfreshConfig(source=SENSOR_SOURCE, parameters=str(path))
    rep2 = runner.run_tsfresh(dask_client, root, "sensor_tsfresh_selected", days[-1:], SENSOR_DAYS[0], cfg2, min_shard_entities=5)
    rep2.raise_errors()
    got = read_partition(root, "sensor_tsfresh_selected", days[-1]).set_index("sensor_id").sort_index()
    assert sorted(c for c in got.columns if c != "cutoff") == sorted(sel["columns"])
    ref = read_partition(root, "sensor_tsfresh", days[-1]).set_index("sensor_id").sort_index()
    pd.testing.assert_frame_equal(got[sel["columns"]], ref[sel["columns"]], rtol=1e-12)


def test_short_series_error_drop_and_failed_day_does_not_block_others(tmp_path, dask_client):
    root = str(tmp_path / "store")
    _sensor_store(root)
    raw = tsf.SeriesSource(asset="sensor_readings", entity="sensor_id", window_days=1, frequency=None,
                           kinds=(tsf.SeriesKind("vibration", column="vibration", agg="max"),), min_length=5)
    # thin one sensor out to 2 readings on the last day
    last = SENSOR_DAYS[-1]
    df = read_partition(root, "sensor_readings", last)
    keep = (df["sensor_id"] != "s07") | (df.groupby("sensor_id").cumcount() < 2)
    write_partition(df[keep], root, "sensor_readings", last)
    cfg = tsf.TsfreshConfig(source=raw, parameters="minimal")
    manifest = tsf.prepare(root, "short", last, SENSOR_DAYS[0], cfg)
    with pytest.raises(SeriesTooShortError, match=r"entity 's07', kind 'vibration' has 2 point\(s\), fewer than min_length=5"):
        tsf.compute(root, "short", last, SENSOR_DAYS[0], cfg, manifest, ["s06", "s07"])
    dropping = tsf.TsfreshConfig(source=tsf.SeriesSource(**{**raw.__dict__, "short_series": "drop"}), parameters="minimal")
    df2, _, dropped = tsf.compute(root, "short", last, SENSOR_DAYS[0], dropping, manifest, ["s06", "s07"])
    assert dropped == ["s07"] and list(df2["sensor_id"]) == ["s06"]

    # through the runner: the bad day fails loudly, the good day is committed, nothing half-written
    rep = runner.run_tsfresh(dask_client, root, "short", [SENSOR_DAYS[-2], last], SENSOR_DAYS[0], cfg, min_shard_entities=5)
    assert [d["day"] for d in rep.days] == [SENSOR_DAYS[-2]]
    assert len(rep.errors) == 1 and rep.errors[0].startswith(last) and "s07" in rep.errors[0]
    assert not partition_dir(root, "short", last).exists()
    assert not list((tmp_path / "store" / "short").glob(".staging-*"))
    with pytest.raises(CandidateError, match="1 day\\(s\\) failed"):
        rep.raise_errors()

    # a resampled window too short for the calculators is refused when configured
    with pytest.raises(SeriesTooShortError, match="gives series of 2 points"):
        tsf.SeriesSource(window_days=2, frequency="1D")


def test_misconfigured_entity_and_empty_shard(tmp_path):
    root = str(tmp_path / "store")
    _sensor_store(root)
    bad = tsf.SeriesSource(**{**SENSOR_SOURCE.__dict__, "entity": "device"})
    with pytest.raises(EntityConfigError, match=r"entity column 'device' not found; available columns: .*'sensor_id'"):
        tsf.check_source(root, SENSOR_DAYS[-1], SENSOR_DAYS[0], bad)
    wrong_kind = tsf.SeriesSource(**{**SENSOR_SOURCE.__dict__, "kinds": (tsf.SeriesKind("pressure", column="pressure", agg="mean"),)})
    with pytest.raises(EntityConfigError, match="kind 'pressure' value column 'pressure'"):
        tsf.check_source(root, SENSOR_DAYS[-1], SENSOR_DAYS[0], wrong_kind)
    cfg = tsf.TsfreshConfig(source=SENSOR_SOURCE, parameters="minimal")
    manifest = tsf.prepare(root, "x", SENSOR_DAYS[-1], SENSOR_DAYS[0], cfg)
    with pytest.raises(EmptyShardError, match="empty shard"):
        tsf.compute(root, "x", SENSOR_DAYS[-1], SENSOR_DAYS[0], cfg, manifest, [])
    with pytest.raises(EmptyShardError, match="none of the shard's 2 entities has a row"):
        tsf.compute(root, "x", SENSOR_DAYS[-1], SENSOR_DAYS[0], cfg, manifest, ["nope1", "nope2"])
