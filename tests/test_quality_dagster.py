"""Quality gates through Dagster on the demo world with a shifted day.

One single-run backfill materializes raw_events -> product_dynamic and the monitoring
asset; the checks then hold one evaluation per partition in the instance. The shifted
day is flagged by drift (ERROR) and the normal days before it are not, although the
weekly rhythm is there; the freshness check turns red on a stale partition; a published
feature set that lost a feature fails its compatibility check.
"""

import os
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from featurecore import demo_data
from featurecore.config import load_source_config
from featurecore.feature_sets import FeatureRef, from_groups, save
from featurecore.store import partition_dir
from featurecore.timeutil import day_range

START, SHIFT = "2026-09-01", "2026-09-29"
DAYS = day_range(START, SHIFT)
DEMO = demo_data.DemoConfig(start=START, days=len(DAYS), users=400, products=150, events_per_day=2000, seed=5,
                            shift_day=SHIFT)
GROUP = "product_dynamic"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def run(tmp_path_factory, dask_client):
    """The demo landed and the range materialized in one run; returns (defs, instance, result, cfg)."""
    from feature_assets.definitions import build_defs
    from resources import DaskResource, LandingZone, OfflineStore

    root = tmp_path_factory.mktemp("qdg")
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "store"))
    demo_data.generate(cfg.landing_root, DEMO)
    # a published set with importances at selection: monitoring recomputes them on recent data
    watch = from_groups("product_watch", "1", {GROUP: ["view_count_7d", "purchase_count_7d", "price_mean_7d"]})
    save(replace(watch, info={"importances": {"view_count_7d": 0.6, "purchase_count_7d": 0.3, "price_mean_7d": 0.1}}),
         cfg.store_root)
    defs = build_defs(landing=LandingZone(landing_root=cfg.landing_root), store=OfflineStore(root=cfg.store_root),
                      dask=DaskResource(scheduler_address=dask_client.scheduler.address))
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        assert defs.resolve_job_def("dimensions").execute_in_process(instance=instance, run_config=QUIET).success
        keys = [dg.AssetKey(k) for k in ("raw_events", f"{GROUP}_tiles", GROUP, "feature_monitoring")]
        result = defs.resolve_job_def("daily_features").execute_in_process(
            instance=instance, asset_selection=keys, run_config=QUIET, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]})
        yield defs, instance, result, cfg


def per_partition(instance, check: str, asset: str = GROUP) -> dict:
    """partition -> (passed, severity, description) of a check's latest evaluation per partition."""
    recs = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(dg.AssetKey(asset), check), limit=500)
    out = {}
    for r in sorted(recs, key=lambda r: r.id):
        ev = r.event.dagster_event.event_specific_data if r.event and r.event.dagster_event else None
        if ev is not None and getattr(ev, "partition", None):
            out[ev.partition] = (ev.passed, ev.severity.value, ev.description)
    return out


def test_every_partition_gets_its_own_evaluation(run):
    _, instance, result, _ = run
    assert result.success
    for check in ("schema", "stats", "relations", "drift"):
        got = per_partition(instance, check)
        assert sorted(got) == DAYS, (check, sorted(got))
    assert all(p for p, _, _ in per_partition(instance, "schema").values())
    assert all(p for p, _, _ in per_partition(instance, "relations").values())


def test_shifted_day_flagged_by_drift_and_normal_days_not(run):
    _, instance, _, _ = run
    drift = per_partition(instance, "drift")
    passed, severity, text = drift[SHIFT]
    assert not passed and severity == "ERROR"
    assert "product_dynamic.price_" in text and "PSI" in text and "KS" in text, text
    normal = {d: v for d, v in drift.items() if d < SHIFT}
    assert all(p for p, _, _ in normal.values()), {d: t for d, (p, _, t) in normal.items() if not p}
    # the normal days before the shift were really compared (a full week of them)
    compared = [d for d, (_, _, t) in normal.items() if t.startswith("no drift in") and not t.startswith("no drift in 0 ")]
    assert len(compared) >= 7, compared


