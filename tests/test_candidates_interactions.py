"""Interaction, encoding, PCA and cost-accounting candidates against hand computations."""

import json

import numpy as np
import pandas as pd
import pytest
from candidate_store import DAYS, START, SUNDAY, build_store

from featurecore.candidates import encodings, interactions, runner
from featurecore.candidates.common import Cadence, CandidateError, plan_shards, plan_weighted_shards, shard_count
from featurecore.candidates.costs import feature_families, read_costs, write_costs
from featurecore.candidates.reduction import apply_pca, fit_pca, hash_bags
from featurecore.groups import GROUPS
from featurecore.ingest import read_snapshot
from featurecore.pipeline import features_range, tile_day
from featurecore.store import read_partition, write_partition
from featurecore.timeutil import cutoff, shift_day

SOURCES = ("user_behavior", "user_temporal", "user_context")
ICFG = interactions.InteractionConfig(sources=SOURCES, top_k=6, max_features=40)


@pytest.fixture(scope="module")
def store(tmp_path_factory, dask_client):
    """The demo store plus the three user feature groups for every day."""
    cfg = build_store(tmp_path_factory.mktemp("inter"))
    groups = [GROUPS[s] for s in SOURCES]
    dask_client.gather(dask_client.map(tile_day, DAYS, groups=groups, store_root=cfg.store_root, pure=False))
    dask_client.gather([dask_client.submit(features_range, DAYS, g, cfg.store_root, START, pure=False) for g in groups])
    return cfg


def test_interactions_follow_the_plan_and_the_cap(store, dask_client):
    root = store.store_root
    days = [shift_day(SUNDAY, -1), SUNDAY]
    rep = runner.run_interactions(dask_client, root, days, ICFG)
    rep.raise_errors()
    plan = rep.manifest
    assert 1 <= len(plan["base"]) <= 6
    fams = interactions.families(plan)
    n = sum(len(v) for v in fams.values())
    assert n <= 40 and plan["dropped_by_cap"] > 0  # the hard cap bites at 40
    assert fams["unary"] and fams["pairwise"]
    got = read_partition(root, interactions.ASSET, SUNDAY).set_index("user_id")
    assert (got["cutoff"] == cutoff(SUNDAY)).all()
    src = pd.concat([read_partition(root, s, SUNDAY).drop(columns="cutoff").set_index("user_id") for s in SOURCES], axis=1)
    assert sorted(got.index) == sorted(src.index)
    src = src.loc[got.index]
    for it in plan["items"]:
        a = src[it["a"]].astype(float)
        with np.errstate(all="ignore"):
            expected = {"log1p": lambda: np.log1p(a), "sqrt": lambda: np.sqrt(a), "square": lambda: a * a,
                        "reciprocal": lambda: (1 / a).where(a != 0),
                        "mul": lambda: a * src[it["b"]], "sub": lambda: a - src[it["b"]],
                        "div": lambda: (a / src[it["b"]]).where(src[it["b"]] != 0)}[it["op"]]()
        np.testing.assert_allclose(got[it["name"]].to_numpy(), expected.replace([np.inf, -np.inf], np.nan).to_numpy(),
                                   rtol=1e-12, equal_nan=True, err_msg=it["name"])
    # the same columns every day: the plan is saved and reused
    other = read_partition(root, interactions.ASSET, days[0])
    assert list(other.columns) == list(got.reset_index().columns)
    costs = read_costs(root, interactions.ASSET)
    assert set(costs["family"]) >= {"unary", "pairwise"} and costs["day"].nunique() == 2


def test_crosses_of_low_cardinality_categoricals(store, dask_client):
    root = store.store_root
    cfg = interactions.InteractionConfig(sources=SOURCES, top_k=3, max_features=100)
    rep = runner.run_interactions(dask_client, root, [SUNDAY], cfg)
    rep.raise_errors()
    got = read_partition(root, interactions.ASSET, SUNDAY).set_index("user_id")
    users = read_snapshot(root, "users").set_index("user_id").loc[got.index]
    assert "cross(country,segment)" in got.columns
    assert (got["cross(country,segment)"] == users["country"] + "|" + users["segment"]).all()
    freq = got["freq(cross(country,segment))"]
    assert freq.between(0, 1).all() and freq.notna().all()


