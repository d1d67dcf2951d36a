"""Materialization parity: online values == offline feature rows for the same cutoff, SQLite and Redis.

A real store (demo data, batch features computed on the Dask cluster), the real
materialization task run on the cluster, real SQLite files and a real redis-server;
then the skew check, TTL at read time, and the Dagster asset with its check.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurecore import demo_data
from featurecore.attributes import ingest_static_table
from featurecore.feature_sets import FeatureRef, FeatureSet
from featurecore.online import EXPIRED, PRESENT, STREAM, open_store
from featurecore.online_tasks import materialize_day, offline_asof, skew_check
from featurecore.selection import publish
from featurecore.served_sets import served_sets
from featurecore.store import read_partition
from featurecore.timeutil import cutoff
from featurecore.training import is_static, join_labels, source_specs
from redis_server import redis_server, redis_url  # noqa: F401  (fixtures)
from serving_world import DAYS, DEMO, copy_store, ingested, run_batch

DAY = DAYS[4]


STATIC_SET = "user_attrs"


@pytest.fixture(scope="module")
def world(tmp_path_factory, dask_client):
    root = tmp_path_factory.mktemp("parity")
    cfg = ingested(root)
    run_batch(dask_client, cfg.store_root, DAYS[:5])
    # A published set mixing a group with static sources (users, users_wide), as selection publishes them.
    wide = demo_data.build_users_wide(replace(DEMO, wide_columns=30))
    (Path(cfg.landing_root) / "users_wide").mkdir()
    wide.to_parquet(Path(cfg.landing_root) / "users_wide" / "users_wide.parquet", index=False)
    ingest_static_table(cfg, "users_wide")
    sig = demo_data.planted_signal(30)["wide"]
    attrs = sig["informative"] + sig["missing_noise"][:1] + sig["categorical_noise"][:1] + sig["constant"][:1]
    feats = [FeatureRef("user_behavior", "purchase_count_7d"), FeatureRef("user_behavior", "view_count_30d")]
    feats += [FeatureRef("users", n, "float64" if n in ("signup_date", "age") else "object")
              for n in ("signup_date", "segment", "age", "country")]
    feats += [FeatureRef("users_wide", n, "object" if wide[n].dtype == object else "float64") for n in attrs]
    publish(FeatureSet(STATIC_SET, "0", ("user_id",), tuple(feats), "groups and static attributes",
                       {"user_behavior": 30 * 86_400}), cfg.store_root)
    return cfg


def _training_values(store_root: str, fs, source: str, entities: list[str], at) -> dict[str, list]:
    """What the training-set join serves for `source` at label time `at`, per entity (Python values)."""
    labels = pa.table({"entity_id": pa.array(entities, pa.string()),
                       "label_ts": pa.array([cutoff(DAY).value] * len(entities), pa.timestamp("ns", tz="UTC")),
                       "label": pa.array([0.0] * len(entities))})
    spec = [s for s in source_specs(store_root, fs) if s.name == source]
    joined, _ = join_labels(store_root, labels, spec, [DAY])
    cols = [joined[f"{source}.{f}"].to_pylist() for f in fs.features_of(source)]
    return {e: [c[i] for c in cols] for i, e in enumerate(entities)}


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'online.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("redis_url")


def _exactly_equal(a, b) -> bool:
    if isinstance(b, np.ndarray):
        b = b.tolist()
    if isinstance(b, float) and np.isnan(b):
        return a is None
    return a == b and type(a) is type(b if not isinstance(b, np.floating) else float(b))


def test_online_equals_offline_for_every_feature(world, url, dask_client):
    sets = served_sets(world.store_root)
    assert {fs.name for fs in sets} >= {"user_core", "user_realtime"}
    stats = dask_client.gather([dask_client.submit(materialize_day, fs, DAY, world.store_root, url, pure=False)
                                for fs in sets])
    store = open_store(url)
    assert STATIC_SET in {fs.name for fs in sets}
    for fs, st in zip(sets, stats):
        assert not st["skipped_sources"] and st["written"] == st["rows"] > 0
        for source in fs.sources:
            if is_static(world.store_root, source):
                # static attributes: every snapshot entity, with the values the training join serves at the cutoff
                ents = pq.read_table(f"{world.store_root}/{source}/snapshot.parquet", columns=["user_id"])["user_id"].to_pylist()
                assert st["sources"][source]["rows"] == len(ents)
                want = _training_values(world.store_root, fs, source, ents, cutoff(DAY))
                res = store.lookup(fs, ents, at=cutoff(DAY))
                idx = [i for i, f in enumerate(fs.features) if f.source == source]
                for i, e in enumerate(ents):
                    assert res.rows[i][source]["cutoff"] == cutoff(DAY).isoformat()
                    for j, k in enumerate(idx):
                        assert res.statuses[i][k] == PRESENT
                        assert _same_value(res.values[i][k], want[e][j]), (fs.features[k].qualified, e, res.values[i][k], want[e][j])
                # a static row never expires (no TTL), and it is not served before the day it was written for
                assert set(store.lookup(fs, ents[:3], at=cutoff(DAY) + pd.Timedelta(days=400)).statuses[0][k] for k in idx) == {PRESENT}
                assert set(store.lookup(fs, ents[:3], at=cutoff(DAY) - pd.Timedelta(hours=1)).statuses[0][k] for k in idx) == {"missing"}
                continue
            off = read_partition(world.store_root, source, DAY)
            res = store.lookup(fs, off[list(fs.entity_keys)].to_dict("records"), at=cutoff(DAY))
            idx = [i for i, f in enumerate(fs.features) if f.source == source]
            for i in range(len(off)):
                assert res.rows[i][source] == {"cutoff": cutoff(DAY).isoformat(), "as_of": cutoff(DAY).isoformat(),
                                               "origin": "batch"}
                for k in idx:
                    want = off[fs.features[k].feature].iloc[i]
                    assert res.statuses[i][k] == PRESENT
                    assert _exactly_equal(res.values[i][k], want), (fs.name, fs.features[k].qualified, i, res.values[i][k], want)
    store.close()
    static_fs = next(fs for fs in sets if fs.name == STATIC_SET)
    skew = skew_check(static_fs, DAY, world.store_root, url, sample=60, seed=3)
    assert skew["sample"] == 60 and skew["mismatches"] == 0


def _same_value(online, offline) -> bool:
    """Exactly equal, type included; NaN offline is null online."""
    if isinstance(offline, float) and np.isnan(offline):
        return online is None
    return online == offline and type(online) is type(offline)


def test_ttl_applies_at_read_time(world, url):
    fs = next(f for f in served_sets(world.store_root) if f.name == "user_realtime")
    materialize_day(fs, DAY, world.store_root, url)
    store = open_store(url)
    users = read_partition(world.store_root, "user_behavior", DAY)["user_id"].tolist()[:50]
    t_cut = cutoff(DAY)
    for days_after in (0, 29, 30, 31, 59, 60, 61):
        at = t_cut + pd.Timedelta(days=days_after)
        res = store.lookup(fs, users, at=at)
        for k, f in enumerate(fs.features):
            ttl = fs.ttl(f.source)
            want = EXPIRED if at - t_cut > ttl else PRESENT
            statuses = {res.statuses[i][k] for i in range(len(users))}
            assert statuses == {want}, (f.qualified, days_after)
            if want == EXPIRED:
                assert all(res.values[i][k] is None for i in range(len(users)))
    # a TTL boundary: exactly TTL old is still present, 1 ns more is expired
    ttl_ns = fs.ttl_seconds["user_behavior"] * 10**9
    k = [f.source for f in fs.features].index("user_behavior")
    assert store.lookup(fs, users[:1], at=t_cut.value + ttl_ns).statuses[0][k] == PRESENT
    assert store.lookup(fs, users[:1], at=t_cut.value + ttl_ns + 1).statuses[0][k] == EXPIRED
    store.close()


def test_backfill_of_an_older_day_does_not_overwrite(world, url):
    fs = next(f for f in served_sets(world.store_root) if f.name == "user_core")
    materialize_day(fs, DAY, world.store_root, url)
    st = materialize_day(fs, DAYS[2], world.store_root, url)
    assert st["rows"] > 0 and st["written"] == 0
    store = open_store(url)
    assert store.materialized_day(fs) == DAY
    res = store.lookup(fs, ["u000001", "u000002"])
    assert all(r["user_behavior"]["cutoff"] == cutoff(DAY).isoformat() for r in res.rows if r["user_behavior"])
    store.close()


def test_skew_check_counts_every_mismatch(world, url):
    fs = next(f for f in served_sets(world.store_root) if f.name == "user_realtime")
    materialize_day(fs, DAY, world.store_root, url)
    clean = skew_check(fs, DAY, world.store_root, url, sample=80, seed=1)
    assert clean["sample"] == 80 and clean["mismatches"] == 0

    # Corrupt one feature for 7 sampled entities (same stamp, so the write replaces the batch row).
    store = open_store(url)
    source, feat = "user_behavior", "purchase_count_7d"
    off = read_partition(world.store_root, source, DAY)
    victims = off[off["user_id"].isin(_sample_ids(fs, world.store_root, 80, 1))].head(7).copy()
    victims[feat] = victims[feat] + 1
    store.write_frame(fs, source, victims)
    # And a streamed row from after the check time must stay invisible to it.
    later = off.head(3).assign(cutoff=cutoff(DAYS[5]))
    store.write_frame(fs, source, later, origin=STREAM, as_of=cutoff(DAYS[5]) - pd.Timedelta(hours=2))
    store.close()
    dirty = skew_check(fs, DAY, world.store_root, url, sample=80, seed=1)
    rates = dirty["mismatch_rate"]
    assert rates[f"{source}.{feat}"] == pytest.approx(7 / 80)
    assert all(v == 0 for k, v in rates.items() if k != f"{source}.{feat}")
    assert {e["feature"] for e in dirty["examples"]} == {f"{source}.{feat}"}


def test_skew_check_recomputes_from_tiles(world, url, tmp_path):
    """A stored partition that the current code would not produce (e.g. written by an older version)
    is served as is; the check recomputes from tiles and flags exactly the rows that differ."""
    from featurecore.store import write_partition

    root = copy_store(world.store_root, tmp_path / "store")
    fs = next(f for f in served_sets(root) if f.name == "user_core")
    part = read_partition(root, "user_behavior", DAY)
    sample = set(_sample_ids(fs, root, 60, 2))
    hit = part["user_id"].isin(sample) & (part["view_count_30d"] > 0)
    stale = part.copy()
    stale.loc[hit, "view_count_30d"] = stale.loc[hit, "view_count_30d"] * 2
    write_partition(stale, root, "user_behavior", DAY)
    materialize_day(fs, DAY, root, url)
    read_back = skew_check(fs, DAY, root, url, sample=60, seed=2, recompute=False)
    assert read_back["mismatches"] == 0 and read_back["recomputed_rows"] == 0
    recomputed = skew_check(fs, DAY, root, url, sample=60, seed=2)
    assert recomputed["recomputed_rows"] == 60
    assert recomputed["mismatch_rate"]["user_behavior.view_count_30d"] == pytest.approx(hit.sum() / 60)
    assert recomputed["mismatches"] == hit.sum() > 0


def _sample_ids(fs, root, n, seed):
    ids = set()
    for s in fs.sources:
        ids.update(read_partition(root, s, DAY)["user_id"])
    pop = sorted(ids)
    return [pop[i] for i in np.random.default_rng(seed).choice(len(pop), size=n, replace=False)]


def test_offline_asof_follows_the_training_rule(world):
    """Brute force over every partition: latest cutoff <= t, absent when older than the TTL."""
    fs = next(f for f in served_sets(world.store_root) if f.name == "user_core")
    parts = pd.concat([read_partition(world.store_root, "user_behavior", d) for d in DAYS[:5]], ignore_index=True)
    users = sorted(parts["user_id"].unique())[:40] + ["nobody"]
    ttl = fs.ttl("user_behavior")
    for at in (cutoff(DAYS[0]) - pd.Timedelta(seconds=1), cutoff(DAYS[2]), cutoff(DAYS[2]) + pd.Timedelta(hours=5),
               cutoff(DAYS[4]) + ttl, cutoff(DAYS[4]) + ttl + pd.Timedelta(days=1)):
        got = offline_asof(world.store_root, fs, users, at)["user_behavior"]
        for u in users:
            rows = parts[(parts["user_id"] == u) & (parts["cutoff"] <= at)]
            if len(rows) and at - rows["cutoff"].max() <= ttl:
                row = rows.loc[rows["cutoff"].idxmax()]
                assert got[u][0] == row["cutoff"].value
                assert got[u][1] == [row[f] for f in fs.features_of("user_behavior")] or \
                    all(_exactly_equal(a if not (isinstance(a, float) and np.isnan(a)) else None, b)
                        for a, b in zip(got[u][1], [row[f] for f in fs.features_of("user_behavior")]))
            else:
                assert u not in got


def test_dagster_asset_materializes_and_checks(world, redis_url, dask_client, tmp_path):
    from feature_assets.definitions import build_defs
    from resources import DaskResource, LandingZone, OfflineStore
    from resources.online_store import OnlineStoreResource

    store_root = copy_store(world.store_root, tmp_path / "store")
    defs = build_defs(
        dask=DaskResource(scheduler_address=dask_client.scheduler.address),
        landing=LandingZone(landing_root=world.landing_root),
        store=OfflineStore(root=store_root),
        online_store=OnlineStoreResource(url=redis_url, skew_sample=100),
    )
    job = defs.resolve_job_def("daily_features")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = job.execute_in_process(
            instance=instance, partition_key=DAY, asset_selection=[dg.AssetKey("online_features")],
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
    assert result.success
    mat = [e.materialization for e in result.get_asset_materialization_events()][0]
    assert mat.metadata["day"].value == DAY and mat.metadata["rows_written"].value > 0
    assert "redis" in mat.metadata["backend"].value
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("online_offline_skew", True)]
    assert checks[0].metadata["max_mismatch_rate"].value == 0.0
    store = open_store(redis_url)
    fs = store.feature_set("user_realtime")
    off = read_partition(store_root, "user_recent_items", DAY).head(20)
    res = store.lookup(fs, off["user_id"].tolist(), at=cutoff(DAY))
    k = [f.qualified for f in fs.features].index("user_recent_items.recent_viewed_products")
    assert [r[k] for r in res.values] == [list(v) for v in off["recent_viewed_products"]]
    attrs = store.feature_set(STATIC_SET)  # the static sources of a published set are served too
    got = store.lookup(attrs, ["u000001", "u000002"], at=cutoff(DAY))
    assert {s for row in got.statuses for f, s in zip(attrs.features, row) if f.source in ("users", "users_wide")} == {PRESENT}
    store.close()