def test_monitoring_asset_shows_trends_and_attention(run):
    _, instance, _, cfg = run
    mat = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("feature_monitoring"),
                                                                asset_partitions=[SHIFT]), limit=1).records[0]
    meta = mat.asset_materialization.metadata
    assert "data:image/png;base64," in meta["trends"].value
    attention = meta["needs_attention"].value
    assert "price_" in attention and "drift: PSI" in attention
    assert meta["features_drifting"].value >= 1
    import pandas as pd

    table = pd.read_parquet(partition_dir(cfg.store_root, "feature_monitoring", SHIFT))
    assert {"missing_rate", "outlier_rate", "psi", "ks", "drift"} <= set(table.columns)
    assert (table.loc[table["feature"] == "price_last_all", "drift"] == "error").all()
    imp = meta["importance_summary"].value
    assert [(r["feature_set"], r["version"]) for r in imp] == [("product_watch", "1")]
    assert imp[0]["status"] in ("ok", "warn", "error", "skipped") and (imp[0]["status"] != "skipped" or imp[0]["note"])


def test_freshness_turns_red_on_a_stale_partition(run):
    defs, instance, _, cfg = run
    job = dg.define_asset_job("fresh", selection=dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey(GROUP), "freshness")))
    d = dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
    ok = d.resolve_job_def("fresh").execute_in_process(instance=instance, run_config=QUIET)
    ev = ok.get_asset_check_evaluations()[0]
    assert ev.passed and "fresh" in ev.description and "dagster/fresh_until_timestamp" in ev.metadata

    # data landed 6 h ago, partitions were written 5 h ago, and a corrected file for 2026-09-27 landed 4 h ago
    now = time.time()
    for folder in (Path(cfg.landing_root) / "events").iterdir():
        for f in folder.iterdir():
            t = now - (4 if folder.name == "2026-09-27" else 6) * 3600
            os.utime(f, (t, t))
    for day in DAYS:
        for f in partition_dir(cfg.store_root, GROUP, day).glob("*.parquet"):
            os.utime(f, (now - 5 * 3600, now - 5 * 3600))
    bad = d.resolve_job_def("fresh").execute_in_process(instance=instance, run_config=QUIET)
    ev = bad.get_asset_check_evaluations()[0]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert "stale partition(s): 2026-09-27 written" in ev.description and "overdue 1.0 h" in ev.description

    # the sensor re-runs checks whose verdict can have changed: never evaluated ones now, this one in an hour
    from feature_assets.quality import freshness_sensor

    tick = freshness_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=d))
    due = set(tick.run_requests[0].asset_check_keys)
    assert dg.AssetCheckKey(dg.AssetKey("user_behavior"), "freshness") in due
    assert dg.AssetCheckKey(dg.AssetKey(GROUP), "freshness") not in due


def test_compat_check_names_a_feature_that_is_no_longer_produced(run):
    defs, instance, _, cfg = run
    good = from_groups("product_core", "1", {GROUP: ["view_count_7d", "price_mean_7d"]})
    save(good, cfg.store_root)
    gone = replace(good, name="product_old", features=good.features + (FeatureRef(GROUP, "price_median_7d"),))
    save(gone, cfg.store_root)
    key = dg.AssetCheckKey(dg.AssetKey(GROUP), "feature_set_compat")
    d = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job("compat", selection=dg.AssetSelection.checks(key))]))
    ev = d.resolve_job_def("compat").execute_in_process(instance=instance, run_config=QUIET).get_asset_check_evaluations()[0]
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    assert "product_old v1" in ev.description and "product_dynamic.price_median_7d is no longer produced" in ev.description
    assert "product_core" not in ev.metadata["problems"].value


def test_a_daily_run_checks_its_own_partition(run):
    """What the schedule does: one partition per run; its checks land on that partition."""
    defs, instance, _, _ = run
    keys = [dg.AssetKey(k) for k in (f"{GROUP}_tiles", GROUP)]
    result = defs.resolve_job_def("daily_features").execute_in_process(
        instance=instance, asset_selection=keys, partition_key=SHIFT, run_config=QUIET)
    assert result.success
    evs = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(GROUP)}
    assert {"schema", "stats", "relations", "drift", "freshness", "feature_set_compat"} <= set(evs)
    assert evs["drift"].partition == SHIFT and not evs["drift"].passed
    assert evs["schema"].partition == SHIFT and evs["schema"].passed and evs["relations"].passed
