"""DFS candidates: sharded Dask == one ft.calculate_feature_matrix, no leakage, clear errors."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from dataclasses import replace

import featuretools as ft
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from candidate_store import START, SUNDAY, build_store

from featurecore.candidates import dfs, runner
from featurecore.candidates.common import EmptyShardError, EntityConfigError
from featurecore.candidates.costs import feature_families, read_costs
from featurecore.candidates.primitives import agg_primitives
from featurecore.ingest import read_snapshot
from featurecore.store import partition_dir, read_partition, write_partition
from featurecore.timeutil import cutoff, shift_day

CFG = dfs.DFSConfig(sample_entities=80, pca_components=3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("dfs"))


@pytest.fixture(scope="module")
def computed(store, dask_client):
    """DFS for the Sunday on the 2-worker cluster, small shards so there are several."""
    rep = runner.run_dfs(dask_client, store.store_root, [SUNDAY], START, CFG, min_shard_entities=20, shards_per_worker=2)
    rep.raise_errors()
    return rep


def _reference(root: str, manifest: dict, include_cutoff_time: bool = False, events: pd.DataFrame | None = None) -> pd.DataFrame:
    """One single-process ft.calculate_feature_matrix over every entity with the saved definitions."""
    feats = ft.load_features(manifest["definitions"])
    ents = dfs.list_entities(root, SUNDAY, START, CFG)
    if events is None:
        events = dfs.read_events(root, SUNDAY, START, CFG, None)
    es, ids = dfs.build_entityset(events, read_snapshot(root, "users"), read_snapshot(root, "products"), manifest["schema"], ents)
    ct = pd.DataFrame({"user_id": ids.get_indexer(ents), "time": cutoff(SUNDAY).tz_localize(None)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = ft.calculate_feature_matrix(feats, entityset=es, cutoff_time=ct, training_window="30 days",
                                         include_cutoff_time=include_cutoff_time, n_jobs=1)
    fm = dfs.apply_fill_rule(fm, feats)[manifest["features"]].astype("float64")
    fm.index = ids[fm.index]  # the EntitySet's user keys are integer codes of these ids
    return fm.sort_index()


def test_sharded_dask_equals_single_process_calculate_feature_matrix(store, computed):
    root = store.store_root
    day = computed.days[0]
    assert day["shards"] >= 4 and day["entities"] == 160
    parts = sorted(partition_dir(root, dfs.ASSET, SUNDAY).glob("part-*.parquet"))
    assert len(parts) == day["shards"]  # every shard wrote its own part
    got = read_partition(root, dfs.ASSET, SUNDAY)
    assert got["user_id"].is_unique and (got["cutoff"] == cutoff(SUNDAY)).all()
    assert str(got["cutoff"].dtype) == "datetime64[ns, UTC]"
    feats = computed.manifest["features"]
    assert len(feats) >= 20 and all(got[f].dtype == "float64" for f in feats)
    ref = _reference(root, computed.manifest)
    got = got.set_index("user_id").sort_index()
    assert list(got.index) == list(ref.index)
    pd.testing.assert_frame_equal(got[feats], ref, check_names=False, rtol=1e-12, atol=0)
    # the fill rule: counts are never NaN; a mean over an empty set is
    counts = [f for f in feats if f.startswith(("COUNT(", "NUM_UNIQUE("))]
    assert counts and not got[counts].isna().any().any()


def test_definitions_saved_as_versioned_artifact_and_reused(store, computed, dask_client):
    m = computed.manifest
    assert m["version"] == CFG.version() and m["discovered_on_day"] == SUNDAY and m["sample_entities"] == 80
    loaded = ft.load_features(m["definitions"])
    assert [f.get_name() for f in loaded] == m["features"]
    assert sum(m["pruned_on_sample"].values()) > 0 and len(m["features"]) <= CFG.max_features
    # a second run finds the artifact and does not rediscover
    again = runner.run_dfs(dask_client, store.store_root, [SUNDAY], START, CFG, min_shard_entities=20, shards_per_worker=2)
    assert "discovered_in_this_run" not in again.manifest and again.manifest["definitions_sha"] == m["definitions_sha"]


def test_costs_and_pca(store, computed):
    costs = read_costs(store.store_root, dfs.ASSET)
    assert set(costs["family"]) == {"dfs", "dfs_pca"}
    row = costs.set_index("family").loc["dfs"]
    assert row["seconds"] > 0 and row["bytes"] > 0 and row["n_features"] == len(computed.manifest["features"])
    fams = feature_families(store.store_root, dfs.ASSET)
    assert fams["COUNT(events)"] == "dfs" and fams["dfs_pc00"] == "dfs_pca"
    evr = computed.manifest["pca"]["explained_variance_ratio"]
    assert len(evr) == 3 and 0 < sum(evr) <= 1 and evr == sorted(evr, reverse=True)
    got = read_partition(store.store_root, dfs.ASSET, SUNDAY)
    assert got[["dfs_pc00", "dfs_pc01", "dfs_pc02"]].notna().all().all()


def _leaky_events(root: str, day: str) -> pd.DataFrame:
    """Copies of day D's events moved to exactly the cutoff and later (same users, products, sessions)."""
    base = read_partition(root, "raw_events", day).sample(n=150, random_state=1)
    t = cutoff(day)
    offsets = [pd.Timedelta(0), pd.Timedelta(0), pd.Timedelta(minutes=5), pd.Timedelta(hours=3)]
    out = []
    for i, off in enumerate(offsets):
        e = base.copy()
        e["ts"] = t + off
        e["event_id"] = e["event_id"] + f"-leak{i}"
        e["event_type"] = ["purchase", "view", "cart_add"][i % 3]
        e["price"] = e["price"] * 10
        out.append(e)
    return pd.concat(out, ignore_index=True)


