"""Cost accounting per feature family: compute seconds and output bytes, beside the data.

``<store>/<asset>/date=D/_costs.json`` holds, per family, the compute seconds (summed
over the Dask tasks, not wall time), the compressed Parquet bytes of the family's
columns and the family's feature names. It is written after the partition's Parquet
because a partition write replaces the whole folder. Selection reads it to weigh a
feature's value against what it costs.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow.parquet as pq

from ..store import partition_dir
from ..timeutil import day_key

COSTS_FILE = "_costs.json"
COST_COLUMNS = ["asset", "day", "family", "seconds", "bytes", "n_features"]


def write_costs(store_root: str | os.PathLike, asset: str, day: str, families: dict[str, dict]) -> Path:
    """Write `families` ({family: {"seconds", "bytes", "features"}}) as the partition's `_costs.json`."""
    folder = partition_dir(store_root, asset, day)
    if not folder.is_dir():
        raise FileNotFoundError(f"write_costs: partition {asset}/date={day_key(day)} does not exist under {store_root}; write the data first")
    clean = {}
    for fam, c in families.items():
        feats = [str(f) for f in c.get("features", [])]
        clean[str(fam)] = {"seconds": float(c.get("seconds", 0.0)), "bytes": int(c.get("bytes", 0)), "features": feats}
    path = folder / COSTS_FILE
    tmp = folder / f".{COSTS_FILE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"asset": asset, "day": day_key(day), "families": clean}, indent=1))
    os.replace(tmp, path)  # readers never see a half-written file
    return path


def _cost_files(store_root: str | os.PathLike, asset: str, days: Iterable[str] | None) -> list[Path]:
    base = Path(store_root) / asset
    if days is not None:
        return [p for d in days if (p := partition_dir(store_root, asset, d) / COSTS_FILE).is_file()]
    return sorted(base.glob(f"date=*/{COSTS_FILE}")) if base.is_dir() else []


def read_costs(store_root: str | os.PathLike, asset: str, days: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per (day, family) with seconds, bytes and n_features (all days when `days` is None)."""
    rows = []
    for path in _cost_files(store_root, asset, days):
        doc = json.loads(path.read_text())
        for fam, c in doc["families"].items():
            rows.append({"asset": asset, "day": doc["day"], "family": fam, "seconds": float(c["seconds"]),
                         "bytes": int(c["bytes"]), "n_features": len(c["features"])})
    df = pd.DataFrame(rows, columns=COST_COLUMNS)
    return df.astype({"seconds": "float64", "bytes": "int64", "n_features": "int64"}).sort_values(["day", "family"], ignore_index=True)


def feature_families(store_root: str | os.PathLike, asset: str, days: Iterable[str] | None = None) -> dict[str, str]:
    """Mapping feature name -> family over the cost files (a later day wins if a name moved)."""
    out: dict[str, str] = {}
    for path in sorted(_cost_files(store_root, asset, days)):
        for fam, c in json.loads(path.read_text())["families"].items():
            out.update({f: fam for f in c["features"]})
    return out


def column_bytes(parquet_files: Iterable[str | os.PathLike]) -> dict[str, int]:
    """Compressed bytes per column summed over the row groups of the given Parquet files."""
    out: dict[str, int] = {}
    for f in parquet_files:
        md = pq.ParquetFile(f).metadata
        for rg in range(md.num_row_groups):
            group = md.row_group(rg)
            for i in range(group.num_columns):
                col = group.column(i)
                name = col.path_in_schema.split(".")[0]
                out[name] = out.get(name, 0) + int(col.total_compressed_size)
    return out


def family_costs(families: dict[str, list[str]], seconds: dict[str, float], col_bytes: dict[str, int]) -> dict[str, dict]:
    """Combine feature lists, compute seconds and per-column bytes into the `write_costs` shape."""
    return {
        fam: {"seconds": float(seconds.get(fam, 0.0)), "bytes": int(sum(col_bytes.get(f, 0) for f in feats)), "features": list(feats)}
        for fam, feats in families.items()
    }
