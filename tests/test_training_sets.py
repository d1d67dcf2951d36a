"""Labels and point-in-time training sets through the real store and Dask: brute-force equality and leakage tests."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurecore import demo_data
from featurecore.asof import brute_force_asof
from featurecore.attributes import ingest_static_table
from featurecore.feature_sets import FeatureRef, FeatureSet, from_groups
from featurecore.groups import GROUPS
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.labels import LabelSpec, build_labels, read_manifest as labels_manifest
from featurecore.pipeline import features_range, tile_day
from featurecore.store import read_partition
from featurecore.timeutil import day_range, day_start
from featurecore.training import build_training_set, read_training_set

DEMO = demo_data.DemoConfig(start="2026-09-01", days=16, users=150, products=40, events_per_day=800, seed=21, wide_columns=12)
DAYS = day_range("2026-09-01", "2026-09-16")
GROUP_NAMES = ["user_behavior", "user_temporal", "user_context"]
SPEC = LabelSpec(horizon_days=7, lookback_days=30)
T = "2026-09-08"  # events at or after T 00:00 are perturbed in the leakage test


def _feature_set(ttl_context_days: int = 2) -> FeatureSet:
    """All features of three user groups plus two static sources; a short TTL on user_context so expiry happens."""
    fs = from_groups("t", "1", {g: [] for g in GROUP_NAMES})
    feats = list(fs.features) + [FeatureRef("users", "age"), FeatureRef("users", "segment", "object"),
                                 FeatureRef("users", "signup_date"), FeatureRef("users_wide", "attr_0000")]
    ttls = {**fs.ttl_seconds, "user_context": ttl_context_days * 86_400}
    return replace(fs, features=tuple(feats), ttl_seconds=ttls)


def _build_store(cfg, client):
    """Ingest and compute the three user groups for every day (the Dagster assets' code path)."""
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    ingest_static_table(cfg, "users_wide")
    client.gather(client.map(ingest_events_day, DAYS, cfg=cfg, pure=False))
    groups = [GROUPS[g] for g in GROUP_NAMES]
    client.gather(client.map(tile_day, DAYS, groups=groups, store_root=cfg.store_root, pure=False))
    client.gather([client.submit(features_range, DAYS, g, cfg.store_root, DAYS[0], pure=False) for g in groups])


@pytest.fixture(scope="module")
def world(tmp_path_factory, dask_client):
    """A small store with raw events, dimensions, users_wide, three user groups and derived labels."""
    from featurecore.config import load_source_config

    root = tmp_path_factory.mktemp("ts")
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "store"), partition_start=DAYS[0])
    demo_data.generate(cfg.landing_root, DEMO)
    _build_store(cfg, dask_client)
    build_labels(dask_client, cfg, SPEC, DAYS[0], DAYS[-1])
    return root, cfg


def _raw_events(store_root) -> pd.DataFrame:
    return pd.concat([read_partition(store_root, "raw_events", d, ["user_id", "ts", "event_type"]) for d in DAYS], ignore_index=True)


def test_derived_labels_equal_brute_force_and_wait_for_their_horizon(world):
    _, cfg = world
    man = labels_manifest(cfg.store_root)
    assert man["pending_days"] == day_range("2026-09-11", "2026-09-16")  # L+6 is beyond the data
    ev = _raw_events(cfg.store_root)
    assert man["days"] == day_range("2026-09-01", "2026-09-10")
    for d in man["days"]:
        t = day_start(d)
        got = read_partition(cfg.store_root, "labels", d)
        pop = sorted(ev.loc[(ev.ts >= t - pd.Timedelta(days=30)) & (ev.ts < t), "user_id"].unique())
        buyers = set(ev.loc[(ev.ts >= t) & (ev.ts < t + pd.Timedelta(days=7)) & (ev.event_type == "purchase"), "user_id"])
        assert got["entity_id"].tolist() == pop
        assert (got["label_ts"] == t).all()
        assert got["label"].tolist() == [1.0 if u in buyers else 0.0 for u in pop]
    assert man["rows"] > 500 and 0.05 < man["positive_rate"] < 0.95


def _all_rows(store_root, source) -> pd.DataFrame:
    return pd.concat([read_partition(store_root, source, d) for d in DAYS], ignore_index=True)


