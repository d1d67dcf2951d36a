"""Benchmarks of the feature engine against reference implementations.

Run ``python -m bench`` (or ``make bench``; ``--size large`` / ``SIZE=large`` for 10M+
events). Every figure printed comes from the one invocation; nothing is cached except
the generated and ingested input data (``bench/results/data/``, ingestion is never
timed). Modules:

- ``bench.common``: sizes, data preparation, the LocalCluster, the memory sampler,
  table printing.
- ``bench.windowed_features``: benchmark 1, point-in-time windowed user features for
  the last 7 day-ends, this project vs DuckDB vs Featuretools, with an agreement check.
- ``bench.memory_scaling``: benchmark 2, peak memory of a 30- vs 90-day backfill and the
  per-day feature cost of 30-day vs 1-day windows.

New benchmarks: add a module with a ``run(ctx) -> BenchResult`` function and list it in
``bench.__main__.BENCHMARKS``.
"""