def test_events_at_or_after_the_cutoff_change_no_value(store, computed, dask_client, tmp_path):
    src = store.store_root
    clean = read_partition(src, dfs.ASSET, SUNDAY)
    leaky_root = tmp_path / "leaky"
    shutil.copytree(src, leaky_root, ignore=shutil.ignore_patterns(dfs.ASSET))
    leaky_root = str(leaky_root)
    leak = _leaky_events(src, SUNDAY)
    nxt = shift_day(SUNDAY, 1)
    # events at/after the cutoff in the next day's partition (where they belong) ...
    write_partition(pd.concat([read_partition(src, "raw_events", nxt), leak], ignore_index=True), leaky_root, "raw_events", nxt)
    # ... and, as if the store had been written wrongly, inside day D's own partition too
    write_partition(pd.concat([read_partition(src, "raw_events", SUNDAY), leak], ignore_index=True), leaky_root, "raw_events", SUNDAY)
    rep = runner.run_dfs(dask_client, leaky_root, [SUNDAY], START, CFG, min_shard_entities=20, shards_per_worker=2)
    rep.raise_errors()
    assert rep.manifest["definitions_sha"] == computed.manifest["definitions_sha"]
    after = read_partition(leaky_root, dfs.ASSET, SUNDAY)
    pd.testing.assert_frame_equal(clean.sort_values("user_id", ignore_index=True), after.sort_values("user_id", ignore_index=True),
                                  check_exact=True)


def test_featuretools_guard_excludes_events_exactly_at_cutoff(store, computed):
    """Bypassing our reader's ts < cutoff filter: include_cutoff_time=False alone keeps the values."""
    root = store.store_root
    events = dfs.read_events(root, SUNDAY, START, CFG, None)
    at_cutoff = _leaky_events(root, SUNDAY)
    at_cutoff = at_cutoff[at_cutoff["ts"] == cutoff(SUNDAY)]
    at_cutoff = at_cutoff.assign(amount=at_cutoff["price"] * at_cutoff["quantity"])[events.columns]
    with_leak = pd.concat([events, at_cutoff], ignore_index=True)
    clean = _reference(root, computed.manifest)
    guarded = _reference(root, computed.manifest, events=with_leak)
    pd.testing.assert_frame_equal(clean, guarded, check_exact=True)
    # the test can fail: with Featuretools' default (include_cutoff_time=True) the same events do count
    leaky = _reference(root, computed.manifest, include_cutoff_time=True, events=with_leak)
    assert (leaky["COUNT(events)"] > clean["COUNT(events)"]).sum() > 0


def test_clear_errors(store):
    root = store.store_root
    with pytest.raises(EntityConfigError, match=r"entity column 'customer_id' not found; available columns: .*'user_id'"):
        dfs.check_source(root, SUNDAY, START, dfs.DFSConfig(entity="customer_id"))
    manifest = dfs.load_manifest(root, CFG)
    with pytest.raises(EmptyShardError, match="empty shard"):
        dfs.compute(root, SUNDAY, START, CFG, manifest, [])
    with pytest.raises(ValueError, match="entities='some'"):
        dfs.DFSConfig(entities="some")
    with pytest.raises(ValueError, match=r"interesting_columns \['product_id'\] are identifiers"):
        dfs.discover(root, SUNDAY, START, replace(CFG, interesting_columns=("event_type", "product_id")))


