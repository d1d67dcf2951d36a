"""Profiles of feature sources: distributions, missing/zero rates, cardinality, correlations (no Dagster imports).

``profile_source`` runs as one Dask task per source. It reads a sample of the source
(at most ``max_days`` partitions spread over the range, at most ``max_rows`` rows) and
returns a small dict. The Dagster asset turns that dict into tables and plots.
Quantiles, rates and cardinalities are therefore *sample* statistics, and the profile
says how many rows and days it saw.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .store import partition_dir
from .training import SNAPSHOT, is_static, source_days

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
RESERVED = ("cutoff", "source_file", "row_number")


def sample_days(days: list[str], max_days: int) -> list[str]:
    """Up to `max_days` days spread evenly over `days` (first and last included)."""
    if len(days) <= max_days:
        return list(days)
    idx = np.unique(np.round(np.linspace(0, len(days) - 1, max_days)).astype(int))
    return [days[i] for i in idx]


def load_sample(store_root: str, source: str, start: str | None, end: str | None, max_days: int, max_rows: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """A row sample of a source (partitioned or static) and the days it came from."""
    if is_static(store_root, source):
        t, used = pq.read_table(Path(store_root) / source / SNAPSHOT), []
    else:
        days = [d for d in source_days(store_root, source) if (start is None or d >= start) and (end is None or d <= end)]
        used = sample_days(days, max_days)
        files = [f for d in used for f in sorted(partition_dir(store_root, source, d).glob("*.parquet"))]
        t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive") if files else pa.table({})
    if t.num_rows > max_rows:  # sample in Arrow: only the sampled rows are converted to pandas
        t = t.take(pa.array(np.sort(np.random.default_rng(seed).choice(t.num_rows, max_rows, replace=False))))
    return t.to_pandas(), used


def _numeric_profile(s: pd.Series, bins: int) -> dict:
    v = s.to_numpy("float64")
    finite = v[np.isfinite(v)]
    out = {"kind": "numeric", "missing_rate": float(np.mean(~np.isfinite(v))) if len(v) else 0.0,
           "zero_rate": float(np.mean(v == 0)) if len(v) else 0.0, "cardinality": int(pd.Series(finite).nunique())}
    if not len(finite):
        return out | {"mean": None, "std": None, "quantiles": {}, "histogram": None}
    q = np.quantile(finite, QUANTILES)
    lo, hi = float(np.quantile(finite, 0.005)), float(np.quantile(finite, 0.995))
    if hi <= lo:
        lo, hi = float(finite.min()) - 0.5, float(finite.max()) + 0.5
    counts, edges = np.histogram(np.clip(finite, lo, hi), bins=bins, range=(lo, hi))
    return out | {
        "mean": float(finite.mean()), "std": float(finite.std(ddof=1)) if len(finite) > 1 else 0.0,
        "quantiles": {f"p{int(round(p * 100))}": float(x) for p, x in zip(QUANTILES, q)},
        # values outside the 0.5%..99.5% range are clipped into the end bins so the shape stays readable
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist(),
                      "clipped_low": int((finite < lo).sum()), "clipped_high": int((finite > hi).sum())},
    }


def _categorical_profile(s: pd.Series, top: int = 10) -> dict:
    vc = s.astype(object).value_counts(dropna=True)
    return {"kind": "categorical", "missing_rate": float(s.isna().mean()) if len(s) else 0.0, "zero_rate": None,
            "cardinality": int(len(vc)), "top_values": {str(k): int(v) for k, v in vc.head(top).items()}}


def profile_frame(df: pd.DataFrame, features: list[str], bins: int = 20, top_pairs: int = 15, max_corr_columns: int = 400) -> dict:
    """Per-feature statistics and the most correlated numeric pairs (Spearman) of a frame."""
    feats = {}
    numeric = []
    for c in features:
        s = df[c]
        if pd.api.types.is_bool_dtype(s):
            s = s.astype("float64")
        if pd.api.types.is_numeric_dtype(s):
            feats[c] = _numeric_profile(s, bins)
            numeric.append(c)
        elif pd.api.types.is_datetime64_any_dtype(s) or (len(s.dropna()) and hasattr(s.dropna().iloc[0], "isoformat")):
            feats[c] = {"kind": "temporal", "missing_rate": float(s.isna().mean()), "zero_rate": None,
                        "cardinality": int(s.nunique()), "min": str(s.min()), "max": str(s.max())}
        else:
            feats[c] = _categorical_profile(s)
    pairs = []
    cols = [c for c in numeric if feats[c]["cardinality"] > 1][:max_corr_columns]
    if len(cols) >= 2 and len(df) >= 10:
        rho = df[cols].astype("float64").rank().corr(min_periods=10).to_numpy()
        iu = np.triu_indices(len(cols), 1)
        vals = rho[iu]
        ok = np.isfinite(vals)
        order = np.argsort(-np.abs(np.where(ok, vals, 0.0)))[:top_pairs]
        pairs = [(cols[iu[0][i]], cols[iu[1][i]], float(vals[i])) for i in order if ok[i]]
    return {"features": feats, "top_pairs": pairs}


def profile_source(store_root: str, source: str, start: str | None = None, end: str | None = None, *, keys: tuple[str, ...] = (),
                   max_days: int = 8, max_rows: int = 20_000, bins: int = 20, top_pairs: int = 15, seed: int = 0) -> dict:
    """Dask task: profile one source over a date range from a bounded sample; returns a small dict."""
    t0 = time.perf_counter()
    df, used = load_sample(store_root, source, start, end, max_days, max_rows, seed)
    features = [c for c in df.columns if c not in set(keys) | set(RESERVED)]
    prof = profile_frame(df, features, bins, top_pairs)
    return {"source": source, "rows_sampled": int(len(df)), "days_sampled": used, "features": prof["features"],
            "top_pairs": prof["top_pairs"], "seconds": time.perf_counter() - t0,
            "entities_sampled": int(df[keys[0]].nunique()) if keys and keys[0] in df.columns else None}
