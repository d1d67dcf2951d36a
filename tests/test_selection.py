"""Cost-aware selection on a synthetic training set whose signal, noise, redundancy and costs are known."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurecore.feature_sets import FeatureRef, FeatureSet, load
from featurecore.selection import (
    SelectionConfig, combine_importance, correlated_pairs, cv_folds, decide_features, prune_redundant, importance_fold, load_frame, publish, run_selection,
    screen, selected_feature_set, univariate_pvalue,
)
from featurecore.training import TRAINING_ROOT

N_ENT, N_DAYS, DELAY = 600, 30, 3
NOISE = [f"static.noise_{i:02d}" for i in range(30)]
INFORMATIVE = ["grp.signal", "static.inf", "static.tier"]


def synthetic(seed: int = 0) -> pd.DataFrame:
    """Rows (entity, day): y depends on a per-entity latent z and a per-row signal s; the rest is noise or redundant."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=N_ENT)
    ent = np.repeat(np.arange(N_ENT), N_DAYS)
    day = np.tile(np.arange(N_DAYS), N_ENT)
    s = rng.normal(size=len(ent))
    y = (rng.random(len(ent)) < 1 / (1 + np.exp(-(1.6 * z[ent] + 1.2 * s - 0.5)))).astype(float)
    df = pd.DataFrame({
        "user_id": np.array([f"u{i:04d}" for i in range(N_ENT)])[ent],
        "label_ts": pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta(day, unit="D"),
        "label": y,
        "grp.signal": s + rng.normal(0, 0.3, len(ent)),
        "grp.noise_a": rng.normal(size=len(ent)),
        "grp.noise_b": rng.uniform(size=len(ent)),
        "static.inf": (z + rng.normal(0, 0.6, N_ENT))[ent],
        "static.tier": np.array(["low", "mid", "high"], dtype=object)[np.digitize(z + rng.normal(0, 0.5, N_ENT), [-0.5, 0.5])][ent],
        "static.const": 1.0,
        "cand.dup": s + rng.normal(0, 0.3, len(ent)) * 0.05 + rng.normal(0, 0.3, len(ent)),
    })
    df["cand.dup"] = df["grp.signal"] * 1.001 + rng.normal(0, 0.01, len(ent))  # redundant with grp.signal
    for c in NOISE:
        df[c] = rng.normal(size=N_ENT)[ent]
    df.loc[rng.random(len(df)) < 0.1, "grp.noise_a"] = np.nan
    return df


def write_training_set(store_root: Path, name: str, df: pd.DataFrame) -> list[str]:
    """Write a frame in the training-set layout (one partition per label day) with a minimal manifest."""
    days = []
    for d, part in df.groupby(df["label_ts"].dt.strftime("%Y-%m-%d")):
        folder = store_root / TRAINING_ROOT / name / f"date={d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / "part-0.parquet")
        days.append(d)
    (store_root / TRAINING_ROOT / name / "manifest.json").write_text(json.dumps({"name": name, "days": days}))
    return [c for c in df.columns if "." in c]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("sel")
    feats = write_training_set(root, "syn", synthetic())
    return str(root), feats


def test_univariate_tests_detect_signal_and_not_noise():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.4).astype(float)
    assert univariate_pvalue(pd.Series(y + rng.normal(0, 1, 2000)), y, False, True) < 1e-10
    assert univariate_pvalue(pd.Series(rng.normal(size=2000)), y, False, True) > 1e-3
    cat = pd.Series(np.where(y > 0, rng.choice(["a", "b"], 2000, p=[0.7, 0.3]), rng.choice(["a", "b"], 2000, p=[0.3, 0.7])))
    assert univariate_pvalue(cat, y, True, True) < 1e-10


def test_screen_and_importance_keep_signal_and_drop_noise(syn):
    root, feats = syn
    cfg = SelectionConfig(seed=3)
    fr = load_frame(root, "syn", feats, "user_id", cfg)
    assert fr.binary and fr.categorical == ["static.tier"]
    scr = screen(fr, cfg)
    assert scr["constant"] == ["static.const"]
    # one row per entity: a per-entity noise attribute is not "significant" just because it repeats 30 times
    assert scr["sample_rows"] <= N_ENT
    assert set(INFORMATIVE) <= set(scr["relevant"])
    assert len(set(NOISE) & set(scr["relevant"])) <= 1
    costs = {"cand.dup": 50.0}
    pairs = correlated_pairs(fr, scr["relevant"], cfg.corr_threshold)
    assert [p[:2] for p in pairs] == [("grp.signal", "cand.dup")]
    cands, redundant = prune_redundant(scr["relevant"], pairs, scr["pvalue"], costs, cfg)
    assert "cand.dup" not in cands and "cheaper" in redundant["cand.dup"]
    imp = combine_importance([importance_fold(fr, cands, cfg, DELAY, k) for k in range(2)], cands, True)
    kept, dropped = decide_features(scr, imp, costs, cfg, redundant)
    assert set(INFORMATIVE) <= set(kept)
    assert not set(NOISE) & set(kept)
    assert "cand.dup" not in kept and "grp.signal" in kept
    assert dropped["static.const"] == "constant"
    assert all(c in dropped for c in NOISE)