def test_training_set_equals_brute_force_lookup(world, dask_client):
    _, cfg = world
    fs = _feature_set()
    man = build_training_set(dask_client, cfg.store_root, fs, "2026-09-03", "2026-09-10", name="bf", chunk_days=3)
    ts = read_training_set(cfg.store_root, "bf")
    assert len(ts) == sum(labels_manifest(cfg.store_root)["rows_per_day"][d] for d in day_range("2026-09-03", "2026-09-10"))
    for g in GROUP_NAMES:
        rows = _all_rows(cfg.store_root, g)
        feats = fs.features_of(g)
        ttl = pd.Timedelta(seconds=fs.ttl_seconds[g])
        ref = brute_force_asof(ts[["user_id", "label_ts"]], rows, ["user_id"], feats, ttl)
        for f in feats:
            a, b = ts[f"{g}.{f}"].to_numpy(float), ref[f].to_numpy(float)
            assert np.array_equal(a, b, equal_nan=True), (g, f)
        used = ts[f"{g}.cutoff"].dropna()
        assert (used <= ts.loc[used.index, "label_ts"]).all()
        assert (used >= ts.loc[used.index, "label_ts"] - ttl).all()
    snap = pd.read_parquet(Path(cfg.store_root) / "users" / "snapshot.parquet").set_index("user_id")
    assert (ts["users.age"].to_numpy() == snap.loc[ts["user_id"], "age"].to_numpy()).all()
    assert (ts["users.segment"].to_numpy() == snap.loc[ts["user_id"], "segment"].to_numpy()).all()
    signup = pd.to_datetime(snap.loc[ts["user_id"], "signup_date"]).dt.tz_localize("UTC").to_numpy()
    expect = (ts["label_ts"].to_numpy() - signup) / pd.Timedelta(days=1)
    np.testing.assert_allclose(ts["users.signup_date"].to_numpy(float), expect)
    assert man["sources"]["users_wide"]["static"] and man["feature_set"]["name"] == "t"
    assert set(man["columns"]["audit"]) == {f"{g}.cutoff" for g in GROUP_NAMES}


def test_supplied_labels_with_arbitrary_times_ttl_and_quarantine(world, dask_client, tmp_path):
    """A user-supplied labels table: bad rows quarantined; rows past the TTL or of unknown users kept with nulls."""
    _, base = world
    cfg = replace(base, landing_root=str(tmp_path / "landing"), store_root=str(tmp_path / "store"))
    shutil.copytree(base.store_root, cfg.store_root)
    rng = np.random.default_rng(5)
    users = pd.read_parquet(Path(cfg.store_root) / "users" / "snapshot.parquet")["user_id"].tolist()
    n = 300
    lab = pd.DataFrame({
        "customer": rng.choice(users + ["nobody"], n),
        "when": [(pd.Timestamp("2026-09-03") + pd.Timedelta(minutes=int(m))).isoformat() for m in rng.integers(0, 60 * 24 * 20, n)],
        "y": rng.integers(0, 2, n).astype(str),
    })
    lab.loc[0, "customer"] = None
    lab.loc[1, "when"] = "not a time"
    lab.loc[2, "y"] = "yes"
    lab.loc[4] = lab.loc[3]  # a duplicate: the last copy wins
    (Path(cfg.landing_root) / "labels").mkdir(parents=True)
    lab.to_csv(Path(cfg.landing_root) / "labels" / "labels.csv", index=False)
    cfg = replace(cfg, column_mapping={"labels": {"customer": "entity_id", "when": "label_ts", "y": "label"}})
    man = build_labels(dask_client, cfg, LabelSpec(kind="supplied"), "2026-09-01", "2026-09-30")
    assert man["quarantined"] == 4 and man["rows"] == n - 4
    q = pd.read_parquet(Path(cfg.store_root) / "labels_quarantine" / "snapshot.parquet")
    assert sorted(q["column"]) == ["entity_id", "entity_id", "label", "label_ts"]
    fs = _feature_set(ttl_context_days=1)
    tman = build_training_set(dask_client, cfg.store_root, fs, "2026-09-01", "2026-09-30", name="supplied")
    ts = read_training_set(cfg.store_root, "supplied")
    assert len(ts) == n - 4 == tman["rows"]
    for g in ("user_behavior", "user_context"):
        rows = _all_rows(cfg.store_root, g)
        ref = brute_force_asof(ts[["user_id", "label_ts"]], rows, ["user_id"], fs.features_of(g), pd.Timedelta(seconds=fs.ttl_seconds[g]))
        for f in fs.features_of(g):
            assert np.array_equal(ts[f"{g}.{f}"].to_numpy(float), ref[f].to_numpy(float), equal_nan=True), (g, f)
        # labels after the data end (or of unknown users) have no row within the TTL: kept, null
        late = ts["label_ts"] > day_start("2026-09-17") + pd.Timedelta(seconds=fs.ttl_seconds[g])
        assert ts.loc[late, f"{g}.cutoff"].isna().all() and (late.any() or g != "user_context")
    assert tman["sources"]["user_context"]["matched"] < len(ts)