def test_discovery_gives_the_same_definitions_in_every_process(store, computed, tmp_path):
    """Featuretools orders features through hash-seeded sets; discovery does not depend on it."""
    got = []
    for seed in ("1", "2"):
        root = tmp_path / seed
        shutil.copytree(store.store_root, root, ignore=shutil.ignore_patterns("_artifacts", dfs.ASSET))
        code = ("import json, sys; from featurecore.candidates import dfs; from test_candidates_dfs import CFG, START, SUNDAY; "
                "print(json.dumps(dfs.discover(sys.argv[1], SUNDAY, START, CFG)['features']))")
        out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(__file__), env={**os.environ, "PYTHONHASHSEED": seed})
        got.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert got[0] == got[1] == computed.manifest["features"]


def test_primitives_that_take_any_column_make_no_feature_of_an_identifier(store):
    """FIRST/LAST accept any column: on the EntitySet's integer keys they would return shard-local
    codes, so discovery keeps none of those (and keeps the ones on real attributes)."""
    cfg = replace(CFG, agg_primitives=("count", "first", "last", "mean"), where_primitives=(), pca_components=0, max_depth=2)
    m = dfs.discover(store.store_root, SUNDAY, START, cfg)
    assert any(f.startswith(("FIRST(", "LAST(")) for f in m["features"])
    ids = ("_event)", "session_id)", "product_id)", "user_id)")
    assert not [f for f in m["features"] if any(i in f for i in ids)]


def test_an_entity_without_events_gets_zero_counts(store, computed):
    """entities='all': a snapshot user with no event in the window has counts 0 and undefined means NaN."""
    got = read_partition(store.store_root, dfs.ASSET, SUNDAY).set_index("user_id")
    active = set(dfs.read_events(store.store_root, SUNDAY, START, CFG, None)["user_id"])
    silent = got[~got.index.isin(active)]
    assert len(silent) > 0  # the demo world has users with no event in the window (new, churned)
    assert (silent["COUNT(events)"] == 0).all()
    means = [c for c in got.columns if c.startswith("MEAN(events.")]
    assert silent[means].isna().all().all()
    assert np.all(silent[[c for c in got.columns if c.startswith("COUNT(")]].to_numpy() == 0)


def test_listing_many_days_at_once_equals_listing_each(store):
    """A backfill lists its days' entities from one read of their windows' union: the lists equal
    a plain pandas read of each day's window (events before the cutoff, plus the users snapshot)."""
    from featurecore.candidates.common import read_window, window_days

    days = [shift_day(SUNDAY, -k) for k in (20, 13, 6, 0)] + [START]
    snapshot = set(read_snapshot(store.store_root, "users")["user_id"].astype(str))
    for cfg in (CFG, replace(CFG, entities="active"), replace(CFG, training_window_days=3)):
        expected = []
        for d in days:
            ev = read_window(store.store_root, "raw_events", window_days(d, cfg.training_window_days, START), ["user_id", "ts"])
            ids = set(ev.loc[pd.to_datetime(ev["ts"], utc=True) < cutoff(d), "user_id"].dropna().astype(str))
            expected.append(sorted(ids | (snapshot if cfg.entities == "all" else set())))
        assert dfs.list_entities_many(store.store_root, days, START, cfg) == expected
        assert [dfs.list_entities(store.store_root, d, START, cfg) for d in days] == expected
        # a shard finds the same entities in the events the readers give it (here the readers' path in one piece)
        events = dfs.read_events_many(store.store_root, days, START, cfg, None)
        got = dfs.entities_by_day(events, days, START, cfg, dfs.snapshot_entities(store.store_root, cfg))
        assert [got[d] for d in days] == expected


def test_readers_split_events_by_entity_bucket_the_same_in_every_process(store, dask_client, tmp_path):
    """Every event lands in exactly one bucket, its entity's, whichever reader (day range) read it:
    a shard of buckets holds all of its entities' events."""
    root = store.store_root
    days = dfs._union_window([SUNDAY], START, CFG)
    before = cutoff(SUNDAY)
    whole = dfs.read_buckets(root, days, CFG, before, 1).take([0]).to_pandas()
    halves = [dfs.read_buckets(root, part, CFG, before, 5, shuffle_to=str(tmp_path / f"r{i}.arrow"))
              for i, part in enumerate((days[:10], days[10:]))]
    parts = [h.take([b]).to_pandas().assign(bucket=b) for h in halves for b in range(5)]
    split = pd.concat(parts, ignore_index=True)
    assert len(split) == len(whole) == sum(int(h.stats()[0].sum()) for h in halves)
    assert (dfs.entity_buckets(split["user_id"].to_numpy(dtype=object), 5) == split["bucket"].to_numpy()).all()
    ids = np.array(sorted(whole["user_id"].unique()), dtype=object)
    in_worker = dask_client.submit(dfs.entity_buckets, ids, 5, pure=False).result()
    assert (in_worker == dfs.entity_buckets(ids, 5)).all() and len(set(in_worker.tolist())) == 5


