"""Each quality check on a real demo store: a partition with the defect fails, naming the feature
and the numbers, and the clean partition passes.

The store is built once by the real pipeline on the session's LocalCluster; each test
copies it and writes its defect into the last partition (real Parquet).
"""

import os
import shutil
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from checks.compat import compat_findings, with_provenance
from checks.feature_schemas import validate_features
from checks.freshness import Freshness, data_arrivals, evaluate_freshness, partition_writes
from checks.importance import importance_drift, reference_importances
from checks.layout import layout_of_group
from checks.quality import QualitySettings, QualitySource, Reference, evaluate_day, profile_day
from featurecore import demo_data
from featurecore.feature_sets import from_groups
from featurecore.groups import GROUPS
from featurecore.spec import FeatureGroup
from featurecore.store import partition_dir, read_partition, write_partition
from tests.quality_world import START, build_world

DEMO = demo_data.DemoConfig(start=START, days=24, users=300, products=80, events_per_day=1500, seed=13)
DAY = "2026-09-24"  # the partition that gets the defects
UB, PD = GROUPS["user_behavior"], GROUPS["product_dynamic"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, dask_client):
    root = tmp_path_factory.mktemp("quality")
    cfg, days = build_world(root, dask_client, DEMO, ["user_behavior", "product_dynamic"])
    return root, cfg, days


@pytest.fixture
def store(world, tmp_path):
    """A private copy of the store for one test."""
    root, cfg, _ = world
    dst = tmp_path / "store"
    shutil.copytree(cfg.store_root, dst)
    return str(dst)


def evaluate(store, group, dask_client, settings=QualitySettings(), day=DAY):
    """Profile and evaluate one partition on the cluster, as the checks do."""
    src = QualitySource.from_group(group)
    dask_client.gather([dask_client.submit(profile_day, store, src, d, pure=False) for d in [day]])
    return dask_client.submit(evaluate_day, store, src, day, settings, START, pure=False).result()


def rewrite(store, group, mutate, day=DAY):
    """Read a partition, apply `mutate` and write it back."""
    df = read_partition(store, group.name, day)
    df = mutate(df.copy()) if mutate else df
    write_partition(df, store, group.name, day)
    return df


# --------------------------------------------------------------------------- schema


def test_schema_defects_name_the_feature_and_values(store):
    clean = read_partition(store, UB.name, DAY)
    assert validate_features(clean, UB, day=DAY) == []

    bad = clean.copy()
    bad["view_count_30d"] = bad["view_count_30d"].astype(str)
    assert validate_features(bad, UB) == ["user_behavior.view_count_30d: wrong type object, expected float64"]

    bad = clean.copy()
    bad.loc[bad.index[:3], "purchase_count_30d"] = -2.0
    errs = validate_features(bad, UB)
    neg = [e for e in errs if e.startswith("user_behavior.purchase_count_30d: greater_than_or_equal_to(0.0)")]
    assert neg and "3 of" in neg[0] and "-2.0" in neg[0] and f"user_id={bad['user_id'].iloc[0]}" in neg[0]

    bad = clean.copy()
    bad.loc[bad.index[:50], "cart_add_count_7d"] = np.nan
    errs = validate_features(bad, UB)
    assert any(e.startswith("user_behavior.cart_add_count_7d: null only as a whole column") and "50 of" in e for e in errs)

    bad = clean.copy()
    bad.loc[bad.index[1], "user_id"] = bad["user_id"].iloc[0]
    assert any("keys (user_id) not unique" in e for e in validate_features(bad, UB))
    assert any("cutoff" in e for e in validate_features(clean, UB, day="2026-09-23"))
    assert any("unexpected column(s) extra" in e for e in validate_features(clean.assign(extra=1.0), UB))


# --------------------------------------------------------------------------- stats


