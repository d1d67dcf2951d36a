"""The factory that turns feature-group declarations into partitioned Dagster assets and checks.

For the declarations in `featurecore.groups.GROUPS` it builds:
- `feature_tiles`: one multi-asset with a `<group>_tiles` asset per group; each day's
  raw events are read once on a Dask worker and every selected group's tile written.
- `feature_groups`: one multi-asset with a `<group>` asset per group. A group's day D
  depends on its tiles D-N+1..D (`TimeWindowPartitionMapping`), never on raw events;
  all groups of a run are submitted to Dask together so they compute in parallel.
- per group a blocking `schema` check generated from the declaration (Pandera).
Adding a group is one declaration in `featurecore/groups.py`; nothing here changes.
"""

import time

import dagster as dg
import pandas as pd

from featurecore.groups import GROUPS as _GROUPS_BY_NAME
from featurecore.pipeline import features_range, plan_chunks, tile_day, tiles_asset
from featurecore.spec import FeatureGroup
from featurecore.store import partition_dir, read_partition
from resources import DaskResource, LandingZone, OfflineStore

from .check_results import Verdict, emit
from .ingestion import effective_config
from .metadata import preview, row_count, schema_metadata
from .partitions import daily_partitions

ENGINE_VERSION = "2"  # 2: numpy HLL and deterministic KLL sketch formats in tiles
GROUPS = list(_GROUPS_BY_NAME.values())


def code_version(group: FeatureGroup) -> str:
    """A group's code version: its declared version plus the engine's."""
    return f"{group.version}.{ENGINE_VERSION}"


def feature_list_md(group: FeatureGroup) -> str:
    """The group's features and their descriptions as a markdown table."""
    rows = [f"| `{n}` | {d} |" for n, d in group.feature_descriptions().items()]
    return "| feature | description |\n|---|---|\n" + "\n".join(rows)


def _tile_spec(g: FeatureGroup) -> dg.AssetSpec:
    deps = ["raw_events"] + (["products"] if g.enrich else [])
    return dg.AssetSpec(
        tiles_asset(g),
        deps=deps,
        group_name="tiles",
        kinds={"dask", "parquet"},
        code_version=code_version(g),
        partitions_def=daily_partitions,
        skippable=True,
        description=f"Per-(entity, day) mergeable partial aggregates of `{g.name}` (counts, sums, sums of squares, min/max, first/last ts, HLL and KLL sketches, category counts).",
        metadata={"keys": list(g.keys), "tile_columns": len(g.tile_columns)},
    )


def _group_spec(g: FeatureGroup) -> dg.AssetSpec:
    window = max(g.max_window_days, 1)
    return dg.AssetSpec(
        g.name,
        deps=[dg.AssetDep(tiles_asset(g), partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-(window - 1), end_offset=0))],
        group_name="features",
        kinds={"dask", "parquet", "pandera"},
        code_version=code_version(g),
        partitions_def=daily_partitions,
        skippable=True,
        description=f"{g.description} Row for day D = state as of D+1 00:00 UTC (events with ts < cutoff). Keys: {', '.join(g.keys)}; TTL {g.ttl}; version {g.version}.",
        metadata={
            "features": dg.MetadataValue.md(feature_list_md(g)),
            "keys": list(g.keys),
            "ttl_seconds": int(g.ttl.total_seconds()),
            "version": g.version,
            "max_window_days": g.max_window_days,
            "carries_all_time_state": g.has_all_time,
        },
    )