def test_a_shard_batching_its_entities_equals_one_batch(store, computed):
    """Over ``dfs.BATCH_ROWS`` (entity, day) rows, a shard or one process computes its entities in batches
    (one EntitySet each, events split by entity code): the same values, bit for bit."""
    root = store.store_root
    days = [shift_day(SUNDAY, -7), SUNDAY]
    events = dfs.read_events_many(root, days, START, CFG, None)
    one, _ = dfs.compute_events(root, START, CFG, computed.manifest, days, events)
    batched, _ = dfs.compute_events(root, START, CFG, computed.manifest, days, events, max_rows=70)
    assert sorted(one) == sorted(batched) == days
    for d in days:
        pd.testing.assert_frame_equal(batched[d], one[d], check_exact=True)


def test_categorical_event_columns_give_the_values_of_plain_strings(store, computed, monkeypatch):
    """Reading event_type/device_type/referrer as dictionaries (categoricals in the EntitySet) changes no value."""
    root = store.store_root
    days = [shift_day(SUNDAY, -7), SUNDAY]
    # discovery kept features filtering on event_type values: the categorical comparisons are exercised
    assert any("WHERE event_type = purchase" in f for f in computed.manifest["features"])
    fast, _ = dfs.compute_window(root, days, START, CFG, computed.manifest)
    monkeypatch.setattr(dfs, "DICTIONARY_COLUMNS", ())
    plain_events = dfs.read_events_many(root, days, START, CFG, None)
    assert plain_events["event_type"].dtype == object
    plain, _ = dfs.compute_window(root, days, START, CFG, computed.manifest)
    assert sorted(fast) == sorted(plain) == days
    for d in days:
        pd.testing.assert_frame_equal(fast[d], plain[d], check_exact=True)


def test_a_day_nobody_is_listed_on_gets_an_empty_partition_and_a_failed_read_names_its_file(store, computed, dask_client, tmp_path):
    root = tmp_path / "edge"
    shutil.copytree(store.store_root, root, ignore=shutil.ignore_patterns(dfs.ASSET))
    root = str(root)
    cfg = replace(CFG, entities="active")
    rep = runner.run_dfs(dask_client, root, [SUNDAY], START, cfg, only_entities=["nobody"])
    rep.raise_errors()
    assert rep.days[0]["rows"] == 0 and "no entities" in rep.days[0]["note"]
    empty = read_partition(root, dfs.ASSET, SUNDAY)
    assert len(empty) == 0 and set(rep.manifest["features"]) <= set(empty.columns)
    # a day file that is not Parquet: the days whose window holds it fail, by file; the others land
    bad = next(partition_dir(root, "raw_events", shift_day(SUNDAY, -1)).glob("*.parquet"))
    bad.write_bytes(b"not parquet")
    early = shift_day(START, 2)
    rep = runner.run_dfs(dask_client, root, [early, SUNDAY], START, replace(cfg, training_window_days=3), days_per_task=1)
    assert [d["day"] for d in rep.days] == [early] and rep.days[0]["rows"] > 0
    assert len(rep.errors) == 1 and rep.errors[0].startswith(SUNDAY) and str(bad) in rep.errors[0], rep.errors
    # the window's first file unreadable too: the day fails before any task, by file, the run goes on
    first = next(partition_dir(root, "raw_events", shift_day(SUNDAY, -2)).glob("*.parquet"))
    first.write_bytes(b"not parquet either")
    rep = runner.run_dfs(dask_client, root, [early, SUNDAY], START, replace(cfg, training_window_days=3), days_per_task=1)
    assert [d["day"] for d in rep.days] == [early] and len(rep.errors) == 1 and str(first) in rep.errors[0], rep.errors
    # every run (two groups here, one failing) leaves no shuffle file behind
    assert not list((Path(root) / dfs.ASSET).glob(".shuffle-*"))