def test_interactions_missing_input_is_a_clear_error(store):
    with pytest.raises(CandidateError, match=r"input partition user_behavior/date=2026-10-30 is missing"):
        interactions.compute(store.store_root, "2026-10-30", ICFG, interactions.load_plan(store.store_root, ICFG) or {"base": []})


def test_encodings(store, dask_client):
    root = store.store_root
    cfg = encodings.EncodingConfig(hash_features=16, hash_window_days=7)
    rep = runner.run_encodings(dask_client, root, [SUNDAY], START, cfg)
    rep.raise_errors()
    got = read_partition(root, encodings.ASSET, SUNDAY).set_index("user_id")
    users = read_snapshot(root, "users").set_index("user_id")
    assert set(users.index) <= set(got.index)
    u = got.loc[users.index]
    counts = users["country"].value_counts()
    np.testing.assert_array_equal(u["count(country)"].to_numpy(), users["country"].map(counts).to_numpy())
    np.testing.assert_allclose(u["freq(country)"].to_numpy(), (users["country"].map(counts) / len(users)).to_numpy())
    onehot = u.filter(like="onehot(segment=")
    assert onehot.shape[1] == users["segment"].nunique() and (onehot.sum(axis=1) == 1).all()
    # hashed product history: columns sum to the user's events with a product in the 7 days before the cutoff
    ev = pd.concat([read_partition(root, "raw_events", d) for d in [shift_day(SUNDAY, -i) for i in range(7)]])
    n = ev.dropna(subset=["product_id"]).groupby("user_id").size()
    hashed = got.filter(like="hash_product_id_").sum(axis=1)
    np.testing.assert_array_equal(hashed.loc[n.index].to_numpy(), n.to_numpy())
    assert got.filter(like="hash_brand_").shape[1] == 16
    assert set(read_costs(root, encodings.ASSET)["family"]) == {"count_encoding", "frequency_encoding", "one_hot", "hashing"}


def test_pca_and_hashing_units():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 2))
    x = pd.DataFrame(np.c_[z, z @ [[1, 1], [1, -1]], z[:, :1] * 3, np.ones(400)], columns=list("abcdef"))
    x.iloc[::17, 0] = np.nan
    model = fit_pca(x, n_components=3, batch_size=100)
    evr = model["explained_variance_ratio"]
    assert evr[:2].sum() > 0.99 and "f" not in model["columns"]  # rank 2 + a constant column
    proj = apply_pca(x, model, "p")
    assert list(proj.columns) == ["p_pc00", "p_pc01", "p_pc02"] and proj.notna().all().all()
    h = hash_bags(pd.Series(["u1", "u1", "u2"]), pd.Series(["p1", "p1", None]), ["u1", "u2", "u3"], 8, "h")
    assert h.sum(axis=1).tolist() == [2.0, 0.0, 0.0]


def test_costs_contract(tmp_path):
    root = tmp_path / "s"
    write_partition(pd.DataFrame({"user_id": ["a"], "x": [1.0]}), root, "toy", "2026-09-06")
    with pytest.raises(FileNotFoundError, match="write the data first"):
        write_costs(root, "toy", "2026-09-07", {})
    write_costs(root, "toy", "2026-09-06", {"fam_a": {"seconds": 1.5, "bytes": 10, "features": ["x", "y"]},
                                            "fam_b": {"seconds": 0.5, "bytes": 3, "features": ["z"]}})
    df = read_costs(root, "toy")
    assert list(df.columns) == ["asset", "day", "family", "seconds", "bytes", "n_features"]
    assert df.set_index("family").loc["fam_a", "n_features"] == 2 and df["bytes"].sum() == 13
    assert feature_families(root, "toy") == {"x": "fam_a", "y": "fam_a", "z": "fam_b"}
    assert read_costs(root, "toy", days=["2026-09-07"]).empty
    doc = json.loads((root / "toy" / "date=2026-09-06" / "_costs.json").read_text())
    assert doc["families"]["fam_b"]["features"] == ["z"]
    # the data file is untouched by the cost file
    assert read_partition(root, "toy", "2026-09-06")["x"].tolist() == [1.0]


