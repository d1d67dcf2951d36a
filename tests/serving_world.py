"""A small store for the serving tests: demo data ingested, batch features for the first days."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from featurecore import demo_data
from featurecore.config import SourceConfig, load_source_config
from featurecore.groups import GROUPS
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.pipeline import features_range, tile_day
from featurecore.recent_items import USER_RECENT_ITEMS, recent_items_range
from featurecore.timeutil import day_range

START = "2026-09-01"
DAYS = day_range(START, "2026-09-06")
DEMO = demo_data.DemoConfig(start=START, days=len(DAYS), users=200, products=50, events_per_day=1500, seed=3,
                            late_fraction=0.01)
USER_GROUPS = [GROUPS[n] for n in ("user_behavior", "user_temporal", "user_context")]


def ingested(root: Path) -> SourceConfig:
    """Landing zone and raw_events for every day of DAYS, plus the dimension snapshots."""
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "store"),
                  partition_start=START)
    demo_data.generate(cfg.landing_root, DEMO)
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    for d in DAYS + DAYS:  # twice: rows routed to an earlier day are merged in
        ingest_events_day(d, cfg)
    return cfg


def run_batch(client, store_root: str, days: list[str]) -> None:
    """Tiles, user feature groups and last-N lists for consecutive days, on the cluster."""
    client.gather(client.map(tile_day, days, groups=USER_GROUPS, store_root=store_root, pure=False))
    futures = [client.submit(features_range, days, g, store_root, START, pure=False) for g in USER_GROUPS]
    futures.append(client.submit(recent_items_range, days, USER_RECENT_ITEMS, store_root, START, pure=False))
    client.gather(futures)


def copy_store(src: str, dst: Path) -> str:
    """A copy of a store folder (tests modify their copy)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return str(dst)