def test_a_backfill_shard_computing_several_cutoffs_equals_one_day_at_a_time(store, computed, dask_client, tmp_path):
    """A multi-day run computes each shard's cutoffs from one EntitySet of their windows' union: every
    day equals a single-process computation of that day alone (sessions spanning midnight included)."""
    root = tmp_path / "backfill"
    shutil.copytree(store.store_root, root, ignore=shutil.ignore_patterns(dfs.ASSET))
    root = str(root)
    days = [shift_day(SUNDAY, -k) for k in (9, 7, 2, 0)]
    ev = read_partition(root, "raw_events", shift_day(SUNDAY, -3))
    # a session that crosses midnight: it must count as two session-days in every computation
    late = ev.iloc[:40].copy()
    late["ts"] = cutoff(shift_day(SUNDAY, -3)) - pd.Timedelta(minutes=1)
    early = late.copy()
    early["ts"] = cutoff(shift_day(SUNDAY, -3)) + pd.Timedelta(minutes=1)
    early["event_id"] = early["event_id"] + "-next"
    write_partition(pd.concat([ev, late], ignore_index=True), root, "raw_events", shift_day(SUNDAY, -3))
    nxt = read_partition(root, "raw_events", shift_day(SUNDAY, -2))
    write_partition(pd.concat([nxt, early], ignore_index=True), root, "raw_events", shift_day(SUNDAY, -2))
    # events of the first day's users exactly at (and just after) its cutoff: in the 4-day shard's
    # input, never in that day's values (it is compared below with the day computed alone)
    first, after = days[0], shift_day(days[0], 1)
    at_cut = read_partition(root, "raw_events", first).iloc[:60].copy()
    at_cut["ts"] = cutoff(first) + pd.to_timedelta(np.arange(60) % 3, unit="min")
    at_cut["event_id"] = at_cut["event_id"] + "-at-cutoff"
    write_partition(pd.concat([read_partition(root, "raw_events", after), at_cut], ignore_index=True), root, "raw_events", after)
    # a 3-day window: SUNDAY's window starts at the planted midnight, the other days' windows hold it whole
    cfg = replace(CFG, training_window_days=3)
    rep = runner.run_dfs(dask_client, root, days, START, cfg, min_shard_entities=20, days_per_task=4)
    rep.raise_errors()
    assert [d["day"] for d in rep.days] == sorted(days) and all(d["shards"] == 2 for d in rep.days)
    assert not list((Path(root) / dfs.ASSET).glob(".shuffle-*"))
    manifest = rep.manifest
    for d in days:
        ents = dfs.list_entities(root, d, START, cfg)
        alone, _ = dfs.compute(root, d, START, cfg, manifest, ents)
        got = read_partition(root, dfs.ASSET, d)
        pd.testing.assert_frame_equal(got.sort_values("user_id", ignore_index=True), alone.sort_values("user_id", ignore_index=True),
                                      rtol=1e-12, check_dtype=False)


def test_listing_copes_with_events_without_an_entity(tmp_path):
    """A window whose events all lack the entity lists no one (nor crashes), apart from snapshot users."""
    day = START
    ev = pd.DataFrame({"user_id": pd.Series([None, None], dtype=object),
                       "ts": [cutoff(day) - pd.Timedelta(hours=2), cutoff(day) - pd.Timedelta(hours=1)]})
    write_partition(ev, str(tmp_path), "raw_events", day)
    assert dfs.list_entities(str(tmp_path), day, START, CFG) == []
    # and the bucketed read a shard gets drops them too (an event without an entity is no one's)
    b = dfs.read_buckets(str(tmp_path), [day], CFG, cutoff(day), 4, shuffle_to=str(tmp_path / "r.arrow"))
    assert b.path is None and b.take([0, 1, 2, 3]) is None and b.stats()[0].sum() == 0


def test_backfill_day_groups_are_even_and_keep_every_worker_busy():
    from featurecore.candidates.runner import _day_groups

    days = [shift_day(START, k) for k in range(17)]
    assert [len(g) for g in _day_groups(days[:9], 8, 2)] == [5, 4]
    assert [len(g) for g in _day_groups(days, 8, 2)] == [5, 4, 4, 4]
    assert [len(g) for g in _day_groups(days[:4], 8, 2)] == [4]
    assert [len(g) for g in _day_groups(days[:3], 1, 2)] == [1, 1, 1]
    assert sum(_day_groups(days, 8, 2), []) == days and _day_groups([], 8, 2) == []


def test_pieces_whose_day_files_typed_a_column_differently_still_meet():
    """Readers of different day ranges may see a column typed differently (int vs double): the shard unifies them."""
    a = pa.table({"user_id": ["u1"], "ts": pa.array([pd.Timestamp("2026-09-02", tz="UTC")]), "price": pa.array([3], pa.int64()),
                  "quantity": pa.array([2.0])})
    b = pa.table({"user_id": ["u2"], "ts": pa.array([pd.Timestamp("2026-09-03", tz="UTC")]), "price": pa.array([1.5]),
                  "quantity": pa.array([1.0])})
    ev = dfs.events_from_pieces([a, None, b])
    assert ev["price"].tolist() == [3.0, 1.5] and ev["amount"].tolist() == [6.0, 1.5]


