"""``python -m bench [--size small|large]``: run every benchmark once and print the tables.

Later benchmarks: add ``(name, module)`` to ``BENCHMARKS``; a module provides
``run(ctx) -> result`` (with ``result.render() -> str``) and ``summary_rows(result)``
returning rows ``[benchmark, figure, value, target, met]`` for the final summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

from . import asof_join, candidates, memory_scaling, serving, windowed_features
from .common import RESULTS_DIR, SIZES, Cluster, Context, MemorySampler, prepare_data, table

BENCHMARKS = [
    ("windowed_features", windowed_features),
    ("memory_scaling", memory_scaling),
    ("serving", serving),
    ("candidates", candidates),
    ("asof_join", asof_join),
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=list(SIZES), default="small",
                   help="small (default, a couple of minutes on 2 cores), large (10M events), tiny (smoke)")
    p.add_argument("--only", choices=[n for n, _ in BENCHMARKS], action="append",
                   help="run only this benchmark (repeatable)")
    p.add_argument("--data-dir", help="where generated input data is cached (default bench/results/data/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print their tables and a summary, save the report; 1 if any failed."""
    args = _parse(argv)
    warnings.filterwarnings("ignore")
    size = SIZES[args.size]
    t_start = time.perf_counter()
    print(f"bench size={size.name}: {size.days} days x ~{size.events_per_day:,} events/day, {size.users:,} users; "
          f"LocalCluster 2 workers x 1 thread; {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f} (other processes compete for the CPUs when it exceeds the CPUs)")
    cluster = Cluster()
    sampler = MemorySampler()
    summary: list[list[str]] = []
    rendered: list[str] = []
    failed: list[str] = []
    try:
        data_root = Path(args.data_dir) / size.name if args.data_dir else None
        data = prepare_data(size, cluster.client, data_root)
        ctx = Context(cluster, sampler, data)
        for name, mod in BENCHMARKS:
            if args.only and name not in args.only:
                continue
            print(f"\n== {name}")
            try:
                res = mod.run(ctx)
                text = res.render()
                rows = mod.summary_rows(res)
            except Exception as e:  # one broken benchmark does not hide the others' figures
                traceback.print_exc()
                text = f"{name}: FAILED ({type(e).__name__}: {e})"
                rows = [[name, "FAILED", f"{type(e).__name__}", "", "NO"]]
                failed.append(name)
                if ctx.cluster.client is None or ctx.cluster.client.status != "running":
                    ctx.cluster.fresh()
            else:
                ctx.results[name] = res
            rendered.append(text)
            print()
            print(text)
            summary.extend(rows)
    finally:
        sampler.close()
        cluster.close()
    final = table(["benchmark", "figure", "value", "target", "met"], summary,
                  title=f"\nSUMMARY (size={size.name}, one run, total wall {time.perf_counter() - t_start:.0f} s "
                        f"including data preparation; load average now {os.getloadavg()[0]:.1f})")
    print(final)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench-{size.name}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    out.write_text("\n\n".join(rendered + [final]) + "\n")
    print(f"\n(report saved to {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