def test_cadence_and_shards():
    assert Cadence("weekly").includes("2026-09-13", START) and not Cadence("weekly").includes("2026-09-14", START)
    assert Cadence("weekly:mon").includes("2026-09-14", START)
    assert Cadence("every:3").includes("2026-09-04", START) and not Cadence("every:3").includes("2026-09-05", START)
    assert Cadence("daily").includes("2026-09-05", START)
    with pytest.raises(ValueError, match="cadence 'fortnightly'"):
        Cadence("fortnightly")
    assert shard_count(1000, 2) == 6 and shard_count(60, 2) == 2 and shard_count(15, 2) == 1 and shard_count(0, 2) == 0
    assert shard_count(1352, 2, min_shard_entities=1000) == 2 and shard_count(10_000, 2, min_shard_entities=1000) == 6
    assert shard_count(3000, 2, min_shard_entities=1000) == 2 and shard_count(5000, 2, min_shard_entities=1000) == 4
    # a run over several days already gives each worker whole days: a day is split only to make
    # the task count a multiple of the workers (each shard has a fixed cost)
    assert shard_count(1352, 2, min_shard_entities=1000, days_in_run=4) == 1
    assert shard_count(10_000, 2, min_shard_entities=1000, days_in_run=4) == 1
    assert shard_count(10_000, 2, min_shard_entities=1000, days_in_run=3) == 2
    assert shard_count(500, 2, min_shard_entities=1000, days_in_run=3) == 1  # too small to split
    assert shard_count(10_000, 4, min_shard_entities=1000, days_in_run=6) == 2
    shards = plan_shards([f"u{i:03d}" for i in range(10)], 3)
    assert [len(s) for s in shards] == [4, 3, 3] and sorted(sum(shards, [])) == [f"u{i:03d}" for i in range(10)]
    # weighted: every entity once, totals as even as heaviest-first allows, deterministic
    rng = np.random.default_rng(3)
    weights = {f"u{i:04d}": float(w) for i, w in enumerate(rng.pareto(1.5, 2000) * 10 + 1)}
    shards = plan_weighted_shards(weights, 3)
    assert sorted(sum(shards, [])) == sorted(weights) and shards == plan_weighted_shards(dict(reversed(weights.items())), 3)
    loads = [sum(weights[e] for e in s) for s in shards]
    assert max(loads) - min(loads) <= max(weights.values()) and plan_weighted_shards({}, 2) == []


def test_encodings_ignore_events_at_or_after_the_cutoff(store, dask_client, tmp_path):
    import shutil

    root = store.store_root
    cfg = encodings.EncodingConfig(hash_features=16, hash_window_days=7)
    runner.run_encodings(dask_client, root, [SUNDAY], START, cfg).raise_errors()
    clean = read_partition(root, encodings.ASSET, SUNDAY)
    leaky = tmp_path / "leaky"
    shutil.copytree(root, leaky)
    ev = read_partition(root, "raw_events", SUNDAY)
    leak = ev.sample(n=200, random_state=3).assign(ts=cutoff(SUNDAY), product_id="p00001")
    write_partition(pd.concat([ev, leak], ignore_index=True), leaky, "raw_events", SUNDAY)
    nxt = shift_day(SUNDAY, 1)
    write_partition(pd.concat([read_partition(root, "raw_events", nxt), leak], ignore_index=True), leaky, "raw_events", nxt)
    runner.run_encodings(dask_client, str(leaky), [SUNDAY], START, cfg).raise_errors()
    pd.testing.assert_frame_equal(clean, read_partition(leaky, encodings.ASSET, SUNDAY), check_exact=True)
