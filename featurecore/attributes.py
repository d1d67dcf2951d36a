"""Static attribute tables (e.g. ``users_wide``): landing files to a snapshot source (no Dagster imports).

``<landing>/<table>/*.parquet|*.csv`` with a key column and any attributes becomes
``<store>/<table>/snapshot.parquet``. The training-set builder joins a snapshot on the
key alone, so its attributes are assumed time-invariant (see ``featurecore.training``).
Keys become strings. A row with a null key is quarantined. Among duplicate keys the last
row wins (files in name order) and the others are quarantined. Both go to
``<store>/<table>_quarantine/snapshot.parquet``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from .config import SourceConfig
from .ingest import IngestionError, _as_string, list_files, quarantine_rows, read_raw_file

BOOKKEEPING = ("source_file", "row_number")


def ingest_static_table(cfg: SourceConfig, table: str, key: str = "user_id") -> dict:
    """Snapshot one static attribute table from the landing zone (a Dask task); returns small statistics."""
    t0 = time.perf_counter()
    folder = Path(cfg.landing_root) / table
    files = list_files(folder, "parquet") + list_files(folder, "csv")
    if not files:
        raise IngestionError(f"{folder}: no files for the static table {table!r}")
    frames = []
    for path in files:
        raw = read_raw_file(path, "csv" if path.suffix == ".csv" else "parquet", cfg.csv_options).rename(columns=cfg.mapping(table))
        if key not in raw.columns:
            raise IngestionError(f"{path}: static table {table!r} lacks its key column {key!r}")
        rel = str(path.relative_to(cfg.landing_root))
        frames.append(raw.assign(source_file=rel, row_number=np.arange(len(raw), dtype="int64")))
    df = pd.concat(frames, ignore_index=True)
    df[key] = _as_string(df[key])
    bad = df[key].isna().to_numpy()
    dup = df.duplicated(subset=[key], keep="last").to_numpy() & ~bad
    q = [quarantine_rows(df, bad, "", key, f"missing value in key column {key!r}"),
         quarantine_rows(df, dup, "", key, "duplicate " + key + " " + df[key].astype(str) + " (kept the last row)")]
    quarantine = pd.concat([x for x in q if len(x)], ignore_index=True) if any(len(x) for x in q) else q[0]
    df = df[~(bad | dup)].drop(columns=list(BOOKKEEPING)).reset_index(drop=True)
    out = Path(cfg.store_root) / table
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".snapshot.parquet.tmp"
    df.to_parquet(tmp, index=False)
    tmp.replace(out / "snapshot.parquet")
    qdir = Path(cfg.store_root) / f"{table}_quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    quarantine.astype({"record": str}).to_parquet(qdir / "snapshot.parquet", index=False)
    kinds = {"numeric": int(sum(pd.api.types.is_numeric_dtype(df[c]) for c in df.columns if c != key))}
    kinds["other"] = len(df.columns) - 1 - kinds["numeric"]
    return {"rows": len(df), "columns": len(df.columns) - 1, "kinds": kinds, "quarantined": len(quarantine),
            "files": len(files), "bytes": (out / "snapshot.parquet").stat().st_size, "seconds": time.perf_counter() - t0}


def has_static_table(cfg: SourceConfig, table: str) -> bool:
    """True when the landing zone holds files for the table."""
    folder = Path(cfg.landing_root) / table
    return bool(list_files(folder, "parquet") + list_files(folder, "csv"))
