"""Serving assets: last-N item lists, the daily online-store materialization and its skew check.

- `user_recent_items` [daily]: per user the last viewed / purchased products as of the
  cutoff (`featurecore.recent_items`), carried day to day on a Dask worker.
- `online_features` [daily]: writes the latest feature rows of every served feature set
  (`featurecore.served_sets`: the defaults plus every published set) into the online
  store (SQLite by default, Redis when configured), one Dask task per set. A range run
  writes its days within the served sets' largest TTL, oldest first, then its last day
  (an entity missing from the last day keeps its latest row within the TTL). Static sources of
  a set (`users`, `users_wide` snapshots) are written for every snapshot entity with the
  day's cutoff and the training join's values at that time.
- `online_offline_skew` check: for a sample of entities, the online lookup at the day's
  cutoff against the offline value (the training-set as-of rule, recomputed from tiles for
  declared groups); mismatch rate per feature.
"""

import math
import time

import dagster as dg
import pandas as pd

from featurecore.groups import GROUPS
from featurecore.online_tasks import materialize_day, skew_check
from featurecore.recent_items import USER_RECENT_ITEMS, recent_items_range
from featurecore.served_sets import served_sets
from featurecore.store import partition_dir, read_partition
from featurecore.timeutil import shift_day
from featurecore.streaming_update import streaming_capable_features
from resources import DaskResource, LandingZone, OfflineStore
from resources.online_store import OnlineStoreResource

from .ingestion import effective_config
from .metadata import preview, row_count, schema_metadata
from .partitions import daily_partitions

RECENT = USER_RECENT_ITEMS
SKEW_CHECK = "online_offline_skew"


