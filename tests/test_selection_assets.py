"""The train_and_select job through a real Dagster instance: derived labels, then a user-supplied labels table."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from featurecore import demo_data
from featurecore.feature_sets import load
from featurecore.groups import GROUPS
from featurecore.selection import read_cost_basis
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.pipeline import features_range, tile_day
from featurecore.timeutil import day_range
from featurecore.training import read_manifest, read_training_set

DEMO = demo_data.DemoConfig(start="2026-09-01", days=34, users=400, products=60, events_per_day=2500, seed=9, wide_columns=40)
DAYS = day_range("2026-09-01", "2026-10-04")
USER_GROUPS = ["user_behavior", "user_temporal", "user_context"]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory, dask_client):
    """A store with raw events, dimensions and the user groups (built with the assets' task functions)."""
    from featurecore.config import load_source_config

    root = tmp_path_factory.mktemp("sel-assets")
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "store"), partition_start=DAYS[0])
    demo_data.generate(cfg.landing_root, DEMO)
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    dask_client.gather(dask_client.map(ingest_events_day, DAYS, cfg=cfg, pure=False))
    groups = [GROUPS[g] for g in USER_GROUPS]
    dask_client.gather(dask_client.map(tile_day, DAYS, groups=groups, store_root=cfg.store_root, pure=False))
    dask_client.gather([dask_client.submit(features_range, DAYS, g, cfg.store_root, DAYS[0], pure=False) for g in groups])
    return cfg


def _run(cfg, instance, dask_client, run_config=None, assets=None):
    from feature_assets.definitions import build_defs
    from resources import DaskResource, LandingZone, OfflineStore

    defs = build_defs(landing=LandingZone(landing_root=cfg.landing_root), store=OfflineStore(root=cfg.store_root),
                      dask=DaskResource(scheduler_address=dask_client.scheduler.address))
    res = defs.resolve_job_def("train_and_select").execute_in_process(
        instance=instance, run_config={**QUIET, **(run_config or {})},
        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None)
    assert res.success
    return {ev.event_specific_data.materialization.asset_key.to_user_string(): ev.event_specific_data.materialization.metadata
            for ev in res.get_asset_materialization_events()}