def test_string_columns_read_as_dictionaries_whatever_each_day_file_stored(tmp_path):
    """event_type read as a dictionary from string, large_string and dictionary-typed day files alike; a day file
    storing it as numbers makes the read fall back to plain columns; pieces of readers over different files meet."""
    root = str(tmp_path)

    def day_file(day: str, event_type: pa.Array) -> None:
        n = len(event_type)
        write_partition(pa.table({"user_id": [f"u{i}" for i in range(n)], "ts": pa.array([pd.Timestamp(day, tz="UTC")] * n),
                                  "event_type": event_type}), root, "raw_events", day)

    day_file("2026-09-01", pa.array(["view", "purchase", None], pa.string()))
    day_file("2026-09-02", pa.array(["view", "cart_add"], pa.large_string()))
    day_file("2026-09-03", pa.array(["view", "view"], pa.string()).dictionary_encode())
    day_file("2026-09-04", pa.array([1, 2], pa.int64()))
    cfg = dfs.DFSConfig(entities="active")
    before = pd.Timestamp("2026-09-05", tz="UTC")
    string_days = ["2026-09-01", "2026-09-02", "2026-09-03"]
    want = ["view", "purchase", None, "view", "cart_add", "view", "view"]
    one = dfs.read_buckets(root, string_days, cfg, before, 1).table
    assert one.schema.field("event_type").type == pa.dictionary(pa.int32(), pa.string())
    assert one.column("event_type").to_pylist() == want
    # readers whose files differ in type (one falls back to the plain read): their pieces concatenate in a shard
    ranges = (["2026-09-02", "2026-09-03"], ["2026-09-01", "2026-09-04"])
    pieces = [dfs.read_buckets(root, d, cfg, before, 4, shuffle_to=str(tmp_path / f"r{i}.arrow")).take([0, 1, 2, 3])
              for i, d in enumerate(ranges)]
    ev = dfs.events_from_pieces(pieces)
    assert isinstance(ev["event_type"].dtype, pd.CategoricalDtype)
    assert sorted(ev["event_type"].dropna().tolist()) == sorted(["view", "cart_add", "view", "view", "view", "purchase", "1", "2"])
    # a numeric day file: no dictionary read possible, the plain read casts as it always did
    mixed = dfs.read_buckets(root, string_days + ["2026-09-04"], cfg, before, 1).table
    assert mixed.column("event_type").to_pylist() == want + ["1", "2"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), null_share=st.sampled_from([0.0, 0.3, 1.0]))
