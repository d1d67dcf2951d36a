"""Small demo stores for the quality tests, built with the real pipeline on a Dask cluster."""

from dataclasses import replace
from pathlib import Path

from featurecore import demo_data
from featurecore.config import load_source_config
from featurecore.groups import GROUPS
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.pipeline import features_range, tile_day
from featurecore.timeutil import day_range, shift_day

START = "2026-09-01"


def build_world(root: Path, client, demo: demo_data.DemoConfig, groups: list[str]):
    """Generate the demo world under `root` and compute raw_events, tiles and `groups` for every day."""
    days = day_range(START, shift_day(START, demo.days - 1))
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "store"),
                  partition_start=START)
    demo_data.generate(cfg.landing_root, demo)
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    client.gather(client.map(ingest_events_day, days, cfg=cfg, pure=False))
    gs = [GROUPS[g] for g in groups]
    client.gather(client.map(tile_day, days, groups=gs, store_root=cfg.store_root, pure=False))
    stats = client.gather([client.submit(features_range, days, g, cfg.store_root, START, pure=False) for g in gs])
    errors = [e for per in stats for s in per for e in s["schema_errors"]]
    assert not errors, errors[:3]  # the demo itself is clean
    return cfg, days
