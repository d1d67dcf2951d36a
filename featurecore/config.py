"""Source configuration: where data lands, its format, and how its columns map to the contract.

Loaded from a YAML file (``config/source.yaml`` by default, or the path in
``FEATURE_SOURCE_CONFIG``); the environment variables ``LANDING_ROOT``,
``STORE_ROOT``, ``SOURCE_FORMAT`` and ``PARTITION_START`` override single keys so a
user's own data plugs in without code changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "source.yaml"

EVENT_REQUIRED = ("user_id", "ts", "event_type")
EVENT_OPTIONAL = (
    "event_id",
    "product_id",
    "price",
    "quantity",
    "device_type",
    "referrer",
    "session_id",
)


@dataclass(frozen=True)
class SourceConfig:
    """Everything needed to find and interpret the landing zone."""

    landing_root: str
    store_root: str
    file_format: str = "parquet"  # parquet | csv
    partition_start: str = "2026-09-01"
    # dataset column name -> contract column name, per table
    column_mapping: dict[str, dict[str, str]] = field(default_factory=dict)
    bad_row_threshold: float = 0.01
    csv_options: dict = field(default_factory=dict)

    def mapping(self, table: str) -> dict[str, str]:
        """Column renames for one table (events, users, products, labels)."""
        return dict(self.column_mapping.get(table) or {})

    @property
    def landing(self) -> Path:
        """The landing root as a ``Path``."""
        return Path(self.landing_root)


def _resolve(path: str, base: Path) -> str:
    if "://" in path:
        return path
    p = Path(os.path.expandvars(os.path.expanduser(path)))
    return str(p if p.is_absolute() else (base / p).resolve())


def load_source_config(path: str | os.PathLike | None = None) -> SourceConfig:
    """Read the source configuration, applying environment overrides."""
    path = Path(path or os.environ.get("FEATURE_SOURCE_CONFIG") or DEFAULT_CONFIG)
    raw: dict = {}
    if path.exists():
        raw = yaml.safe_load(path.read_text()) or {}
    base = PROJECT_ROOT if path == DEFAULT_CONFIG else path.parent
    env = os.environ
    landing = env.get("LANDING_ROOT") or raw.get("landing_root", "data/landing")
    store = env.get("STORE_ROOT") or raw.get("store_root", "data/store")
    fmt = (env.get("SOURCE_FORMAT") or raw.get("file_format", "parquet")).lower()
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"{path}: file_format must be 'parquet' or 'csv', got {fmt!r}")
    return SourceConfig(
        landing_root=_resolve(landing, base),
        store_root=_resolve(store, base),
        file_format=fmt,
        partition_start=str(env.get("PARTITION_START") or raw.get("partition_start", "2026-09-01")),
        column_mapping=raw.get("column_mapping") or {},
        bad_row_threshold=float(env.get("BAD_ROW_THRESHOLD") or raw.get("bad_row_threshold", 0.01)),
        csv_options=raw.get("csv_options") or {},
    )
