"""Smoke test of the benchmark harness: benchmark 1 at a tiny size, the three implementations agree.

A correctness test of the harness and of the engine against two references (DuckDB SQL
and Featuretools); it never asserts on timings.
"""

import pytest

from bench import windowed_features as wf
from bench.common import SIZES, Cluster, Context, MemorySampler, prepare_data


@pytest.fixture(scope="module")
def bench_ctx(tmp_path_factory):
    cluster = Cluster()
    sampler = MemorySampler()
    try:
        data = prepare_data(SIZES["tiny"], cluster.client, tmp_path_factory.mktemp("bench-tiny"), log=lambda *_: None)
        yield Context(cluster, sampler, data, log=lambda *_: None)
    finally:
        sampler.close()
        cluster.close()


def test_group_declares_the_benchmark_features():
    assert sorted(wf.GROUP.feature_names()) == sorted(wf.FEATURES)
    assert wf.GROUP.has_all_time and wf.GROUP.max_window_days == 30


def test_windowed_features_three_implementations_agree(bench_ctx):
    res = wf.run(bench_ctx)
    assert res.rows > 0
    # every implementation produced every (cutoff, active user) row and the same values
    for ag in res.agreements:
        assert ag.ok, ag.summary()
    assert {a.name.split(" vs ")[0] for a in res.agreements} >= {"project", "Featuretools"}
    # the report renders (figures are printed, never asserted)
    text = res.render()
    assert "Featuretools" in text and "DuckDB" in text
    for m in (res.project_full, res.project_one_day, res.duckdb_full, res.duckdb_one_day, res.featuretools):
        assert m.seconds > 0 and m.memory is not None and m.memory.peak > 0


def test_agreement_detects_a_wrong_count(bench_ctx):
    """The comparison is not vacuous: an off-by-one count is reported."""
    data = bench_ctx.data
    ref = wf._normalize(wf.duckdb_features(data.raw_glob, wf.cutoff_days(data)[-1:]), "cutoff")
    bad = ref.copy()
    bad.iloc[0, bad.columns.get_loc("view_count_7d")] += 1
    ag = wf.compare(ref, bad, "mutated")
    assert not ag.ok and ag.mismatches["view_count_7d"] == 1
    # the distinct count tolerates HLL error: +-2 on small counts
    near = ref.copy()
    near["distinct_products_viewed_30d"] += 2
    assert wf.compare(ref, near, "hll").ok


def test_machine_probe_builds_and_runs(tmp_path):
    import shutil

    from bench import machine_probe

    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    exe = machine_probe.build(tmp_path)
    # two at once, released together: each prints a positive time per step (the chase first checks
    # that it is one cycle through every line, and exits non-zero otherwise)
    for mode, size in (("alu", 0), ("stream", 1 << 20), ("chase", 1 << 20)):
        assert all(t > 0 for t in machine_probe.timed(exe, mode, size, 1, 2))
    # a probe that fails before its timed loop is an error naming it, not a number
    with pytest.raises(RuntimeError, match="probe chase 64: exit 3"):
        machine_probe.timed(exe, "chase", 64, 1, 1)
