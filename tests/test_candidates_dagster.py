"""Candidate assets through a real Dagster instance: a range run on the cadence, a skipped
partition, and a tsfresh asset on a generic sensor table."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from candidate_store import DAYS, START, SUNDAY, build_store

from feature_assets.candidates import build_tsfresh_asset
from feature_assets.definitions import build_defs
from feature_assets.partitions import daily_partitions
from featurecore.candidates import tsfresh_features as tsf
from featurecore.candidates.costs import read_costs
from featurecore.groups import GROUPS
from featurecore.pipeline import features_range, tile_day
from featurecore.store import partition_exists, read_partition, write_partition
from featurecore.timeutil import day_range, shift_day
from resources import DaskResource, LandingZone, OfflineStore

SATURDAY = shift_day(SUNDAY, -1)
CANDIDATES = ["dfs_candidates", "tsfresh_candidates", "interaction_candidates", "encoded_candidates"]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SMALL = {
    "dfs_candidates": {"config": {"sample_entities": 60, "max_features": 40, "max_depth": 2, "min_shard_entities": 30}},
    "tsfresh_candidates": {"config": {"parameters": "minimal", "window_days": 7, "min_shard_entities": 30}},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, dask_client):
    """Demo store with the user feature groups, and resources pointing at the session's cluster."""
    cfg = build_store(tmp_path_factory.mktemp("dg"))
    groups = [GROUPS[g] for g in ("user_behavior", "user_temporal", "user_context")]
    dask_client.gather(dask_client.map(tile_day, DAYS, groups=groups, store_root=cfg.store_root, pure=False))
    dask_client.gather([dask_client.submit(features_range, DAYS, g, cfg.store_root, START, pure=False) for g in groups])
    resources = {"landing": LandingZone(landing_root=cfg.landing_root), "store": OfflineStore(root=cfg.store_root),
                 "dask": DaskResource(scheduler_address=dask_client.scheduler.address)}
    return cfg, resources


def _mat(result, key):
    return [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == dg.AssetKey(key)]


def test_range_run_computes_cadence_days_and_notes_the_rest(world, tmp_path):
    cfg, resources = world
    defs = build_defs(**resources)
    job = defs.resolve_job_def("daily_features")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        r = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(k) for k in CANDIDATES],
                                   run_config={**QUIET, "ops": SMALL},
                                   tags={"dagster/asset_partition_range_start": SATURDAY, "dagster/asset_partition_range_end": SUNDAY})
        assert r.success
        for key in CANDIDATES:
            mats = _mat(r, key)
            assert {m.partition for m in mats} == {SATURDAY, SUNDAY}, key
            md = mats[0].metadata
            weekly = key in ("dfs_candidates", "tsfresh_candidates")
            assert md["days_computed"].value == (1 if weekly else 2), key
            assert md["days_skipped"].value == (1 if weekly else 0), key
            if weekly:
                assert "not on the cadence (Sundays (weekly))" in md["skip_note"].value
            assert md["rows_in_run"].value > 0 and md["throughput_entities_per_s"].value > 0
            assert "| family" in md["cost_by_family"].value and md["features"].value > 0
            assert partition_exists(cfg.store_root, key, SUNDAY)
            assert partition_exists(cfg.store_root, key, SATURDAY) == (not weekly)
            assert not read_costs(cfg.store_root, key, [SUNDAY]).empty
        dfs_md = _mat(r, "dfs_candidates")[0].metadata
        assert dfs_md["definitions_sha"].value and dfs_md["discovered_on_day"].value == SUNDAY


def test_partition_off_cadence_is_skipped_with_a_note(world, tmp_path):
    cfg, resources = world
    defs = build_defs(**resources)
    job = defs.resolve_job_def("daily_features")
    friday = shift_day(SUNDAY, -2)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        r = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("dfs_candidates")], partition_key=friday,
                                   run_config={**QUIET, "ops": {"dfs_candidates": SMALL["dfs_candidates"]}})
        assert r.success
        md = _mat(r, "dfs_candidates")[0].metadata
        assert md["skipped"].value is True and md["days_computed"].value == 0
        assert not partition_exists(cfg.store_root, "dfs_candidates", friday)


def test_tsfresh_asset_on_a_sensor_table(tmp_path, dask_client):
    root = str(tmp_path / "store")
    rng = np.random.default_rng(1)
    days = day_range(START, "2026-09-03")
    for d in days:
        ts = pd.date_range(d, periods=96, freq="15min", tz="UTC")
        write_partition(pd.DataFrame({"machine": np.repeat([f"m{i}" for i in range(12)], len(ts)), "ts": np.tile(ts, 12),
                                      "rpm": rng.normal(1500, 50, 12 * len(ts)), "temp": rng.normal(60, 2, 12 * len(ts))}),
                        root, "sensor_readings", d)
    source = tsf.SeriesSource(asset="sensor_readings", entity="machine", window_days=1, frequency="1h",
                              kinds=(tsf.SeriesKind("rpm", column="rpm", agg="mean"), tsf.SeriesKind("temp", column="temp", agg="max")))
    asset = build_tsfresh_asset("sensor_tsfresh_candidates", source,
                                deps=[dg.AssetDep("sensor_readings", partition_mapping=dg.TimeWindowPartitionMapping(start_offset=0, end_offset=0))])
    defs = dg.Definitions(assets=[dg.AssetSpec("sensor_readings", partitions_def=daily_partitions), asset],
                          resources={"landing": LandingZone(landing_root=str(tmp_path / "landing")), "store": OfflineStore(root=root),
                                     "dask": DaskResource(scheduler_address=dask_client.scheduler.address)})
    job = dg.define_asset_job("sensor", selection=[asset.key], partitions_def=daily_partitions).resolve(asset_graph=defs.resolve_asset_graph())
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        r = job.execute_in_process(instance=instance, partition_key=days[-1], resources=defs.resources,
                                   run_config={**QUIET, "ops": {"sensor_tsfresh_candidates": {"config": {"cadence": "daily", "parameters": "minimal"}}}})
        assert r.success
    got = read_partition(root, "sensor_tsfresh_candidates", days[-1])
    assert len(got) == 12 and {"machine", "cutoff", "rpm__mean", "temp__maximum"} <= set(got.columns)
    assert (got["rpm__length"] == 24).all()  # 24 hourly means in the 1-day window
