"""Ingestion assets: raw_events (daily), users and products (dimension snapshots)."""


import time
from dataclasses import replace

import dagster as dg
import pyarrow.parquet as pq

from featurecore.config import SourceConfig
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.store import partition_dir
from resources import DaskResource, LandingZone, OfflineStore

from .metadata import per_day_table, preview, row_count, schema_metadata
from .partitions import daily_partitions

INGESTION_VERSION = "1"


def effective_config(landing: LandingZone, store: OfflineStore) -> SourceConfig:
    """The source config with the store root the run actually uses."""
    return replace(landing.source_config(), store_root=store.path(landing))


def _head(path, rows: int = 10):
    """Read only the first row group's head of a partition file for previews."""
    pf = pq.ParquetFile(path)
    if pf.metadata.num_rows == 0:
        return pf.schema_arrow.empty_table().to_pandas()
    return pf.read_row_group(0).slice(0, rows).to_pandas()


def ingest_days(days: list[str], cfg: SourceConfig, dask: DaskResource) -> list[dict]:
    """Ingest days on the cluster; days that receive rows routed from later days in the same batch are redone."""
    stats = {s["day"]: s for s in dask.run_all(ingest_events_day, days, cfg)}
    # Days ingested concurrently may have missed rows routed to them by a sibling day.
    redo = sorted({t for s in stats.values() for t in s["routed_to"] if t in stats})
    if redo:
        stats.update({s["day"]: s for s in dask.run_all(ingest_events_day, redo, cfg)})
    return [stats[d] for d in days]


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"dask", "parquet", "pandera"},
    code_version=INGESTION_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            "bad_row_share",
            asset="raw_events",
            blocking=True,
            partitions_def=daily_partitions,
            description="Fails the day when the share of quarantined (invalid) rows exceeds the configured threshold, or a landing folder is empty.",
        )
    ],
    description=(
        "Events of each UTC day: typed, deduplicated and validated against the event contract "
        "(Pandera). Rows are assigned to the day of their `ts` (late rows in a later folder are "
        "routed back); bad rows go to `quarantine/date=D` with a reason, file and column."
    ),
)
def raw_events(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone, store: OfflineStore):
    """Ingest the landing folders of the run's days into raw_events/date=D on Dask."""
    cfg = effective_config(landing, store)
    t0 = time.perf_counter()
    stats = ingest_days(list(context.partition_keys), cfg, dask)
    seconds = time.perf_counter() - t0
    rows = sum(s["rows"] for s in stats)
    read = sum(s["rows_read"] for s in stats)
    invalid = sum(s["invalid"] for s in stats)
    threshold = cfg.bad_row_threshold
    over = [s for s in stats if s["bad_share"] > threshold]
    empty = [s["day"] for s in stats if s["empty_folder"] or s["rows_read"] == 0]
    for s in stats:
        for ex in s["quarantine_examples"][:3]:
            context.log.warning(f"{s['day']}: quarantined {ex['source_file']} row {ex['row_number']} column {ex['column']}: {ex['reason']}")
    last = partition_dir(cfg.store_root, "raw_events", stats[-1]["day"]) / "part-0.parquet"
    head = _head(last)
    message = "ok"
    if over:
        worst = max(over, key=lambda s: s["bad_share"])
        message = (
            f"{len(over)} day(s) above the {threshold:.2%} bad-row threshold; worst {worst['day']}: "
            f"{worst['invalid']} of {worst['rows_read']} rows quarantined ({worst['bad_share']:.2%}); "
            f"first: {worst['quarantine_examples'][0]['source_file'] if worst['quarantine_examples'] else '?'} "
            f"column {worst['quarantine_examples'][0]['column'] if worst['quarantine_examples'] else '?'}: "
            f"{worst['quarantine_examples'][0]['reason'] if worst['quarantine_examples'] else ''}"
        )
    elif empty:
        message = f"empty landing folder(s) with no events: {', '.join(empty)}"
    check = dg.AssetCheckResult(
        check_name="bad_row_share",
        passed=not over and not empty,
        severity=dg.AssetCheckSeverity.ERROR if over else dg.AssetCheckSeverity.WARN,
        description=message,
        metadata={
            "threshold": threshold,
            "bad_share_max": max((s["bad_share"] for s in stats), default=0.0),
            "days_over_threshold": ", ".join(s["day"] for s in over) or "none",
            "empty_days": ", ".join(empty) or "none",
        },
    )
    in_run = set(context.partition_keys)
    # Targets inside this run were already redone by ingest_days; only outside ones need the sensor.
    routed = {
        s["day"]: {t: {"rows": n, "digest": s["routed_digest"][t]} for t, n in s["routed_to"].items() if t not in in_run}
        for s in stats
    }
    routed = {d: r for d, r in routed.items() if r}
    if len(stats) > 1:
        # A range run records the same metadata on every partition; per-day figures go in observations.
        for s in stats:
            context.log_event(dg.AssetObservation(
                asset_key=context.asset_key, partition=s["day"],
                metadata={"rows": s["rows"], "rows_read": s["rows_read"], "quarantined": s["quarantined"],
                          "duplicates": s["duplicates"], "bad_share": s["bad_share"]},
            ))
    return dg.MaterializeResult(
        metadata={
            **row_count(rows, len(stats)),
            "rows_read": read,
            "quarantined": sum(s["quarantined"] for s in stats),
            "invalid_rows": invalid,
            "duplicates": sum(s["duplicates"] for s in stats),
            "rows_routed_out": sum(s["rows_routed_out"] for s in stats),
            "routed_to": dg.MetadataValue.json(routed),
            "routed_in": dg.MetadataValue.json({s["day"]: s["routed_in_digests"] for s in stats if s["routed_in_digests"]}),
            "quarantine_reasons": dg.MetadataValue.json(_sum_dicts(s["quarantine_reasons"] for s in stats)),
            "days": len(stats),
            "bytes": sum(s["bytes"] for s in stats),
            "compute_seconds": round(seconds, 3),
            "events_per_second": round(read / seconds, 1) if seconds else 0.0,
            "per_day": per_day_table(stats, ["rows_read", "rows", "quarantined", "duplicates", "rows_routed_in", "rows_routed_out", "files"]),
            "dagster/column_schema": schema_metadata(head),
            "preview": preview(head),
            "path": dg.MetadataValue.path(str(partition_dir(cfg.store_root, "raw_events", stats[-1]["day"]).parent)),
        },
        check_results=[check],
    )