def test_cv_folds_leave_a_gap_of_the_label_delay():
    from featurecore.selection import Frame

    fr = Frame(X=pd.DataFrame(), y=np.zeros(0), ts=pd.Series([], dtype="datetime64[ns, UTC]"), day=np.zeros(0),
               split=np.zeros(0), fold=np.zeros(0), entity=np.zeros(0), days=[str(i) for i in range(24)], binary=True)
    folds = cv_folds(fr, SelectionConfig(n_folds=3, min_train_days=5), delay_days=7)
    assert len(folds) == 3
    for f in folds:
        assert f["valid_days"][0] - f["train_days"][1] - 1 >= 7  # no training label's horizon reaches validation
    assert folds[-1]["valid_days"][1] == 23


def test_run_selection_on_dask_validates_publishes_and_is_reproducible(syn, dask_client):
    root, feats = syn
    baseline = [c for c in feats if c.startswith("grp.")]
    families = {c: c.split(".")[0] for c in feats}
    cfg = SelectionConfig(seed=11)
    kw = dict(costs={"cand.dup": 50.0}, families=families, family_costs={"cand": 50.0, "grp": 1.0}, cfg=cfg)
    res = run_selection(dask_client, root, "syn", feats, baseline, "user_id", DELAY, **kw)
    assert set(INFORMATIVE) <= set(res["selected"]) and not set(NOISE) & set(res["selected"])
    cv = res["cv"]
    # the static attributes carry the per-user latent: the selected set must beat the baseline on held-out users
    assert cv["selected"]["mean"] > cv["baseline"]["mean"] + 0.01
    assert cv["baseline + static"]["mean"] > cv["baseline"]["mean"]
    assert set(res["family_gain"]) == {"grp", "static"}
    again = run_selection(dask_client, root, "syn", feats, baseline, "user_id", DELAY, **kw)
    assert again["selected"] == res["selected"] and again["cv"] == res["cv"]
    assert again["importance"]["permutation"] == res["importance"]["permutation"]

    cand = FeatureSet("syn_candidates", "0", ("user_id",),
                      tuple(FeatureRef(c.split(".")[0], c.split(".", 1)[1], "object" if c == "static.tier" else "float64") for c in feats),
                      ttl_seconds={"grp": 86_400 * 3, "cand": 86_400 * 7})
    costs = {c: {"seconds_per_day": 50.0 if c == "cand.dup" else 0.0, "bytes_per_day": 10.0} for c in feats}
    fs1 = publish(selected_feature_set(cand, res, costs, families, name="syn_selected"), root)
    assert fs1.version == "1" and load(root, "syn_selected").version == "1"
    info = load(root, "syn_selected").info
    assert set(info["importances"]) == set(res["selected"]) and info["metrics"]["cv_gain"] > 0.01
    assert info["dropped"]["static.const"] == "constant" and "static" in info["static_sources"]
    assert publish(selected_feature_set(cand, again, costs, families, name="syn_selected"), root).version == "1"
    fewer = dict(res, selected=res["selected"][:-1])
    assert publish(selected_feature_set(cand, fewer, costs, families, name="syn_selected"), root).version == "2"


def test_decision_costs_are_recorded_once_and_ignore_timing_jitter(tmp_path):
    from featurecore.selection import decision_costs, quantize_cost, read_cost_basis

    families = {"grp.a": "grp", "grp.b": "grp", "cand.x": "cand:dfs", "cand.y": "cand:dfs", "static.s": "static"}
    versions = {"grp": "group v1", "cand": "artifact a1", "static": "static"}
    measured = {"grp.a": 0.02, "grp.b": 0.02, "cand.x": 0.3, "cand.y": 0.3, "static.s": 0.0}
    first = decision_costs(str(tmp_path), measured, families, versions)
    assert set(first["recorded"]) == {"grp", "cand:dfs", "static"}
    assert first["families"] == {"grp": quantize_cost(0.04), "cand:dfs": quantize_cost(0.6), "static": 0.0}
    assert first["features"]["cand.x"] == quantize_cost(0.3) and first["features"]["static.s"] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):  # a loaded machine: every timing off by up to 3x either way
        jittered = {k: v * float(np.exp(rng.uniform(-np.log(3), np.log(3)))) for k, v in measured.items()}
        again = decision_costs(str(tmp_path), jittered, families, versions)
        assert again["recorded"] == [] and again["features"] == first["features"] and again["families"] == first["families"]
    # the jitter alone would have moved costs across half-decade steps
    assert quantize_cost(0.3 * 3) != quantize_cost(0.3) and quantize_cost(0.04 / 3) != quantize_cost(0.04)
    # a new source version (new candidate artifacts) is measured again; nothing else is
    bumped = decision_costs(str(tmp_path), {k: v * 10 for k, v in measured.items()}, families, {**versions, "cand": "artifact a2"})
    assert bumped["recorded"] == ["cand:dfs"] and bumped["families"]["cand:dfs"] == quantize_cost(6.0)
    assert bumped["families"]["grp"] == first["families"]["grp"]
    assert read_cost_basis(str(tmp_path))["cand:dfs"]["source_version"] == "artifact a2"
    assert decision_costs(str(tmp_path), measured, families, versions, remeasure=True)["recorded"] == sorted(set(families.values()))


