"""Streaming parity: a day's events fed through the micro-batch updater == the next daily batch run.

Batch runs on the Dask cluster for days 1-5 and the online store serves day 5. The
updater then consumes day 6's events (files in a folder, or a Redis stream) in shuffled
micro-batches and closes the day; its online values are compared with the batch feature
rows of day 6, computed independently, for every streaming-capable feature. Between
micro-batches, a few features are compared with brute-force pandas over the raw events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featurecore.groups import GROUPS
from featurecore.online import BATCH, PRESENT, STREAM, open_store
from featurecore.online_tasks import materialize_day, values_equal
from featurecore.served_sets import served_sets
from featurecore.store import read_partition
from featurecore.streaming_update import (
    EXACT_KINDS, FolderSource, RedisStreamSource, StreamingUpdater, feature_kinds, publish_events, streaming_capable,
)
from featurecore.timeutil import cutoff
from redis_server import redis_server, redis_url  # noqa: F401  (fixtures)
from serving_world import DAYS, copy_store, ingested, run_batch

BASE, NEXT = DAYS[4], DAYS[5]
N_BATCHES = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory, dask_client):
    """(config, store with batch days 1-5, store with batch days 1-6, day-6 events shuffled)."""
    root = tmp_path_factory.mktemp("stream")
    cfg = ingested(root)
    run_batch(dask_client, cfg.store_root, DAYS[:5])
    after = copy_store(cfg.store_root, root / "after")
    run_batch(dask_client, after, [NEXT])  # the next daily run, the reference
    events = read_partition(cfg.store_root, "raw_events", NEXT).drop(columns=["source_file", "row_number"])
    events = events.sample(frac=1.0, random_state=7).reset_index(drop=True)  # arrival order != ts order
    return cfg, after, events


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'online.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("redis_url")


def _served_base(cfg, url, tmp_path):
    """A private copy of the base store, its sets materialized for the base day, and an updater on it."""
    root = copy_store(cfg.store_root, tmp_path / "store")
    sets = served_sets(root)
    for fs in sets:
        materialize_day(fs, BASE, root, url)
    online = open_store(url)
    up = StreamingUpdater(root, online, source_cfg=cfg, clock=lambda: pd.Timestamp("2026-09-08", tz="UTC").value)
    info = up.bootstrap()
    assert info["base_day"] == BASE
    return root, sets, online, up


def assert_matches_batch(online, sets, after_root, day, origin=STREAM):
    """Every streaming-capable feature of every entity of the batch rows of `day` equals its online value."""
    checked = 0
    for fs in sets:
        for source in fs.sources:
            kinds = feature_kinds(source)
            off = read_partition(after_root, source, day)
            res = online.lookup(fs, off[list(fs.entity_keys)].to_dict("records"), at=cutoff(day))
            for k, f in enumerate(fs.features):
                if f.source != source or not streaming_capable(source, f.feature):
                    continue
                rtol = 0.0 if kinds[f.feature] in EXACT_KINDS else 1e-9
                for i in range(len(off)):
                    assert res.statuses[i][k] == PRESENT and res.rows[i][source]["origin"] == origin
                    want = off[f.feature].iloc[i]
                    assert values_equal(res.values[i][k], want, rtol), (f.qualified, off.iloc[i][list(fs.entity_keys)].tolist(), res.values[i][k], want)
                    checked += 1
            # quantiles: KLL is exact below 200 values per sketch, which holds for this small world
            for k, f in enumerate(fs.features):
                if f.source == source and kinds.get(f.feature) == "quantile":
                    for i in range(len(off)):
                        assert values_equal(res.values[i][k], off[f.feature].iloc[i], 1e-9)
    return checked


def _write_micro_batches(events: pd.DataFrame, folder, n: int) -> list[pd.DataFrame]:
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [events.iloc[idx] for idx in np.array_split(np.arange(len(events)), n)]
    for i, c in enumerate(chunks):
        c.to_parquet(folder / f".mb-{i:03d}.tmp")
        (folder / f".mb-{i:03d}.tmp").rename(folder / f"mb-{i:03d}.parquet")  # writers rename complete files
    return chunks


def test_streamed_day_equals_next_batch_run(world, url, tmp_path):
    cfg, after, events = world
    root, sets, online, up = _served_base(cfg, url, tmp_path)
    chunks = _write_micro_batches(events, tmp_path / "incoming", N_BATCHES)
    source = FolderSource(tmp_path / "incoming")
    history = pd.concat([read_partition(root, "raw_events", d) for d in DAYS[:5]], ignore_index=True)
    seen = []
    for n, (label, df) in enumerate(source.poll()):
        st = up.apply(df, label)
        assert st["applied"] == len(chunks[n]) and st["late_ignored"] == st["duplicates"] == 0
        seen.append(chunks[n])
        _check_against_brute_force(online, sets, pd.concat([history, *seen], ignore_index=True), chunks[n])
    assert source.poll() == []  # each file once
    closed = up.advance_to(DAYS[5][:8] + "07")
    assert closed["closed_days"] == 1
    assert assert_matches_batch(online, sets, after, NEXT) > 1000
    online.close()


def _check_against_brute_force(online, sets, events: pd.DataFrame, chunk: pd.DataFrame) -> None:
    """Provisional rows of the micro-batch's users vs plain pandas over every event seen so far."""
    fs = next(f for f in sets if f.name == "user_realtime")
    t = cutoff(NEXT)
    users = sorted(chunk["user_id"].unique())[:25]
    res = online.lookup(fs, users, at=t).to_frame().set_index("user_id")
    ev = events[events["user_id"].isin(users)]
    in_day = ev[ev["ts"] >= t - pd.Timedelta(days=1)]
    in_7d = ev[ev["ts"] >= t - pd.Timedelta(days=7)]
    for u in users:
        e1, e7, eall = in_day[in_day.user_id == u], in_7d[in_7d.user_id == u], ev[ev.user_id == u]
        purchases7 = e7[e7.event_type == "purchase"]
        views = eall[eall.event_type == "view"].sort_values(["ts", "product_id"], ascending=False)
        row = res.loc[u]
        assert row["user_behavior.purchase_count_1d"] == (e1.event_type == "purchase").sum()
        assert row["user_behavior.purchase_count_7d"] == len(purchases7)
        assert values_equal(row["user_behavior.purchase_amount_sum_7d"], (purchases7.price * purchases7.quantity).sum(), 1e-9)
        assert row["user_temporal.seconds_since_last_event"] == (t - eall.ts.max()).total_seconds()
        assert row["user_temporal.active_days_7d"] == e7.ts.dt.floor("D").nunique()
        assert row["user_recent_items.recent_viewed_products"] == views.product_id.head(10).tolist()
        assert row["user_behavior.purchase_count_1d__status"] == PRESENT