def test_train_and_select_with_derived_then_supplied_labels(store, dask_client, tmp_path):
    cfg = store
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        meta = _run(cfg, instance, dask_client)
        assert meta["users_wide"]["dagster/row_count"].value == DEMO.users
        lab = meta["labels"]
        assert lab["kind"].value == "derived" and lab["pending_days"].value.startswith("2026-09-29")
        ts = meta["candidate_training_set"]
        assert ts["start"].value == "2026-09-15" and ts["end"].value == "2026-09-28"  # warmup 14 days, horizon 7
        man = read_manifest(cfg.store_root, "user_candidates")
        assert man["rows"] == ts["dagster/row_count"].value > 3000
        assert {"user_behavior", "user_temporal", "user_context", "users", "users_wide"} <= set(man["sources"])
        sel = meta["feature_selection"]
        for key in ("importance_plot", "metric_with_and_without_each_family", "cost_vs_value"):
            assert "data:image/png;base64," in sel[key].value
        assert "not relevant" in sel["dropped_features"].value
        fs = load(cfg.store_root, "user_selected")
        assert fs.version == "1" and 0 < len(fs.features) < man["columns"]["features"].__len__()
        assert set(fs.info["importances"]) == {f.qualified for f in fs.features}
        assert fs.info["metrics"]["cv_baseline"] > 0.6 and fs.info["label"]["spec"]["kind"] == "derived"
        assert set(fs.info["source_versions"]) >= set(fs.sources)
        _assert_provenance(cfg.store_root, fs)
        # decisions used the recorded cost basis (measured seconds are only reported)
        assert set(fs.info["cost_basis"]) == set(read_cost_basis(cfg.store_root)) >= {s for s in fs.sources if s in GROUPS}
        assert sel["cost_basis_recorded"].value != "none (reused the recorded basis)"
        # the selected set's own training set: same label rows, only the selected columns
        sel_ts = read_training_set(cfg.store_root, f"user_selected_v{fs.version}")
        assert len(sel_ts) == man["rows"] and set(c for c in sel_ts.columns if "." in c and not c.endswith(".cutoff")) == {f.qualified for f in fs.features}
        for src in ("user_behavior", "users_wide"):
            prof = meta.get(f"{src}_profile")
            assert prof is not None and "data:image/png;base64," in prof["histograms"].value
        assert "product_dynamic_profile" not in meta  # no data for it in this store: skipped, not failed

        # a user-supplied labels table (here: the derived labels at random times of the day, 70% of them)
        derived = pd.concat([pd.read_parquet(p) for p in sorted((Path(cfg.store_root) / "labels").glob("date=*/*.parquet"))])
        rng = np.random.default_rng(0)
        sup = derived.sample(frac=0.7, random_state=1).reset_index(drop=True)
        sup["label_ts"] = (sup["label_ts"] + pd.to_timedelta(rng.integers(0, 12 * 3600, len(sup)), unit="s")).astype(str)
        (Path(cfg.landing_root) / "labels").mkdir()
        sup.to_parquet(Path(cfg.landing_root) / "labels" / "labels.parquet")
        meta2 = _run(cfg, instance, dask_client,
                     {"ops": {"labels": {"config": {"supplied_delay_days": 7}}, "feature_selection": {"config": {"n_folds": 2}}}},
                     assets=["labels", "candidate_training_set", "feature_selection"])
        assert meta2["labels"]["kind"].value == "supplied" and meta2["labels"]["dagster/row_count"].value == len(sup)
        man2 = read_manifest(cfg.store_root, "user_candidates")
        in_range = sup[(sup["label_ts"] >= "2026-09-15") & (sup["label_ts"] < "2026-09-29")]
        assert man2["rows"] == len(in_range) and man2["labels"]["spec"]["kind"] == "supplied"
        fs2 = load(cfg.store_root, "user_selected")
        assert fs2.info["label"]["spec"]["kind"] == "supplied" and fs2.info["metrics"]["cv_baseline"] > 0.6
        assert meta2["feature_selection"]["feature_set"].value == f"user_selected v{fs2.version}"
        # the second selection reused the first one's cost basis
        assert meta2["feature_selection"]["cost_basis_recorded"].value == "none (reused the recorded basis)"
        assert fs2.info["cost_basis"] == fs.info["cost_basis"]
        _assert_provenance(cfg.store_root, fs2)


def _assert_provenance(store_root: str, fs) -> None:
    """The published set carries fingerprints of every source, and a later upstream change is detected with them."""
    from checks.compat import compat_findings, store_layouts
    from checks.layout import layout_of_group, with_features

    prints = fs.info["definitions"]
    assert set(prints) == {f.qualified for f in fs.features}
    for f in fs.features:
        if f.source in GROUPS:
            assert prints[f.qualified] == layout_of_group(GROUPS[f.source]).get(f.feature).fingerprint
            assert fs.info["source_versions"][f.source] == GROUPS[f.source].version
    layouts = store_layouts(store_root, fs.sources, fs.entity_keys)
    assert compat_findings(fs, layouts) == []
    group = next(s for s in fs.sources if s in GROUPS)
    changed = {**layouts, group: with_features(layouts[group], fingerprint="0" * 16)}
    found = compat_findings(fs, changed, [group])
    assert len(found) == len(fs.features_of(group)) and {f["problem"] for f in found} == {"silent definition change"}
    static = next(s for s in fs.sources if s in ("users", "users_wide"))
    retyped = {**layouts, static: with_features(layouts[static], fingerprint="large_string")}
    assert len(compat_findings(fs, retyped, [static])) == len(fs.features_of(static))