def _sum_dicts(dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _dimension_asset(table: str, key: str, description: str):
    @dg.asset(
        name=table,
        group_name="ingestion",
        kinds={"dask", "parquet", "pandera"},
        code_version=INGESTION_VERSION,
        description=description,
        check_specs=[dg.AssetCheckSpec("bad_row_share", asset=table, blocking=True,
                                       description=f"Fails when the share of quarantined {table} rows exceeds the threshold.")],
    )
    def _dim(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone, store: OfflineStore):
        cfg = effective_config(landing, store)
        t0 = time.perf_counter()
        stats = dask.run_all(ingest_dimension, [table], cfg)[0]
        from featurecore.ingest import read_snapshot

        head = read_snapshot(cfg.store_root, table).head(10)
        ok = stats["bad_share"] <= cfg.bad_row_threshold
        ex = stats["quarantine_examples"][0] if stats["quarantine_examples"] else None
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": stats["rows"],
                "quarantined": stats["quarantined"],
                "files": stats["files"],
                "columns": stats["columns"],
                "bytes": stats["bytes"],
                "compute_seconds": round(time.perf_counter() - t0, 3),
                "dagster/column_schema": schema_metadata(head),
                "preview": preview(head[head.columns[:12]]),
            },
            check_results=[dg.AssetCheckResult(
                check_name="bad_row_share", passed=ok,
                description="ok" if ok else f"{stats['quarantined']} {table} rows quarantined ({stats['bad_share']:.2%}); first: {ex['source_file']} column {ex['column']}: {ex['reason']}",
                metadata={"bad_share": stats["bad_share"], "threshold": cfg.bad_row_threshold},
            )],
        )

    return _dim


users = _dimension_asset("users", "user_id", "Users dimension snapshot (user_id plus any attributes), validated; bad rows quarantined.")
products = _dimension_asset("products", "product_id", "Products dimension snapshot (product_id, category, brand, price, …), validated; bad rows quarantined.")