def _perturb_future(landing: Path, since: str) -> None:
    """Rewrite every event at or after `since`: drop some, turn views into purchases, triple prices."""
    rng = np.random.default_rng(0)
    for folder in sorted((landing / "events").iterdir()):
        if folder.name < since:
            continue
        f = folder / "part-0.parquet"
        ev = pd.read_parquet(f)
        ev = ev[rng.random(len(ev)) > 0.2].copy()
        flip = (ev["event_type"] == "view") & (rng.random(len(ev)) < 0.3)
        ev.loc[flip, "event_type"] = "purchase"
        ev["price"] = ev["price"] * 3
        ev.to_parquet(f, index=False)


def test_perturbing_future_events_changes_no_feature(world, dask_client, tmp_path):
    """Features of training rows with label_ts <= T are identical when every event at or after T changes."""
    root, base = world
    cfg = replace(base, landing_root=str(tmp_path / "landing"), store_root=str(tmp_path / "store"))
    shutil.copytree(base.landing_root, cfg.landing_root)
    _perturb_future(Path(cfg.landing_root), T)
    _build_store(cfg, dask_client)
    build_labels(dask_client, cfg, SPEC, DAYS[0], DAYS[-1])
    fs = _feature_set()
    build_training_set(dask_client, base.store_root, fs, "2026-09-03", "2026-09-10", name="orig")
    build_training_set(dask_client, cfg.store_root, fs, "2026-09-03", "2026-09-10", name="pert")
    a, b = read_training_set(base.store_root, "orig"), read_training_set(cfg.store_root, "pert")
    feats = [c for c in a.columns if "." in c]
    early_a, early_b = a[a.label_ts <= day_start(T)], b[b.label_ts <= day_start(T)]
    # the population is defined by past events only, so the same rows exist
    pd.testing.assert_frame_equal(early_a[["user_id", "label_ts"]].reset_index(drop=True),
                                  early_b[["user_id", "label_ts"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(early_a[feats].reset_index(drop=True), early_b[feats].reset_index(drop=True))
    # the perturbation did bite: labels (computed from events after label_ts) and later features changed
    assert not np.array_equal(early_a["label"].to_numpy(), early_b["label"].to_numpy())
    late_a, late_b = a[a.label_ts > day_start(T)], b[b.label_ts > day_start(T)]
    assert len(late_a) and not late_a[feats].reset_index(drop=True).equals(late_b[feats].reset_index(drop=True))


def test_label_is_computed_only_from_events_at_or_after_its_cutoff(world, dask_client, tmp_path):
    """Perturbing events before T changes no label of label day T (only its population could grow or shrink)."""
    _, base = world
    cfg = replace(base, landing_root=str(tmp_path / "landing"), store_root=str(tmp_path / "store"))
    shutil.copytree(base.store_root, cfg.store_root)
    shutil.rmtree(Path(cfg.store_root) / "labels")
    rng = np.random.default_rng(1)
    for d in day_range(DAYS[0], "2026-09-07"):  # rewrite the past: flip event types at random
        ev = read_partition(cfg.store_root, "raw_events", d)
        flip = rng.random(len(ev)) < 0.5
        ev.loc[flip, "event_type"] = np.where(ev.loc[flip, "event_type"] == "purchase", "view", "purchase")
        from featurecore.store import write_partition

        write_partition(ev, cfg.store_root, "raw_events", d)
    build_labels(dask_client, cfg, SPEC, T, T)
    a = read_partition(base.store_root, "labels", T).set_index("entity_id")["label"]
    b = read_partition(cfg.store_root, "labels", T).set_index("entity_id")["label"]
    common = a.index.intersection(b.index)
    assert len(common) > 50
    assert (a.loc[common] == b.loc[common]).all()
