"""Jobs, the daily schedule, and sensors on the landing zone and on late data."""


import hashlib
import json
from pathlib import Path

import dagster as dg

from featurecore.config import load_source_config
from featurecore.ingest import list_files

from .partitions import daily_partitions

daily_job = dg.define_asset_job(
    "daily_features",
    # Labels, training sets and selection cover ranges of label days, not one day: they run in train_and_select.
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets("users", "products") - dg.AssetSelection.groups("training", "selection"),
    partitions_def=daily_partitions,
    description="Every daily-partitioned asset for one day (or a range, in one run): ingestion, tiles, feature groups.",
)
dimensions_job = dg.define_asset_job(
    "dimensions",
    selection=dg.AssetSelection.assets("users", "products"),
    description="Refresh the users and products dimension snapshots.",
)

daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_job,
    hour_of_day=1,
    minute_of_hour=0,
    name="daily_features_schedule",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def folder_fingerprint(folder: Path, file_format: str) -> str:
    """A short hash of the names, sizes and mtimes of a folder's data files (no data is read)."""
    h = hashlib.sha1()
    for f in list_files(folder, file_format):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def scan_landing(landing_root: str, file_format: str) -> dict[str, str]:
    """Fingerprint of every day folder and dimension folder in the landing zone."""
    root = Path(landing_root)
    out = {}
    events = root / "events"
    if events.is_dir():
        for d in sorted(p for p in events.iterdir() if p.is_dir()):
            out[d.name] = folder_fingerprint(d, file_format)
    for table in ("users", "products"):
        if (root / table).is_dir():
            out[table] = folder_fingerprint(root / table, file_format)
    return out


@dg.sensor(
    jobs=[daily_job, dimensions_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a daily run for each new or changed landing folder (late or corrected data), and a dimensions run when users/products change.",
)
def landing_sensor(context: dg.SensorEvaluationContext):
    """Compare folder fingerprints with the cursor and request runs for what is new or changed."""
    cfg = load_source_config()
    seen = json.loads(context.cursor) if context.cursor else {}
    now = scan_landing(cfg.landing_root, cfg.file_format)
    valid = set(daily_partitions.get_partition_keys(dynamic_partitions_store=None))
    requests = []
    dims_changed = sorted(k for k in ("users", "products") if k in now and seen.get(k) != now[k])
    if dims_changed:
        # one run refreshes both dimension tables
        requests.append(dg.RunRequest(run_key="dims:" + ":".join(now.get(k, "") for k in ("users", "products")), job_name=dimensions_job.name))
    for key, fp in now.items():
        if seen.get(key) == fp or key in ("users", "products"):
            continue
        if key in valid and fp != folder_fingerprint(Path("/nonexistent"), cfg.file_format):
            requests.append(dg.RunRequest(run_key=f"{key}:{fp}", partition_key=key, job_name=daily_job.name))
        else:
            context.log.info(f"ignoring landing folder {key}: not a partition of {daily_partitions.start.date()}..yesterday or empty")
    context.update_cursor(json.dumps(now, sort_keys=True))
    if not requests:
        return dg.SkipReason("no new or changed landing folders")
    return requests


@dg.asset_sensor(
    asset_key=dg.AssetKey("raw_events"),
    job=daily_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a day's folder carried events of other days (late data), re-runs those days so their partitions include them.",
)
def late_data_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    """Turn a raw_events materialization's `routed_to` metadata into runs for the target days."""
    mat = asset_event.asset_materialization
    routed = mat.metadata.get("routed_to") if mat else None
    requests = []
    for arrival, per in sorted((routed.value if routed else {}).items()):
        for target, info in sorted(per.items()):
            if _already_includes(context.instance, target, arrival, info["digest"]):
                continue  # re-running a carrier folder with unchanged late rows asks for nothing
            requests.append(dg.RunRequest(run_key=f"late:{target}:{arrival}:{info['digest']}", partition_key=target))
    return requests or dg.SkipReason("no routed rows that their target day does not already include")


def _already_includes(instance: dg.DagsterInstance, day: str, arrival: str, digest: str) -> bool:
    """True when raw_events[day]'s latest materialization already merged `arrival`'s rows with this digest."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_events"), asset_partitions=[day]), limit=1
    ).records
    if not records:
        return False
    meta = records[0].asset_materialization.metadata if records[0].asset_materialization else {}
    routed_in = meta.get("routed_in")
    return bool(routed_in) and routed_in.value.get(day, {}).get(arrival) == digest
