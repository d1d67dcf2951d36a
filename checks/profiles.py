"""Per-partition profiles of a feature asset: small tables the checks and monitoring read.

A profile of partition D of asset ``A`` lives at ``<store>/A__profile/date=D/part-0.parquet``
(an internal artefact, like ``__state``) and has one row per item:

- ``section == "partition"``: rows, distinct keys, the source file's size and mtime
  (a profile older than its partition is recomputed);
- ``section == "feature"``: per feature the missing, zero and outlier counts, moments,
  quantiles, a KLL sketch of the values (numeric) or the top category counts
  (strings), and the most extreme outliers with their keys;
- ``section == "relation"``: the outcome of every relation (`checks.relations`) with
  violating rows;
- ``section == "schema"``: schema failures, for assets whose writer does not validate.

Outliers (robust z-score, Iglewicz & Hoaglin's modified z): ``z = (x - median) / s``
with ``s = 1.4826 MAD``, or ``1.2533 x mean absolute deviation`` when the MAD is 0; a
value is an outlier when ``|z| > 3.5``. Non-negative right-skewed features (counts,
sums, amounts, recency, decayed sums) are scored on ``log1p(x)`` so their natural long
tail is not an outlier, and a non-negative feature is scored among its positive values:
a zero ("nothing happened") is never an outlier, however many there are. A profile is computed from the partition
alone; what is normal for the rate is judged against the trailing profiles (`stats.py`).
"""

from __future__ import annotations

import json
import time
from typing import Iterable

import numpy as np
import pandas as pd

from featurecore.store import partition_dir, partition_exists, read_partition, write_partition

from .drift import sketch_of, top_counts
from .layout import FeatureInfo, FeatureLayout

PROFILE_SUFFIX = "__profile"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
Q_COLS = [f"q{int(round(q * 100)):02d}" for q in QUANTILES]
OUTLIER_Z = 3.5
LOG_KINDS = {"count", "sum", "distinct", "active_days", "recency", "std", "ema", "mean", "min", "max",
             "quantile", "last"}
PROFILE_VERSION = 3  # 3: hashed bag counts (hash_<name>_NN) are scored as counts


def profile_asset(source: str) -> str:
    """Store name of a source asset's profiles."""
    return source + PROFILE_SUFFIX


def source_stamp(store_root: str, source: str, day: str) -> tuple[int, int]:
    """(size, mtime_ns) of a partition's files: a profile records it to notice re-written partitions."""
    folder = partition_dir(store_root, source, day)
    files = sorted(folder.glob("*.parquet"))
    return sum(f.stat().st_size for f in files), max((f.stat().st_mtime_ns for f in files), default=0)


def outlier_scores(values: np.ndarray, non_negative: bool, log_scale: bool) -> np.ndarray:
    """Robust z-scores of non-null values (0 where a value cannot be an outlier)."""
    v = np.asarray(values, dtype=np.float64)
    if log_scale:
        v = np.log1p(np.maximum(v, 0.0))
    z = np.zeros(len(v))
    # a zero of a non-negative feature is "nothing happened", never an outlier: score the rest among themselves
    scored = v > 0 if non_negative else np.ones(len(v), dtype=bool)
    base = v[scored]
    if len(base) < 3:
        return z
    med = np.median(base)
    dev = np.abs(base - med)
    mad = np.median(dev)
    scale = 1.4826 * mad if mad > 0 else 1.2533 * dev.mean()
    if scale <= 0:
        return z
    z[scored] = (base - med) / scale
    return z


def _feature_row(df: pd.DataFrame, f: FeatureInfo, keys: list[str], max_examples: int) -> dict:
    s = df[f.name] if f.name in df.columns else pd.Series(np.nan, index=df.index)
    n = len(s)
    row = {"section": "feature", "name": f.name, "dtype": str(s.dtype), "kind": f.kind or "", "rows": n,
           "n_missing": int(s.isna().sum())}
    if f.categorical or s.dtype == object:
        counts = top_counts(s)
        row.update(categories=json.dumps(counts), n_zero=0, n_outlier=0)
        return row
    x = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    ok = ~np.isnan(x)
    v = x[ok]
    row["n_zero"] = int((v == 0).sum())
    if len(v):
        qs = np.quantile(v, QUANTILES)
        row.update(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                   min=float(v.min()), max=float(v.max()), **dict(zip(Q_COLS, map(float, qs))))
        nonneg = bool(f.lower is not None and f.lower >= 0 and (v >= 0).all())
        z = outlier_scores(v, nonneg, log_scale=nonneg and f.kind in LOG_KINDS)
        out = np.abs(z) > OUTLIER_Z
        row["n_outlier"] = int(out.sum())
        if out.any():
            rows_of_v = np.flatnonzero(ok)  # partition row of each non-null value
            hits = np.flatnonzero(out)
            top = hits[np.argsort(-np.abs(z[hits]), kind="stable")][:max_examples]
            row["examples"] = json.dumps([
                {**{k: str(df[k].iloc[rows_of_v[i]]) for k in keys}, "value": float(v[i]), "z": round(float(z[i]), 2)}
                for i in top
            ])
        row["sketch"] = sketch_of(v)
    else:
        row["n_outlier"] = 0
    return row


