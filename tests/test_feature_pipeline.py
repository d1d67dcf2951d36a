"""Feature groups through the store and Dask: incremental equals full, through Dagster too."""

import shutil
from dataclasses import replace

import dagster as dg
import pandas as pd
import pytest

from featurecore import demo_data
from featurecore.groups import GROUPS
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.pipeline import features_range, state_asset, tile_day, tiles_asset
from featurecore.store import read_partition
from featurecore.timeutil import day_range

DEMO = demo_data.DemoConfig(start="2026-09-01", days=6, users=150, products=40, events_per_day=700, seed=5, late_fraction=0.02)
DAYS = day_range("2026-09-01", "2026-09-06")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A store with raw_events for DAYS and the dimension snapshots."""
    from featurecore.config import load_source_config

    root = tmp_path_factory.mktemp("fp")
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "base"), partition_start=DAYS[0])
    demo_data.generate(cfg.landing_root, DEMO)
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    for d in DAYS + DAYS:  # twice, so late rows routed back are included
        ingest_events_day(d, cfg)
    return root, cfg


def _copy_store(root, name):
    dst = root / name
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(root / "base", dst)
    return str(dst)


def test_incremental_equals_full_backfill(ingested, dask_client):
    root, cfg = ingested
    groups = list(GROUPS.values())
    full = _copy_store(root, "full")
    dask_client.gather(dask_client.map(tile_day, DAYS, groups=groups, store_root=full, pure=False))
    dask_client.gather([dask_client.submit(features_range, DAYS, g, full, DAYS[0], pure=False) for g in groups])

    inc = _copy_store(root, "inc")
    for d in DAYS:  # what the daily schedule does, one day at a time
        dask_client.submit(tile_day, d, groups, inc, pure=False).result()
        dask_client.gather([dask_client.submit(features_range, [d], g, inc, DAYS[0], pure=False) for g in groups])

    for g in groups:
        for d in DAYS:
            a, b = read_partition(full, g.name, d), read_partition(inc, g.name, d)
            assert len(a) > 0, (g.name, d)
            pd.testing.assert_frame_equal(a, b, check_exact=True, obj=f"{g.name} {d}")


def test_missing_state_is_rebuilt_from_tiles(ingested, dask_client):
    """A run for day D with no stored state for D-1 (a gap) rebuilds it from the tiles."""
    root, cfg = ingested
    g = GROUPS["user_behavior"]
    store = _copy_store(root, "gap")
    dask_client.gather(dask_client.map(tile_day, DAYS, groups=[g], store_root=store, pure=False))
    features_range(DAYS, g, store, DAYS[0])
    expected = read_partition(store, g.name, DAYS[-1])
    shutil.rmtree(f"{store}/{state_asset(g)}")
    features_range([DAYS[-1]], g, store, DAYS[0])
    pd.testing.assert_frame_equal(read_partition(store, g.name, DAYS[-1]), expected, check_exact=True)


def test_dagster_range_run_equals_daily_runs(ingested, tmp_path):
    """Through Dagster: one single-run backfill == one run per day, for every group."""
    from feature_assets.definitions import build_defs
    from resources import DaskResource, LandingZone, OfflineStore

    root, cfg = ingested
    outs = {}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for mode in ("range", "daily"):
            store = _copy_store(root, f"dg-{mode}")
            d = build_defs(landing=LandingZone(landing_root=cfg.landing_root), store=OfflineStore(root=store), dask=DaskResource(n_workers=2))
            job = d.resolve_job_def("daily_features")
            keys = [dg.AssetKey(tiles_asset(g)) for g in GROUPS.values()] + [dg.AssetKey(n) for n in GROUPS]
            quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
            if mode == "range":
                r = job.execute_in_process(instance=instance, asset_selection=keys, run_config=quiet, tags={
                    "dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]})
                assert r.success
                checks = r.get_asset_check_evaluations()
                # one schema result per group for the range (plus one per partition and the quality checks)
                assert len([c for c in checks if c.check_name == "schema" and c.partition is None]) == len(GROUPS)
                assert all(c.passed for c in checks)
            else:
                for day in DAYS:
                    assert job.execute_in_process(instance=instance, asset_selection=keys, partition_key=day, run_config=quiet).success
            outs[mode] = store
    for name in GROUPS:
        for day in DAYS:
            # A range run splits days into per-worker chunks, so float sums may be added in
            # another order than day by day: equal to the last ulps, exact for everything else.
            pd.testing.assert_frame_equal(read_partition(outs["range"], name, day), read_partition(outs["daily"], name, day), check_exact=False, rtol=1e-12, atol=0)