def test_selection_twice_with_jittered_timings_gives_identical_results(syn, dask_client, tmp_path):
    """Two runs on the same candidate set, each with its own measured timings, decide the same."""
    from featurecore.selection import decision_costs

    root, feats = syn
    families = {c: c.split(".")[0] for c in feats}
    versions = {"grp": "group v1", "cand": "artifact 1", "static": "static"}
    baseline = [c for c in feats if c.startswith("grp.")]
    rng = np.random.default_rng(5)
    runs = []
    for _ in range(2):
        measured = {c: (40.0 if c == "cand.dup" else 0.02 if c.startswith("grp.") else 0.0) * float(rng.uniform(0.3, 3.0))
                    for c in feats}
        dec = decision_costs(str(tmp_path), measured, families, versions)
        runs.append(run_selection(dask_client, root, "syn", feats, baseline, "user_id", DELAY, costs=dec["features"],
                                  families=families, family_costs=dec["families"], cfg=SelectionConfig(seed=4)))
    a, b = runs
    assert a["selected"] == b["selected"] and a["dropped"] == b["dropped"]
    assert a["cv"] == b["cv"] and a["importance"]["permutation"] == b["importance"]["permutation"]
    assert a["screen"]["qvalue"] == b["screen"]["qvalue"] and a["family_value"] == b["family_value"]
    assert "cand.dup" not in a["selected"] and "cheaper" in a["dropped"]["cand.dup"]


def planted_world(n_users: int = 1500, n_days: int = 20, wide: int = 60, seed: int = 7) -> pd.DataFrame:
    """Label rows over the demo generator's users and users_wide table; the label follows the hidden propensity.

    ``grp.behaviour`` is a per-row noisy view of the whole propensity (what the demo's
    behaviour features reveal), so a planted column is only worth keeping for what it adds.
    """
    from featurecore import demo_data as dd

    cfg = dd.DemoConfig(users=n_users, wide_columns=wide, seed=seed)
    users, _, lat = dd._world(cfg.seed, cfg.users, cfg.products, cfg.start)
    w = dd.build_users_wide(cfg)
    rng = np.random.default_rng(seed)
    ent = np.repeat(np.arange(n_users), n_days)
    prop = lat.propensity[ent]
    y = (rng.random(len(ent)) < 1 / (1 + np.exp(-(prop - 0.5 + rng.normal(0, 0.5, len(ent)))))).astype(float)
    df = pd.DataFrame({"user_id": users["user_id"].to_numpy()[ent],
                       "label_ts": pd.Timestamp("2026-09-01", tz="UTC") + pd.to_timedelta(np.tile(np.arange(n_days), n_users), unit="D"),
                       "label": y, "grp.behaviour": prop + rng.normal(0, 0.5, len(ent))})
    for c in w.columns[1:]:
        df[f"users_wide.{c}"] = w[c].to_numpy()[ent]
    return df


def test_planted_wide_columns_are_kept_and_noise_dropped(dask_client, tmp_path):
    """The generator's planted users_wide columns survive selection; its noise and constant columns do not.

    Every planted column also sees a part of the propensity that no other column has
    (``demo_data.build_users_wide``); when they all measured the same latent, two of five
    showed no permutation importance next to a good behaviour proxy, as in the demo.
    """
    from featurecore import demo_data as dd

    feats = write_training_set(tmp_path, "planted", planted_world())
    sig = dd.planted_signal(60)["wide"]
    informative = [f"users_wide.{c}" for c in sig["informative"]]
    junk = [f"users_wide.{c}" for c in sig["noise"] + sig["constant"]]
    res = run_selection(dask_client, str(tmp_path), "planted", feats, ["grp.behaviour"], "user_id", 3,
                        families={c: c.split(".")[0] for c in feats}, cfg=SelectionConfig(seed=7))
    assert set(informative) <= set(res["selected"]), {c: res["dropped"].get(c) for c in informative}
    assert not set(junk) & set(res["selected"])
    assert all(res["dropped"][f"users_wide.{c}"] == "constant" for c in sig["constant"])