def test_redis_stream_source_equals_next_batch_run(world, redis_url, tmp_path):
    cfg, after, events = world
    root, sets, online, up = _served_base(cfg, redis_url, tmp_path)
    assert publish_events(redis_url, events, stream="ff:test-events") == len(events)
    src = RedisStreamSource(redis_url, "ff:test-events", count=len(events) // 4 + 1, block_ms=100)
    totals = up.run(src, interval=0.05, max_polls=6)
    assert totals["applied"] == len(events) and totals["quarantined"] == 0
    up.advance_to("2026-09-07")
    assert assert_matches_batch(online, sets, after, NEXT) > 1000
    online.close()


def test_late_duplicate_and_future_events_are_not_applied(world, tmp_path):
    cfg, after, events = world
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    root, sets, online, up = _served_base(cfg, url, tmp_path)
    fs = next(f for f in sets if f.name == "user_core")
    user = events["user_id"].iloc[0]
    before = online.lookup(fs, [user], at=cutoff(NEXT)).values[0]
    late = events.head(3).assign(ts=pd.Timestamp(BASE, tz="UTC") + pd.Timedelta(hours=3), event_id=["l1", "l2", "l3"])
    future = events.head(2).assign(ts=pd.Timestamp("2026-09-09", tz="UTC"), event_id=["f1", "f2"])
    bad = events.head(1).assign(event_type=None, event_id="b1")
    st = up.apply(pd.concat([late, future, bad], ignore_index=True))
    assert (st["late_ignored"], st["future_rejected"], st["quarantined"], st.get("applied", 0)) == (3, 2, 1, 0)
    assert online.lookup(fs, [user], at=cutoff(NEXT)).values[0] == before
    first = up.apply(events.head(50))
    again = up.apply(pd.concat([events.head(50), events.head(50)], ignore_index=True))
    assert first["applied"] == 50 and again["duplicates"] == 100 and again.get("applied", 0) == 0
    online.close()


def test_rebase_on_the_daily_run_hands_over_to_batch(world, tmp_path):
    cfg, after, events = world
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    root, sets, online, up = _served_base(cfg, url, tmp_path)
    for df in np.array_split(events, 3):
        up.apply(df)
    up.advance_to("2026-09-07")
    # The daily run of day 6 lands in the store the updater reads, then the materialization.
    for d in ("user_behavior", "user_temporal", "user_context", "user_recent_items"):
        for kind in ("", "_tiles", "__state"):
            src = f"{after}/{d}{kind}/date={NEXT}"
            import os
            import shutil

            if os.path.isdir(src):
                shutil.copytree(src, f"{root}/{d}{kind}/date={NEXT}")
    for fs in sets:
        materialize_day(fs, NEXT, root, url)
    assert up.refresh_base() and up.base_day == NEXT and up.current_day == "2026-09-07"
    assert all(not v for v in up.live_tiles.values())
    assert assert_matches_batch(online, sets, after, NEXT, origin=BATCH) > 1000
    online.close()


def test_every_group_feature_kind_is_classified():
    for g in GROUPS.values():
        for name, kind in feature_kinds(g.name).items():
            assert streaming_capable(g.name, name) == (kind != "quantile"), (g.name, name)