@dg.asset(
    name=RECENT.name,
    deps=[dg.AssetDep("raw_events")],
    group_name="features",
    kinds={"dask", "parquet"},
    code_version=RECENT.version,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description=f"{RECENT.description} Row for day D = state as of D+1 00:00 UTC (events with ts < cutoff); "
                f"keys {', '.join(RECENT.keys)}; TTL {RECENT.ttl}. Streamed by the online updater with the same functions.",
    metadata={
        "features": dg.MetadataValue.md("| feature | description |\n|---|---|\n" + "\n".join(
            f"| `{n}` | {d} |" for n, d in RECENT.feature_descriptions().items())),
        "keys": list(RECENT.keys),
        "ttl_seconds": int(RECENT.ttl.total_seconds()),
    },
)
def user_recent_items(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone,
                      store: OfflineStore) -> dg.MaterializeResult:
    """Last-N product lists per user, one Dask task carrying the state across the run's days."""
    cfg = effective_config(landing, store)
    days = list(context.partition_keys)
    t0 = time.perf_counter()
    stats = dask.client.submit(recent_items_range, days, RECENT, cfg.store_root, cfg.partition_start, pure=False).result()
    last = stats[-1]
    head = read_partition(cfg.store_root, RECENT.name, last["day"]).head(8)
    shown = head.assign(**{n: head[n].map(lambda v: ", ".join(map(str, v))) for n in RECENT.feature_names()})
    return dg.MaterializeResult(metadata={
        **row_count(sum(s["rows"] for s in stats), len(stats)),
        "days": len(stats),
        "events_read": sum(s["events"] for s in stats),
        "mean_list_length_last_day": dg.MetadataValue.json(last["mean_length"]),
        "bytes": sum(s["bytes"] for s in stats),
        "compute_seconds": round(sum(s["seconds"] for s in stats), 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "dagster/column_schema": schema_metadata(head),
        "preview": preview(shown),
        "path": dg.MetadataValue.path(str(partition_dir(cfg.store_root, RECENT.name, last["day"]).parent)),
    })


def _sets_table(results: list[dict]) -> str:
    rows = [{
        "feature set": f"{r['feature_set']} v{r['version']}", "entities": r["entities"], "rows": r["rows"],
        "written": r["written"], "KiB": round(r["bytes"] / 1024, 1), "seconds": round(r["seconds"], 3),
        "skipped sources": ", ".join(r["skipped_sources"]) or "-",
        "status now (present/missing/expired)": "/".join(str(r["status_now"].get(k, "-")) for k in ("present", "missing", "expired")),
    } for r in results]
    return pd.DataFrame(rows).to_markdown(index=False)


@dg.asset(
    name="online_features",
    deps=[dg.AssetDep(g) for g in GROUPS] + [dg.AssetDep(RECENT.name)],
    group_name="serving",
    kinds={"dask", "sqlite", "redis"},
    code_version="1",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="Latest values of every served feature set (the defaults user_core and user_realtime, plus every "
                "published set) in the online store, keyed by entity; SQLite inside the offline store by default, "
                "Redis when a URL is configured. Each value row carries its cutoff, so TTL applies at read time. "
                "A range run writes its days within the served sets' largest TTL, oldest first, then its last day.",
    check_specs=[dg.AssetCheckSpec(
        SKEW_CHECK, asset="online_features", partitions_def=daily_partitions,
        description="For a sample of entities, the online lookup at the day's cutoff against the offline value at "
                    "that time (the training-set rule: latest row with cutoff <= t within the TTL, recomputed from "
                    "tiles for declared groups); fails when a feature's mismatch rate exceeds the resource's "
                    "skew_threshold.",
    )],
)
def online_features(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone, store: OfflineStore,
                    online_store: OnlineStoreResource):
    """Materialize the served feature sets for the run's days within the TTL and its last day, then compare online with offline."""
    cfg = effective_config(landing, store)
    root = cfg.store_root
    day = max(context.partition_keys)
    url = online_store.resolved_url(root)
    sets = served_sets(root)
    t0 = time.perf_counter()
    # Earlier days of a range run first (upserts, oldest first): an entity missing from the last
    # day keeps its latest row within the TTL, which is what the training-set as-of join serves.
    ttl_days = max((math.ceil(t / 86400) for fs in sets for t in fs.ttl_seconds.values()), default=0)
    for earlier in sorted(d for d in context.partition_keys if shift_day(day, -ttl_days) <= d < day):
        dask.run_all(materialize_day, sets, earlier, root, url)
    results = dask.run_all(materialize_day, sets, day, root, url)
    wall = time.perf_counter() - t0
    first = next((r for r in results if r["preview"]), None)
    schema = dg.TableSchema(columns=[
        dg.TableColumn(f"{fs.name}.{f.qualified}", f.dtype, description=f.description) for fs in sets for f in fs.features
    ])
    yield dg.MaterializeResult(metadata={
        **row_count(sum(r["rows"] for r in results), len(context.partition_keys)),
        "dagster/column_schema": schema,
        "day": day,
        "days_in_run": len(context.partition_keys),
        "store": online_store.describe(root),
        "backend": results[0]["kind"] if results else "-",
        "feature_sets": dg.MetadataValue.md(_sets_table(results)),
        "rows_written": sum(r["written"] for r in results),
        "bytes_json": sum(r["bytes"] for r in results),
        "wall_seconds": round(wall, 3),
        "streaming_capable": dg.MetadataValue.json({f"{fs.name} v{fs.version}": streaming_capable_features(fs) for fs in sets}),
        "preview": dg.MetadataValue.md(
            f"`{first['feature_set']}` at the cutoff of {day}:\n\n" + pd.DataFrame(first["preview"]).to_markdown(index=False)
            if first else "_nothing written_"),
    })
    if dg.AssetCheckKey(dg.AssetKey("online_features"), SKEW_CHECK) not in context.selected_asset_check_keys:
        return
    skews = dask.run_all(skew_check, sets, day, root, url, sample=online_store.skew_sample)
    rates = {f"{s['feature_set']}.{k}": v for s in skews for k, v in s["mismatch_rate"].items()}
    worst = max(rates.values(), default=0.0)
    bad = {k: round(v, 4) for k, v in rates.items() if v > online_store.skew_threshold}
    examples = [e for s in skews for e in s["examples"]][:10]
    table = pd.DataFrame([
        {"feature set": f"{s['feature_set']} v{s['version']}", "sample": s["sample"], "population": s["population"],
         "at": s["at"], "recomputed rows": s["recomputed_rows"], "mismatches": s["mismatches"],
         "note": s.get("skipped", ""),
         "max rate": round(max(s["mismatch_rate"].values(), default=0.0), 4)}
        for s in skews
    ])
    yield dg.AssetCheckResult(
        asset_key="online_features",
        check_name=SKEW_CHECK,
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("online == offline for every sampled feature" if worst == 0 else
                     f"max mismatch rate {worst:.4f} (threshold {online_store.skew_threshold}); "
                     f"{len(bad)} feature(s) above it"),
        metadata={
            "per_set": dg.MetadataValue.md(table.to_markdown(index=False)),
            "max_mismatch_rate": float(worst),
            "threshold": float(online_store.skew_threshold),
            "features_above_threshold": dg.MetadataValue.json(bad),
            "mismatch_rate_per_feature": dg.MetadataValue.json({k: round(v, 4) for k, v in rates.items()}),
            "examples": dg.MetadataValue.json(examples),
        },
    )