def test_vector_percent_true_equals_featuretools_percent_true(seed, null_share):
    """The swapped-in primitive gives Featuretools' PercentTrue values bit for bit, nulls counted as False,
    directly on events and stacked through sessions, at cutoffs with a training window."""
    from featurecore.candidates.primitives import VectorPercentTrue

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    ts = pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 20 * 86400, n), unit="s")
    flag = pd.Series(rng.random(n) < rng.random(), dtype="boolean")
    flag[rng.random(n) < null_share] = pd.NA
    ev = pd.DataFrame({"_event": np.arange(n), "ts": ts, "flag": flag,
                       "session_id": [f"s{i}" for i in rng.integers(0, max(n // 3, 1), n)]})
    ev["user_id"] = ev["session_id"].map(lambda s: f"u{int(s[1:]) % 7}")
    sessions = ev.groupby("session_id").agg(user_id=("user_id", "first"), start=("ts", "min")).reset_index()
    es = ft.EntitySet("pt")
    es.add_dataframe(dataframe_name="events", dataframe=ev.drop(columns="user_id").sort_values("ts"), index="_event",
                     time_index="ts", logical_types={"flag": "BooleanNullable", "session_id": "Unknown"})
    es.add_dataframe(dataframe_name="sessions", dataframe=sessions, index="session_id", time_index="start",
                     logical_types={"user_id": "Unknown"})
    es.add_dataframe(dataframe_name="users", dataframe=pd.DataFrame({"user_id": sorted(sessions["user_id"].unique())}),
                     index="user_id")
    es.add_relationship("users", "user_id", "sessions", "user_id")
    es.add_relationship("sessions", "session_id", "events", "session_id")
    users = es["users"]["user_id"].tolist()
    ct = pd.concat([pd.DataFrame({"user_id": users, "time": pd.Timestamp("2026-01-01") + pd.Timedelta(days=d)})
                    for d in (5, 12, 21)], ignore_index=True)
    out = {}
    for prim in ("percent_true", VectorPercentTrue):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            feats = ft.dfs(entityset=es, target_dataframe_name="users", agg_primitives=[prim, "mean", "std"],
                           trans_primitives=[], max_depth=2, features_only=True)
            feats = [f for f in feats if "PERCENT_TRUE" in f.get_name()]
            out[prim if isinstance(prim, str) else "vector"] = ft.calculate_feature_matrix(
                feats, entityset=es, cutoff_time=ct, training_window="10 days", include_cutoff_time=False,
                cutoff_time_in_index=True)
    ref, got = out["percent_true"], out["vector"]
    assert list(got.columns) == list(ref.columns) and any("sessions.PERCENT_TRUE" in c for c in ref.columns)
    pd.testing.assert_frame_equal(got.astype("float64"), ref.astype("float64"), check_exact=True)


@settings(max_examples=80, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(-1, 3), st.sampled_from(["s1", "s2", None, 7, "7", "c", "_event_0"]),
                               st.integers(0, 4 * 86400 - 1)), max_size=60))
def test_session_keys_are_entity_session_and_utc_day(rows):
    """Each event's session is (entity code, session id as a string or the event itself, UTC day):
    two events share a key exactly when those triples are equal (brute force per pair); the
    sessions table has one row per key with its entity code and first event time."""
    ev = pd.DataFrame({"_event": np.arange(len(rows), dtype="int64"),
                       "user_id": np.array([r[0] for r in rows], dtype=np.int64),
                       "ts": pd.Series(pd.Timestamp("2026-03-01") + pd.to_timedelta([r[2] for r in rows], unit="s"),
                                       dtype="datetime64[ns]"),
                       "session_id": pd.Series([r[1] for r in rows], dtype=object)})
    keys, sessions = dfs._session_keys(ev, "user_id")
    assert keys.dtype == np.int64 and sessions["session_id"].dtype == np.int64
    day = [(pd.Timestamp("2026-03-01") + pd.Timedelta(seconds=t)).toordinal() - 719163 for _, _, t in rows]
    # 7 and "7" are one session id: Woodwork made string keys of both
    triple = [(u, ("s", str(s)) if s is not None else ("own", i), day[i]) for i, (u, s, _) in enumerate(rows)]
    for i in range(len(rows)):
        for j in range(len(rows)):
            assert (keys[i] == keys[j]) == (triple[i] == triple[j])
    assert sorted(sessions["session_id"]) == sorted(set(keys.tolist())) == list(range(len(sessions)))
    for key, row in sessions.set_index("session_id").iterrows():
        mine = [i for i in range(len(rows)) if keys[i] == key]
        assert row["user_id"] == rows[mine[0]][0] and row["session_start"] == ev["ts"].iloc[mine].min()


def _string_keyed_entityset(events: pd.DataFrame, users: pd.DataFrame, products: pd.DataFrame, schema: dict, entities: list):
    """The textbook EntitySet: id strings as keys, a session key spelled per event in Python."""
    ev = events.reset_index(drop=True).copy()
    ev["_event"] = np.arange(len(ev), dtype="int64")
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True).dt.tz_localize(None)
    for c in ("event_type", "device_type", "referrer"):
        ev[c] = ev[c].astype(object)
    day = ev["ts"].dt.floor("D").astype(str)
    ev["session_id"] = [f"{u}|{s if s is not None and s == s else f'_event_{i}'}|{d}"
                        for i, (u, s, d) in enumerate(zip(ev["user_id"].astype(str), ev["session_id"], day))]
    ev["product_id"] = [None if p is None or p != p else str(p) for p in ev["product_id"]]
    sessions = ev.groupby("session_id", sort=False).agg(user_id=("user_id", "first"), session_start=("ts", "min")).reset_index()
    sessions["user_id"] = sessions["user_id"].astype(str)
    ev = ev[["_event", "ts", *schema["events"]]].sort_values(["ts", "_event"], kind="stable")
    es = ft.EntitySet("candidates")
    es.add_dataframe(dataframe_name="events", dataframe=ev, index="_event", time_index="ts",
                     logical_types={**schema["events"], "session_id": "Unknown", "product_id": "Unknown"})
    u = pd.DataFrame({"user_id": sorted(map(str, entities))}).merge(
        users.assign(user_id=users["user_id"].astype(str))[["user_id", *schema["users"]]], on="user_id", how="left")
    es.add_dataframe(dataframe_name="users", dataframe=u, index="user_id", logical_types={"user_id": "Unknown", **schema["users"]})
    es.add_dataframe(dataframe_name="sessions", dataframe=sessions, index="session_id", time_index="session_start",
                     logical_types={"session_id": "Unknown", "user_id": "Unknown"})
    p = pd.DataFrame({"product_id": sorted(ev["product_id"].dropna().unique())}).merge(
        products.assign(product_id=products["product_id"].astype(str))[["product_id", *schema["products"]]], on="product_id", how="left")
    es.add_dataframe(dataframe_name="products", dataframe=p, index="product_id",
                     logical_types={"product_id": "Unknown", **schema["products"]})
    es.add_relationship("users", "user_id", "sessions", "user_id")
    es.add_relationship("sessions", "session_id", "events", "session_id")
    es.add_relationship("products", "product_id", "events", "product_id")
    return es


def test_integer_keyed_entityset_gives_the_values_of_string_keys(store, computed):
    """The EntitySet's integer keys (users, sessions, products) change no value: every saved feature
    at three cutoffs equals a textbook EntitySet keyed by id strings, with null session and product
    ids, a product id spelled as a string and as a number, events of users not asked for, events not
    in time order, and sessions of one user starting at the same instant (Woodwork breaks those ties
    by key, and the order of a float sum changes its last bits). DFS makes the same features of both."""
    root = store.store_root
    days = [shift_day(SUNDAY, -7), shift_day(SUNDAY, -3), SUNDAY]
    manifest = computed.manifest
    assert manifest["schema"]["sessions"] and manifest["schema"]["products"] is not None
    events = dfs.read_events_many(root, days, START, CFG, None)
    events["session_id"] = events["session_id"].astype(object).where(np.arange(len(events)) % 13 != 0, None)
    pid = events["product_id"].astype(object).where(np.arange(len(events)) % 17 != 0, None)
    # an unknown product spelled as a string on some events and as a number on others: one product
    pid[np.arange(len(events)) % 23 == 1] = "999"
    pid[np.arange(len(events)) % 23 == 2] = 999
    events["product_id"] = pid
    events["ts"] = events["ts"].dt.floor("h")  # ties of session start
    events = events.sample(frac=1, random_state=7).reset_index(drop=True)  # not in time order: the build sorts
    listed = dfs.entities_by_day(events, days, START, CFG)
    asked = {d: e[3:] for d, e in listed.items()}  # the first few users' events are in, their rows are not asked for
    union = sorted(set().union(*asked.values()))
    assert (~events["user_id"].isin(union)).any()
    feats = dfs.load_definitions(root, manifest)
    users, products = read_snapshot(root, "users"), read_snapshot(root, "products")
    es, ids = dfs.build_entityset(events, users, products, manifest["schema"], union)
    got = dfs.feature_matrix_many(es, ids, feats, asked, CFG)

    def definitions(entityset) -> list:
        """Every feature DFS makes on `entityset` with the test's configuration."""
        entityset.add_interesting_values(dataframe_name="events", values=manifest["interesting_values"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ft.dfs(entityset=entityset, target_dataframe_name="users", agg_primitives=agg_primitives(CFG.agg_primitives),
                          trans_primitives=list(CFG.trans_primitives), where_primitives=list(CFG.where_primitives),
                          max_depth=CFG.max_depth, features_only=True)

    ref_es = _string_keyed_entityset(events, users, products, manifest["schema"], union)
    # the same definitions as DFS makes them on string keys (saved ones carry their EntitySet's key types)
    every = definitions(ref_es)
    ties = ref_es["sessions"].duplicated(["user_id", "session_start"], keep=False)
    assert ties.sum() > 20 and ref_es["sessions"][ties]["session_id"].str.contains("_event_").any()
    assert [f.get_name() for f in definitions(es)] == [f.get_name() for f in every]
    by_name = {f.get_name(): f for f in every}
    ref_feats = [by_name[n] for n in manifest["features"]]
    for d in days:
        ct = pd.DataFrame({"user_id": sorted(asked[d]), "time": cutoff(d).tz_localize(None)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ft.calculate_feature_matrix(ref_feats, entityset=ref_es, cutoff_time=ct, training_window="30 days",
                                              include_cutoff_time=False, n_jobs=1)
        ref = dfs.apply_fill_rule(ref, ref_feats).reindex(ct["user_id"])
        assert list(got[d].index) == list(ref.index) and len(ref) > 50
        pd.testing.assert_frame_equal(got[d][manifest["features"]].astype("float64"), ref[manifest["features"]].astype("float64"),
                                      check_exact=True, check_names=False)
