"""The as-of join against a brute-force per-row lookup (hypothesis), TTL included, and against pandas merge_asof."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore.asof import EXPIRED, MATCHED, MISSING, asof_indices, asof_join, brute_force_asof

BASE = pd.Timestamp("2026-09-01", tz="UTC")


@st.composite
def frames(draw):
    """Random labels and feature rows: few entities and times so that ties, gaps and expiries all occur."""
    n_ent = draw(st.integers(1, 5))
    ents = [f"u{i}" for i in range(n_ent)] + ["ghost"]  # labels may name an entity with no feature rows
    m = draw(st.integers(0, 25))
    n = draw(st.integers(0, 25))
    hours = st.integers(0, 24 * 12)
    f = pd.DataFrame({
        "user_id": draw(st.lists(st.sampled_from(ents[:-1]), min_size=m, max_size=m)),
        "cutoff": pd.Series([BASE + pd.Timedelta(hours=h) for h in draw(st.lists(hours, min_size=m, max_size=m))],
                            dtype="datetime64[ns, UTC]"),
        "x": draw(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))), min_size=m, max_size=m)),
        "s": draw(st.lists(st.sampled_from(["a", "b", None]), min_size=m, max_size=m)),
    })
    lab = pd.DataFrame({
        "user_id": draw(st.lists(st.sampled_from(ents), min_size=n, max_size=n)),
        "label_ts": pd.Series([BASE + pd.Timedelta(hours=h) for h in draw(st.lists(hours, min_size=n, max_size=n))],
                              dtype="datetime64[ns, UTC]"),
    })
    ttl = draw(st.sampled_from([None, pd.Timedelta(0), pd.Timedelta(hours=5), pd.Timedelta(days=2), pd.Timedelta(days=30)]))
    return lab, f, ttl


def _same(a: pd.Series, b: pd.Series) -> bool:
    a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    both_null = a.isna() & b.isna()
    eq = pd.Series([x == y for x, y in zip(a, b)], dtype=bool) if len(a) else pd.Series([], dtype=bool)
    return bool((both_null | eq).all())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_asof_join_equals_brute_force(data):
    lab, f, ttl = data
    got = asof_join(lab, f, ["user_id"], ["x", "s"], ttl, with_cutoff=True)
    ref = brute_force_asof(lab, f, ["user_id"], ["x", "s"], ttl)
    assert len(got) == len(lab)  # every label row is kept
    assert _same(got["x"], ref["x"].astype(float))
    assert _same(got["s"], ref["s"])
    for dense in (True, False):  # the table lookup and the sorted search give the same rows
        idx, status = asof_indices([lab["user_id"]], lab["label_ts"], [f["user_id"]], f["cutoff"], ttl, dense=dense)
        assert (status == ref["_status"].to_numpy()).all()
        if dense:
            first = idx
        else:
            assert (idx == first).all()
    used = got["cutoff"].dropna()
    # never a row from after label_ts, never one older than the TTL
    assert (used <= lab.loc[used.index, "label_ts"]).all()
    if ttl is not None:
        assert (used >= lab.loc[used.index, "label_ts"] - ttl).all()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_multi_key_join_equals_brute_force(data):
    rng_seed = data.draw(st.integers(0, 10_000))
    rng = np.random.default_rng(rng_seed)
    m, n = data.draw(st.integers(0, 40)), data.draw(st.integers(1, 30))
    f = pd.DataFrame({
        "user_id": rng.choice(["u1", "u2", "u3"], m), "product_id": rng.choice(["p1", "p2"], m),
        "cutoff": BASE + pd.to_timedelta(rng.integers(0, 10, m), unit="D"), "x": rng.normal(size=m),
    })
    lab = pd.DataFrame({
        "user_id": rng.choice(["u1", "u2", "u3", "u4"], n), "product_id": rng.choice(["p1", "p2", "p3"], n),
        "label_ts": BASE + pd.to_timedelta(rng.integers(0, 12 * 24, n), unit="h"),
    })
    ttl = pd.Timedelta(days=int(rng.integers(0, 4)))
    got = asof_join(lab, f, ["user_id", "product_id"], ["x"], ttl)
    ref = brute_force_asof(lab, f, ["user_id", "product_id"], ["x"], ttl)
    assert _same(got["x"], ref["x"].astype(float))


def test_rows_without_a_feature_row_within_ttl_are_kept_with_nulls():
    """The case Feast's file offline store gets wrong: the entity has rows, but none inside the TTL."""
    f = pd.DataFrame({"user_id": ["a", "a", "b"], "cutoff": [BASE, BASE + pd.Timedelta(days=1), BASE],
                      "x": [1.0, 2.0, 3.0]})
    lab = pd.DataFrame({"user_id": ["a", "a", "a", "b", "c", "a"],
                        "label_ts": [BASE + pd.Timedelta(days=1), BASE + pd.Timedelta(days=3),
                                     BASE + pd.Timedelta(days=5), BASE + pd.Timedelta(days=2),
                                     BASE + pd.Timedelta(days=1), BASE - pd.Timedelta(hours=1)]})
    got = asof_join(lab, f, ["user_id"], ["x"], pd.Timedelta(days=2))
    # exactly-at-cutoff is used; exactly-TTL-old is used; older is null; unknown entity null; before any row null
    assert got["x"].tolist()[:2] == [2.0, 2.0]
    assert np.isnan(got["x"].iloc[2]) and got["x"].iloc[3] == 3.0 and np.isnan(got["x"].iloc[4]) and np.isnan(got["x"].iloc[5])
    _, status = asof_indices([lab["user_id"]], lab["label_ts"], [f["user_id"]], f["cutoff"], pd.Timedelta(days=2))
    assert status.tolist() == [MATCHED, MATCHED, EXPIRED, MATCHED, MISSING, MISSING]
    assert len(got) == len(lab)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000))