def test_stats_null_burst_outliers_and_row_drop(store, dask_client):
    clean = evaluate(store, UB, dask_client)
    assert clean["stats"]["status"] == "ok" and clean["stats"]["features_judged"] >= 8, clean["stats"]

    def burst(df):
        df.loc[df.sample(frac=0.4, random_state=1).index, "purchase_amount_sum_7d"] = np.nan
        top = df.sample(n=20, random_state=2).index
        df.loc[top, "view_count_7d"] = 100_000.0
        return df

    rewrite(store, UB, burst)
    r = evaluate(store, UB, dask_client)["stats"]
    assert r["status"] == "error"
    by = {(f["item"], f["rule"]): f for f in r["findings"]}
    miss = by[("purchase_amount_sum_7d", "missing rate")]
    assert miss["status"] == "error" and "missing rate 40.0%" in miss["message"] and "trailing mean 0.0%" in miss["message"]
    out = by[("view_count_7d", "outlier rate")]
    assert "100000" in out["message"] and "user_id=" in out["message"]

    # user_behavior keeps every user ever seen: fewer rows than the day before is lost state
    kept = rewrite(store, UB, lambda df: df.iloc[: len(df) // 3])
    r = evaluate(store, UB, dask_client)["stats"]
    rows = [f for f in r["findings"] if f["item"] == "__rows__"]
    assert rows and rows[0]["status"] == "error", r["findings"]
    assert f"row count {len(kept)} is fewer than the" in rows[0]["message"] and "only grows" in rows[0]["message"]


def test_stats_row_count_of_a_windowed_asset_against_the_trailing_mean(tmp_path):
    import pandas as pd

    from featurecore.timeutil import cutoff, day_range

    root, days = str(tmp_path), day_range("2026-09-01", "2026-09-20")
    rng = np.random.default_rng(9)
    for d in days:
        n = 120 if d == days[-1] else 400 + int(rng.integers(-20, 20))
        df = pd.DataFrame({"user_id": [f"u{i:04d}" for i in range(n)]})
        df["cutoff"] = pd.Series(cutoff(d), index=df.index).astype("datetime64[ns, UTC]")
        df["COUNT(events)"] = rng.poisson(3, n).astype(float)
        write_partition(df, root, "windowed_like", d)
    src = QualitySource.candidate("windowed_like", ("user_id",), window_days=7)
    ok = evaluate_day(root, src, days[-2], QualitySettings(), days[0])["stats"]
    assert ok["status"] == "ok" and ok["rows_ratio"] == pytest.approx(1.0, abs=0.1)
    r = evaluate_day(root, src, days[-1], QualitySettings(), days[0])["stats"]
    f = next(f for f in r["findings"] if f["item"] == "__rows__")
    assert f["status"] == "error" and f["message"].startswith("windowed_like: row count 120 is 0.3")
    assert "x the trailing 6-day mean" in f["message"]  # rows are judged from day 14, once history built up


# --------------------------------------------------------------------------- relations


def test_relations_broken_dependency_and_correlation(store, dask_client):
    clean = evaluate(store, UB, dask_client)["relations"]
    assert clean["status"] == "ok" and clean["evaluated"] > 15

    def break_it(df):
        df.loc[df.index[:4], "purchase_count_7d"] = df.loc[df.index[:4], "purchase_count_30d"] + 5  # law
        rng = np.random.default_rng(0)
        df["view_product_id_distinct_30d"] = rng.permutation(df["view_product_id_distinct_30d"].to_numpy())
        return df

    bad = rewrite(store, UB, break_it)
    r = evaluate(store, UB, dask_client)["relations"]
    assert r["status"] == "error"
    law = next(f for f in r["findings"] if f["item"] == "purchase_count_7d <= purchase_count_30d")
    u = bad["user_id"].iloc[0]
    assert law["status"] == "error" and f"4 of {len(bad)} rows" in law["message"] and f"user_id={u}" in law["message"]
    corr = next(f for f in r["findings"] if f["item"].startswith("corr(view_count_30d, view_product_id_distinct_30d)"))
    assert corr["status"] == "warn" and "below the minimum 0.7" in corr["message"]
    # the law is also part of the blocking schema the group writer runs
    assert any("relation purchase_count_7d <= purchase_count_30d fails on 4" in e for e in validate_features(bad, UB))


def test_funnel_is_a_tendency_with_a_tolerance(store, dask_client):
    def few(df):
        df.loc[df.index[:2], "purchase_count_7d"] = df.loc[df.index[:2], "cart_add_count_7d"] + 1
        df.loc[df.index[:2], "purchase_count_30d"] = df.loc[df.index[:2], ["purchase_count_30d", "purchase_count_7d"]].max(axis=1)
        df.loc[df.index[:2], "purchase_count_all"] = df.loc[df.index[:2], ["purchase_count_all", "purchase_count_30d"]].max(axis=1)
        return df

    rewrite(store, UB, few)  # 2 rows of ~280: under the 2 % tolerated
    funnel = [f for f in evaluate(store, UB, dask_client)["relations"]["findings"] if "cart_add_count_7d" in f["item"]]
    assert funnel == []

    def many(df):
        idx = df.index[: len(df) // 5]
        df.loc[idx, "cart_add_count_7d"] = 0.0
        df.loc[idx, "cart_add_count_30d"] = df.loc[idx, "cart_add_count_30d"].clip(upper=0)
        return df

    rewrite(store, UB, many)
    r = evaluate(store, UB, dask_client)["relations"]
    f = next(f for f in r["findings"] if f["item"] == "purchase_count_7d <= cart_add_count_7d")
    assert f["status"] == "warn" and "allowed 2.00%" in f["message"]


# --------------------------------------------------------------------------- drift


def test_drift_shifted_distribution(store, dask_client):
    # product_dynamic's universe (products) is stable; compare with the 7 days before
    settings = QualitySettings(reference=Reference(trailing_days=7, same_weekday=False, min_days=3))
    clean = evaluate(store, PD, dask_client, settings)["drift"]
    assert clean["status"] == "ok" and clean["compared"] >= 8, clean

    rewrite(store, PD, lambda df: df.assign(price_last_all=df["price_last_all"] * 3))
    r = evaluate(store, PD, dask_client, settings)["drift"]
    assert r["status"] == "error"
    f = next(f for f in r["findings"] if f["item"] == "price_last_all")
    assert f["status"] == "error" and f["psi"] > 0.25 and f["ks"] > 0.2
    assert f["message"].startswith("product_dynamic.price_last_all: PSI ") and "KS" in f["message"]
    assert all(x["item"] == "price_last_all" for x in r["findings"])  # nothing else moved


# --------------------------------------------------------------------------- freshness


def test_freshness_stale_and_late_partitions(world, store):
    _, cfg, days = world
    writes = partition_writes(store, UB.name)
    arrivals = data_arrivals(cfg.landing_root, store)
    rule = Freshness(deadline=timedelta(hours=3))
    src = QualitySource.from_group(UB)
    now = max(writes.values()) + timedelta(hours=1)
    ok = evaluate_freshness(UB.name, writes, arrivals, window_days=src.window_days, rule=rule, now=now, start=START)
    assert ok["passed"] and ok["latest_partition"] == DAY and ok["fresh_until"] > now, ok["description"]

    # late data for 2026-09-20 arrives after every partition was written
    arrived = max(writes.values()) + timedelta(hours=2)
    t = arrived.timestamp()
    for f in (Path(cfg.landing_root) / "events" / "2026-09-20").iterdir():
        os.utime(f, (t, t))
    arrivals = data_arrivals(cfg.landing_root, store)
    soon = evaluate_freshness(UB.name, writes, arrivals, window_days=src.window_days, rule=rule,
                              now=arrived + timedelta(hours=1), start=START)
    assert soon["passed"], "within the deadline the partitions are catching up"
    stale = evaluate_freshness(UB.name, writes, arrivals, window_days=src.window_days, rule=rule,
                               now=arrived + timedelta(hours=5), start=START)
    assert not stale["passed"] and stale["stale"] == days[19:]  # an all-time group: every later partition
    assert "stale partition(s): 2026-09-20 written" in stale["description"] and "overdue 2.0 h" in stale["description"]

    # a landed day with no partition past its deadline
    shutil.rmtree(partition_dir(store, UB.name, DAY))
    late = evaluate_freshness(UB.name, partition_writes(store, UB.name), data_arrivals(cfg.landing_root, store),
                              window_days=src.window_days, rule=rule, now=arrived + timedelta(hours=5), start=START)
    assert late["late"] == [DAY] and f"{DAY} due" in late["description"]
    # too old: the newest cutoff is older than max_age, whatever landed
    old = evaluate_freshness(UB.name, writes, {}, window_days=None, rule=Freshness(max_age=timedelta(days=2)),
                             now=datetime(2026, 10, 1, tzinfo=timezone.utc), start=START)
    assert not old["passed"] and "too old" in old["description"]


# --------------------------------------------------------------------------- compatibility


def test_compat_changed_definition_under_same_version():
    layouts = {UB.name: layout_of_group(UB)}
    fs = with_provenance(from_groups("user_core", "1", {"user_behavior": ["purchase_count_7d", "view_count_30d",
                                                                         "conversion_rate_30d"]}), layouts)
    assert compat_findings(fs, layouts) == []

    # same group version, purchase counts now also count cart adds: a silent change
    aggs = [replace(a, where=(("event_type", "in", ("purchase", "cart_add")),), name="purchase_count") if a.op == "count" and a.where and
            a.where[0][2] == "purchase" else a for a in UB.aggregations]
    changed = replace(UB, aggregations=aggs)
    found = compat_findings(fs, {UB.name: layout_of_group(FeatureGroup(
        UB.name, UB.keys, aggs, UB.derived, UB.ttl, UB.version, UB.description, UB.enrich, UB.entity))})
    assert changed.version == "1"
    probs = {(f["feature"], f["problem"]) for f in found}
    assert ("purchase_count_7d", "silent definition change") in probs
    assert ("conversion_rate_30d", "silent definition change") in probs  # a ratio of a changed count
    assert ("view_count_30d", "silent definition change") not in probs
    msg = next(f["message"] for f in found if f["feature"] == "purchase_count_7d")
    assert "user_behavior.purchase_count_7d" in msg and "stays at version 1" in msg and "->" in msg

    # the same change with a version bump: the published set must move to a new version
    bumped = FeatureGroup(UB.name, UB.keys, aggs, UB.derived, UB.ttl, "2", UB.description, UB.enrich, UB.entity)
    found = compat_findings(fs, {UB.name: layout_of_group(bumped)})
    assert {f["problem"] for f in found} == {"definition changed"}
    assert "publish a new feature-set version" in found[0]["message"]

    # a feature dropped from the declaration, and a type promise broken
    slim = FeatureGroup(UB.name, UB.keys, [a for a in UB.aggregations if a.op != "count" or a.where[0][2] != "view"],
                        [d for d in UB.derived if d.name != "conversion_rate_30d"], UB.ttl, "1")
    found = compat_findings(fs, {UB.name: layout_of_group(slim)})
    assert {(f["feature"], f["problem"]) for f in found} >= {("view_count_30d", "missing feature")}
    narrow = replace(fs, features=tuple(replace(f, dtype="int64") if f.feature == "view_count_30d" else f for f in fs.features))
    found = compat_findings(narrow, layouts)
    assert [(f["feature"], f["problem"]) for f in found] == [("view_count_30d", "type")]
    assert "published as int64" in found[0]["message"] and "now produces float64" in found[0]["message"]


# --------------------------------------------------------------------------- importance drift


def test_importance_drift_against_a_feature_set(store, dask_client):
    feats = ["purchase_count_30d", "cart_add_count_30d", "view_count_30d", "purchase_ema_hl7d",
             "view_product_id_distinct_30d", "purchase_amount_sum_30d"]
    base = from_groups("user_watch", "1", {"user_behavior": feats})
    now = dask_client.submit(importance_drift, store, replace(base, info={"importances": {f: 1.0 for f in feats}}),
                             DAY, pure=False).result()
    assert now["rows"] > 100 and 20 <= now["positives"] <= now["rows"] - 20
    measured = {f["feature"]: f["share_now"] for f in now["features"]}

    # importances stored at selection equal to what recent data gives: no drift
    same = replace(base, info={"importances": measured})
    r = dask_client.submit(importance_drift, store, same, DAY, pure=False).result()
    assert r["status"] == "ok" and r["spearman"] == pytest.approx(1.0) and r["flagged"] == []

    # stored importances in reverse order: the ranking broke and the top features are named
    names = sorted(measured, key=measured.get)
    flipped = replace(base, info={"importances": dict(zip(names, sorted(measured.values(), reverse=True)))})
    assert reference_importances(flipped)  # bare names resolve to source.feature
    r = dask_client.submit(importance_drift, store, flipped, DAY, pure=False).result()
    assert r["status"] in ("warn", "error")  # ERROR once more than half of the top features dropped
    top_at_selection = names[0]
    flag = next((f for f in r["flagged"] if f["feature"] == top_at_selection), None)
    assert flag is not None, (r["features"], measured)
    assert "importance share fell from" in flag["attention"]

    # a set that records its selection window is judged against the same refit on that window
    windowed = replace(flipped, info={**flipped.info, "label_days": ["2026-09-12", "2026-09-15"]})
    r = dask_client.submit(importance_drift, store, windowed, DAY, pure=False).result()
    assert r["compared_with"] == "the same refit on the selection window 2026-09-12..2026-09-15"
    assert r["status"] in ("ok", "warn") and all("share_stored" in f for f in r["features"])


def test_candidate_assets_get_the_same_checks(tmp_path):
    """A candidate-like asset (keys + cutoff + generated columns, one a category) through the same checks."""
    import pandas as pd

    from featurecore.timeutil import cutoff, day_range

    root = str(tmp_path)
    rng = np.random.default_rng(4)
    days = day_range("2026-09-01", "2026-09-15")

    def part(day, shift=False):
        n = 400
        df = pd.DataFrame({"user_id": [f"u{i:04d}" for i in range(n)]})
        df["cutoff"] = pd.Series(cutoff(day), index=df.index).astype("datetime64[ns, UTC]")
        df["COUNT(events)"] = rng.poisson(4, n).astype(float)
        df["PCA_0"] = rng.normal(0, 1, n)
        p = [0.2, 0.3, 0.5] if shift else [0.55, 0.35, 0.10]
        df["MODE(events.device_type)"] = rng.choice(["mobile", "desktop", "tablet"], n, p=p).astype(object)
        return df

    for d in days:
        write_partition(part(d, shift=d == days[-1]), root, "dfs_like", d)
    src = QualitySource.candidate("dfs_like", ("user_id",), window_days=1)  # no history window: comparable at once
    settings = QualitySettings(reference=Reference(trailing_days=7, same_weekday=False))
    for d in days:
        profile_day(root, src, d)
    clean = evaluate_day(root, src, days[-2], settings, days[0])
    assert clean["schema"]["status"] == "ok" and clean["drift"]["status"] == "ok" and clean["drift"]["compared"] == 3

    shifted = evaluate_day(root, src, days[-1], settings, days[0])["drift"]
    f = next(f for f in shifted["findings"] if f["item"] == "MODE(events.device_type)")
    assert f["status"] == "error" and "chi2" in f["message"] and "PSI" in f["message"]
    assert [x["item"] for x in shifted["findings"]] == ["MODE(events.device_type)"]

    bad = part(days[-2])
    bad.loc[:4, "COUNT(events)"] = -1.0
    write_partition(bad, root, "dfs_like", days[-2])
    schema = evaluate_day(root, src, days[-2], settings, days[0])["schema"]
    assert schema["status"] == "error"
    assert any(x["message"].startswith("dfs_like.COUNT(events): greater_than_or_equal_to(0.0) failed for 5 of 400")
               for x in schema["findings"]), schema


def test_profiles_are_reused_until_the_partition_changes(store, dask_client):
    src = QualitySource.from_group(PD)
    first = profile_day(store, src, DAY)
    again = profile_day(store, src, DAY)
    assert first["reused"] is False and again["reused"] is True
    time.sleep(0.01)
    rewrite(store, PD, None)  # same content, rewritten: the profile is recomputed
    assert profile_day(store, src, DAY)["reused"] is False

    # evaluations are kept too: the monitoring asset reuses what the checks computed
    first = evaluate_day(store, src, DAY, QualitySettings(), START)
    again = evaluate_day(store, src, DAY, QualitySettings(), START)
    assert "cached" not in first and again["cached"] is True and again["drift"] == first["drift"]
    assert "cached" not in evaluate_day(store, src, DAY, QualitySettings(stats_days=7), START)  # other settings
    rewrite(store, PD, lambda df: df.assign(price_last_all=df["price_last_all"] * 3))
    assert evaluate_day(store, src, DAY, QualitySettings(), START).get("cached") is None


def test_hashed_bag_counts_are_profiled_as_counts():
    """The encodings' hash_<name>_NN columns are non-negative counts with a long tail: scored on log1p
    among the positive values, heavy users stop being outliers, a count far beyond the rest still is."""
    import pandas as pd

    from checks.layout import kind_from_name, layout_of_frame
    from checks.profiles import feature_rows, profile_frame
    from featurecore.candidates.reduction import hash_bags

    assert kind_from_name("hash_brand_07") == kind_from_name("hash_product_id_31") == "count"
    assert kind_from_name("hashtag_share") != "count" and kind_from_name("hash_brand") is None
    rng = np.random.default_rng(3)
    users = [f"u{i:04d}" for i in range(3000)]
    # 30 days of interactions per user: 40% active, lognormal volumes (a few heavy users), 40 brands
    n = np.rint(rng.lognormal(2.5, 1.0, size=len(users))).astype(int) * (rng.random(len(users)) < 0.4)
    ent = np.repeat(users, n)
    tokens = pd.Series(rng.choice([f"b{j}" for j in range(40)], size=len(ent)))
    bags = hash_bags(pd.Series(ent), tokens, users, 8, "hash_brand")
    df = pd.concat([pd.DataFrame({"user_id": users}), bags], axis=1)
    df.loc[0, "hash_brand_00"] = 1e6  # one count far beyond any other
    layout = layout_of_frame("encoded_like", ("user_id",), df)
    assert {f.name: (f.kind, f.lower) for f in layout.features}["hash_brand_03"] == ("count", 0.0)
    as_counts = feature_rows(profile_frame(df, layout))["n_outlier"]
    unknown = feature_rows(profile_frame(df, layout_of_frame("encoded_like", ("user_id",), df, guess_kinds=False)))["n_outlier"]
    positive = (df[bags.columns] > 0).sum()
    # as counts, a few percent of the positive values at most; as values of unknown kind, a fifth or more
    assert (as_counts / positive).max() < 0.03
    assert (unknown / positive)[bags.columns[1:]].min() > 0.15
    assert as_counts["hash_brand_00"] >= 1