@dg.multi_asset(
    name="feature_tiles",
    specs=[_tile_spec(g) for g in GROUPS],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def feature_tiles(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone, store: OfflineStore):
    """Daily tiles of every selected group, one Dask task per day reading raw events once."""
    selected = [g for g in GROUPS if dg.AssetKey(tiles_asset(g)) in context.selected_asset_keys]
    root = effective_config(landing, store).store_root
    t0 = time.perf_counter()
    days = list(context.partition_keys)
    results = dask.run_all(tile_day, days, selected, root)
    seconds = time.perf_counter() - t0
    events = sum(r["events"] for r in results)
    for g in selected:
        per = [r["groups"][g.name] for r in results]
        head = read_partition(root, tiles_asset(g), days[-1]).head(5)
        yield dg.MaterializeResult(
            asset_key=tiles_asset(g),
            metadata={
                **row_count(sum(p["rows"] for p in per), len(days)),
                "days": len(days),
                "events_read": events,
                "bytes": sum(p["bytes"] for p in per),
                "compute_seconds": round(sum(p["seconds"] for p in per), 3),
                "wall_seconds_all_groups": round(seconds, 3),
                "dagster/column_schema": schema_metadata(head),
                "path": dg.MetadataValue.path(str(partition_dir(root, tiles_asset(g), days[-1]).parent)),
            },
        )


@dg.multi_asset(
    name="feature_groups",
    specs=[_group_spec(g) for g in GROUPS],
    check_specs=[
        dg.AssetCheckSpec(
            "schema",
            asset=g.name,
            blocking=True,
            partitions_def=daily_partitions,
            description="Pandera schema generated from the declaration: columns and types, non-null unique keys, counts >= 0, shares and frequencies in [0, 1], recency >= 0.",
        )
        for g in GROUPS
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
)
def feature_groups(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone, store: OfflineStore):
    """Feature partitions of every selected group, merged from tiles on Dask (groups in parallel)."""
    cfg = effective_config(landing, store)
    selected = [g for g in GROUPS if dg.AssetKey(g.name) in context.selected_asset_keys]
    days = list(context.partition_keys)
    t0 = time.perf_counter()
    # The groups share the workers; each chunk rebuilds its starting all-time state from tiles.
    n_workers = max(len(dask.client.scheduler_info()["workers"]), 1)
    futures = {
        g.name: [dask.client.submit(features_range, chunk, g, cfg.store_root, cfg.partition_start, pure=False)
                 for chunk in plan_chunks(days, g, n_workers, concurrent=len(selected), store_root=cfg.store_root)]
        for g in selected
    }
    for g in selected:
        stats = [s for part in dask.client.gather(futures[g.name]) for s in part]
        last = stats[-1]
        head = read_partition(cfg.store_root, g.name, last["day"]).head(10)
        nulls = pd.DataFrame([s["null_share"] for s in stats]).mean().round(4)
        yield dg.MaterializeResult(
            asset_key=g.name,
            metadata={
                **row_count(sum(s["rows"] for s in stats), len(stats)),
                "entities_last_day": last["entities"],
                "days": len(stats),
                "features": len(g.feature_names()),
                "bytes": sum(s["bytes"] for s in stats),
                "compute_seconds": round(sum(s["seconds"] for s in stats), 3),
                "wall_seconds": round(time.perf_counter() - t0, 3),
                "null_share": dg.MetadataValue.md(nulls.rename("null share (mean over days)").to_frame().to_markdown()),
                "feature_list": dg.MetadataValue.md(feature_list_md(g)),
                "dagster/column_schema": schema_metadata(head),
                "preview": preview(head[head.columns[:14]]),
                "path": dg.MetadataValue.path(str(partition_dir(cfg.store_root, g.name, last["day"]).parent)),
            },
        )
        if dg.AssetCheckKey(dg.AssetKey(g.name), "schema") not in context.selected_asset_check_keys:
            continue
        # one evaluation per partition, also in range runs (see check_results.py)
        per_day = {
            s["day"]: Verdict(not s["schema_errors"],
                              "ok" if not s["schema_errors"] else f"{len(s['schema_errors'])} schema failure(s); first: {s['schema_errors'][0]}",
                              metadata={"failures": dg.MetadataValue.md("\n".join(f"- {e}" for e in s["schema_errors"][:20]) or "none")})
            for s in stats
        }
        yield from emit(context, g.name, "schema", per_day, blocking=True)
