"""A small ingested demo store for the candidate tests (raw_events, users, products)."""

from dataclasses import replace
from pathlib import Path

from featurecore import demo_data
from featurecore.config import load_source_config
from featurecore.ingest import ingest_dimension, ingest_events_day
from featurecore.timeutil import day_range

START = "2026-09-01"
DAYS = day_range(START, "2026-09-14")
SUNDAY = "2026-09-13"  # a cadence day with a later day in the store (events at and after its cutoff)
DEMO = demo_data.DemoConfig(start=START, days=len(DAYS), users=160, products=50, events_per_day=900, seed=21)


def build_store(root: Path):
    """Generate and ingest the demo world under `root`; returns the SourceConfig."""
    cfg = replace(load_source_config(), landing_root=str(root / "landing"), store_root=str(root / "store"), partition_start=START)
    demo_data.generate(cfg.landing_root, DEMO)
    for t in ("users", "products"):
        ingest_dimension(t, cfg)
    for d in DAYS:
        ingest_events_day(d, cfg)
    return cfg
