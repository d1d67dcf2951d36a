"""`make demo`: generate the demo world, then materialize the whole graph for its date range.

Runs go through the real Dagster instance in $DAGSTER_HOME, so `make ui` shows them
afterwards. One LocalCluster serves every run of the demo.
"""

import argparse
import os
import time
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd

from featurecore import demo_data
from featurecore.config import load_source_config
from featurecore.timeutil import shift_day

# Preview APIs (partitioned checks, backfill policies) warn on every use; the demo output is for people.
warnings.simplefilter("ignore")


def run_demo(days: int, users: int, events_per_day: int, regenerate: bool) -> dict:
    """Generate the data if needed and materialize dimensions then the daily range in one run."""
    from distributed import Client

    from feature_assets.definitions import defs
    from resources.local_cluster import start_local_cluster

    cfg = load_source_config()
    landing = Path(cfg.landing_root)
    demo_cfg = demo_data.DemoConfig(start=cfg.partition_start, days=days, users=users, events_per_day=events_per_day,
                                    wide_columns=300)
    t0 = time.perf_counter()
    if regenerate or not (landing / "events").is_dir():
        summary = demo_data.generate(landing, demo_cfg)
        print(f"generated demo data: {summary}")
    from .selection_demo import ensure_wide_table, print_selection, run_selection_step

    ensure_wide_table(landing, demo_cfg)  # a landing zone without the wide table, or from an older generator
    gen_s = time.perf_counter() - t0
    start, end = cfg.partition_start, shift_day(cfg.partition_start, days - 1)

    instance = dg.DagsterInstance.get()
    with start_local_cluster(2, 1, memory_limit=None) as cluster, Client(cluster):
        os.environ["DASK_SCHEDULER_ADDRESS"] = cluster.scheduler_address
        t1 = time.perf_counter()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        dims = defs.resolve_job_def("dimensions").execute_in_process(instance=instance, run_config=quiet)
        assert dims.success, "dimensions run failed"
        # tsfresh's default EfficientFCParameters takes ~3 min per weekly partition of the demo's
        # ~2,600 active users on 2 workers; the demo uses MinimalFCParameters (bench/candidates.py measures Efficient).
        demo_candidates = {"ops": {"tsfresh_candidates": {"config": {"parameters": "minimal"}}}}
        daily = defs.resolve_job_def("daily_features").execute_in_process(
            instance=instance,
            run_config={**quiet, **demo_candidates},
            tags={
                "dagster/asset_partition_range_start": start,
                "dagster/asset_partition_range_end": end,
            },
            raise_on_error=False,
        )
        run_s = time.perf_counter() - t1
        # Labels, point-in-time training sets, profiles and cost-aware selection over the demo's label days.
        selection = run_selection_step(defs, instance, quiet) if daily.success else {}
    rows = {}
    for ev in daily.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        key = "dagster/row_count" if "dagster/row_count" in mat.metadata else "rows_in_run"
        rows[mat.asset_key.to_user_string()] = mat.metadata[key].value if key in mat.metadata else None
    checks = [(e.asset_key.to_user_string(), e.check_name, e.passed) for e in daily.get_asset_check_evaluations()]
    print()
    print(f"Demo range {start} .. {end} ({days} days); DAGSTER_HOME={os.environ.get('DAGSTER_HOME')}")
    print(f"  data generation {gen_s:.1f}s, materialization {run_s:.1f}s, run {daily.run_id} {'succeeded' if daily.success else 'FAILED'}")
    print(pd.DataFrame({"asset": list(rows), "rows": list(rows.values())}).to_string(index=False))
    failed = [c for c in checks if not c[2]]
    print(f"  checks: {len(checks) - len(failed)} passed, {len(failed)} failed {failed if failed else ''}")
    if daily.success:
        print_selection(selection, demo_cfg.wide_columns)
    print("  browse it: make ui  (http://127.0.0.1:3000)")
    if not daily.success or not selection.get("success"):
        raise SystemExit(1)
    return {"rows": rows, "checks": checks}


def main() -> None:
    """CLI entry point of the demo."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--events-per-day", type=int, default=20000)
    ap.add_argument("--regenerate", action="store_true", help="rewrite the landing zone even if it exists")
    a = ap.parse_args()
    run_demo(a.days, a.users, a.events_per_day, a.regenerate)


if __name__ == "__main__":
    main()