def profile_frame(df: pd.DataFrame, layout: FeatureLayout, *, relation_results: Iterable[dict] = (),
                  schema_errors: Iterable[str] | None = None, stamp: tuple[int, int] = (0, 0),
                  max_examples: int = 5) -> pd.DataFrame:
    """The profile of one partition as a small table (see the module docstring)."""
    keys = list(layout.keys)
    rows = [{
        "section": "partition", "name": "__partition__", "rows": len(df),
        "statistic": float(len(df.drop_duplicates(keys))) if len(df) and set(keys) <= set(df.columns) else 0.0,
        "message": json.dumps({"columns": [str(c) for c in df.columns], "dtypes": {str(c): str(t) for c, t in df.dtypes.items()}}),
    }]
    rows += [_feature_row(df, f, keys, max_examples) for f in layout.features]
    for r in relation_results:
        rows.append({"section": "relation", "name": r["relation"], "kind": r["type"], "status": r["status"],
                     "rows": r["checked"], "n_outlier": r["violations"], "statistic": r.get("statistic"),
                     "threshold": r.get("threshold"), "message": r["message"],
                     "examples": json.dumps(r.get("examples") or []), "hard": r["hard"]})
    for msg in schema_errors or []:
        rows.append({"section": "schema", "name": "schema", "status": "error", "message": msg})
    out = pd.DataFrame(rows)
    for col in ["dtype", "kind", "status", "message", "examples", "categories"]:
        if col not in out:
            out[col] = None
        out[col] = out[col].astype(object)
    for col in ["rows", "n_missing", "n_zero", "n_outlier", "mean", "std", "min", "max", *Q_COLS, "statistic",
                "threshold"]:
        if col not in out:
            out[col] = np.nan
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(np.float64)
    # exact integers on the partition row (first): nanoseconds do not fit a float64
    for col, value in (("source_bytes", stamp[0]), ("source_mtime_ns", stamp[1]), ("profile_version", PROFILE_VERSION)):
        out[col] = np.zeros(len(out), dtype=np.int64)
        out.loc[0, col] = np.int64(value)
    if "sketch" not in out:
        out["sketch"] = None
    out["sketch"] = out["sketch"].astype(object).where(out["sketch"].notna(), None)
    if "hard" not in out:
        out["hard"] = False
    out["hard"] = out["hard"].eq(True)
    return out


def read_profile(store_root: str, source: str, day: str) -> pd.DataFrame | None:
    """A stored profile, or None when there is none."""
    for attempt in range(3):
        if not partition_exists(store_root, profile_asset(source), day):
            return None
        try:
            return read_partition(store_root, profile_asset(source), day)
        except (OSError, FileNotFoundError):
            # another task is replacing this profile (atomic folder swap): read the new one
            time.sleep(0.2 * (attempt + 1))
    return read_partition(store_root, profile_asset(source), day)


def stored_stamp(store_root: str, source: str, day: str) -> pd.DataFrame | None:
    """Only the partition row's stamp columns of a stored profile (a cheap read to test currency)."""
    cols = ["section", "profile_version", "source_bytes", "source_mtime_ns"]
    for attempt in range(3):
        if not partition_exists(store_root, profile_asset(source), day):
            return None
        try:
            return read_partition(store_root, profile_asset(source), day, columns=cols)
        except (OSError, FileNotFoundError):
            time.sleep(0.2 * (attempt + 1))  # being replaced by another task
    return None


def profile_is_current(store_root: str, source: str, day: str, profile: pd.DataFrame | None) -> bool:
    """True when the profile was computed from the partition as it is now."""
    if profile is None or not len(profile):
        return False
    part = profile[profile["section"] == "partition"]
    if part.empty or part["profile_version"].iloc[0] != PROFILE_VERSION:
        return False
    size, mtime = source_stamp(store_root, source, day)
    return int(part["source_bytes"].iloc[0]) == size and int(part["source_mtime_ns"].iloc[0]) == mtime


def write_profile(profile: pd.DataFrame, store_root: str, source: str, day: str) -> dict:
    """Replace the stored profile of one partition."""
    return write_partition(profile, store_root, profile_asset(source), day)


def feature_rows(profile: pd.DataFrame) -> pd.DataFrame:
    """The per-feature rows of a profile, indexed by feature name."""
    return profile[profile["section"] == "feature"].set_index("name")


def partition_rows(profile: pd.DataFrame) -> int:
    """Row count recorded in a profile."""
    p = profile[profile["section"] == "partition"]
    return int(p["rows"].iloc[0]) if len(p) else 0


def stored_columns(profile: pd.DataFrame) -> dict[str, str]:
    """Column -> dtype of the partition the profile was computed from."""
    p = profile[profile["section"] == "partition"]
    if p.empty or not isinstance(p["message"].iloc[0], str):
        return {}
    return json.loads(p["message"].iloc[0]).get("dtypes", {})


def source_exists(store_root: str, source: str, day: str) -> bool:
    """True when the source partition exists."""
    return partition_exists(store_root, source, day)