def test_agrees_with_pandas_merge_asof(seed):
    """Same rule as `merge_asof(direction='backward', tolerance=ttl, allow_exact_matches=True)` on unique cutoffs."""
    rng = np.random.default_rng(seed)
    users = [f"u{i}" for i in range(8)]
    f = pd.DataFrame([(u, BASE + pd.Timedelta(days=d)) for u in users for d in range(10) if rng.random() < 0.6],
                     columns=["user_id", "cutoff"])
    f["x"] = rng.normal(size=len(f))
    lab = pd.DataFrame({"user_id": rng.choice(users + ["zz"], 60),
                        "label_ts": BASE + pd.to_timedelta(rng.integers(0, 12 * 24, 60), unit="h")})
    ttl = pd.Timedelta(days=int(rng.integers(0, 5)))
    ours = asof_join(lab, f, ["user_id"], ["x"], ttl)
    ref = pd.merge_asof(lab.reset_index().sort_values("label_ts"), f.sort_values("cutoff"), left_on="label_ts",
                        right_on="cutoff", by="user_id", tolerance=ttl, direction="backward").set_index("index").sort_index()
    assert _same(ours["x"], ref["x"])


def test_mismatched_key_types_are_compared_as_strings():
    f = pd.DataFrame({"k": [1, 2], "cutoff": [BASE, BASE], "x": [1.0, 2.0]})
    lab = pd.DataFrame({"k": ["2", "3"], "label_ts": [BASE, BASE]})
    got = asof_join(lab, f, ["k"], ["x"], None)
    assert got["x"].iloc[0] == 2.0 and np.isnan(got["x"].iloc[1])


def test_null_timestamps_are_rejected():
    f = pd.DataFrame({"k": ["a"], "cutoff": [BASE], "x": [1.0]})
    lab = pd.DataFrame({"k": ["a"], "label_ts": pd.Series([pd.NaT], dtype="datetime64[ns, UTC]")})
    with pytest.raises(ValueError, match="null timestamps"):
        asof_join(lab, f, ["k"], ["x"], None)


def test_bench_implementations_agree_on_tiny_data(dask_client, tmp_path):
    """The benchmark's three implementations (project on Dask, DuckDB, merge_asof) produce the same rows (no timing asserted)."""
    from types import SimpleNamespace

    from bench import asof_join
    from bench.common import SIZES

    ctx = SimpleNamespace(data=SimpleNamespace(size=SIZES["tiny"], root=str(tmp_path / "data")), client=dask_client,
                          log=lambda *_: None)
    res = asof_join.run(ctx)
    assert res.label_rows > 10_000 and all(res.agree.values())
    assert 0.5 < res.matched_share < 1.0  # some rows expire under the TTL and are kept with nulls
    assert "DuckDB" in res.render() or "duckdb" in res.render()
