"""Label-free categorical encodings: count, frequency, one-hot, and hashed histories.

Entities of day D are the users snapshot plus every entity with an event in the hashing
window. A plan fitted once per configuration version on the first computed day's
snapshot (``plan.json``) fixes the value counts and the one-hot levels, so the columns
and the mapping never change from day to day:

- ``count(<col>)``, ``freq(<col>)``: how many snapshot entities share the value (and as a
  share); an unseen value gets 0, a missing value NaN.
- ``onehot(<col>=<value>)`` for columns with at most ``one_hot_max`` levels.
- ``hash_<name>_NN``: high-cardinality histories (demo: the product ids and the brands an
  entity interacted with in the ``hash_window_days`` before the cutoff, ``ts < cutoff``)
  as hashed bag-of-token counts (``sklearn.FeatureHasher``, ``hash_features`` columns).

Out-of-fold, time-ordered *target* encoding needs labels and lives with selection.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..ingest import read_snapshot
from ..timeutil import cutoff as cutoff_of
from .common import (
    CandidateError, artifact_dir, as_candidates, config_hash, read_window, save_json, single_part_day, source_columns,
    window_days,
)
from .reduction import hash_bags

ASSET = "encoded_candidates"
BOOKKEEPING = ("source_file", "row_number")


@dataclass(frozen=True)
class EncodingConfig:
    """Which categoricals are encoded how, and which histories are hashed."""

    entity: str = "user_id"
    dimension: str = "users"
    columns: tuple[str, ...] | None = None  # None: every string column of the dimension snapshot
    one_hot_max: int = 12
    hash_histories: tuple[tuple[str, str | None], ...] = (("product_id", None), ("brand", "products"))
    hash_features: int = 32
    hash_window_days: int = 30
    source: str = "raw_events"

    def version(self) -> str:
        """Plan version: a hash of this configuration."""
        return config_hash(self, "encodings-1")


def _snapshot(store_root: str, cfg: EncodingConfig) -> pd.DataFrame:
    path = Path(store_root) / cfg.dimension / "snapshot.parquet"
    if not path.is_file():
        raise CandidateError(f"{ASSET}: dimension snapshot {path} is missing; materialize {cfg.dimension} first")
    snap = read_snapshot(store_root, cfg.dimension)
    if cfg.entity not in snap.columns:
        raise CandidateError(f"{ASSET}: dimension {cfg.dimension} has no entity column {cfg.entity!r} (columns: {list(snap.columns)})")
    snap[cfg.entity] = snap[cfg.entity].astype(str)
    return snap.drop_duplicates(cfg.entity).set_index(cfg.entity)


def make_plan(store_root: str, day: str, cfg: EncodingConfig) -> dict:
    """Value counts and one-hot levels of the snapshot's categoricals (saved as plan.json)."""
    snap = _snapshot(store_root, cfg)
    cols = list(cfg.columns) if cfg.columns else [
        c for c in snap.columns if c not in BOOKKEEPING and snap[c].dtype == object and snap[c].dropna().map(type).eq(str).all()]
    missing = [c for c in cols if c not in snap.columns]
    if missing:
        raise CandidateError(f"{ASSET}: columns {missing} not in {cfg.dimension} (columns: {list(snap.columns)})")
    plan_cols = {}
    for c in cols:
        vc = snap[c].dropna().astype(str).value_counts()
        plan_cols[c] = {"counts": {k: int(v) for k, v in vc.items()}, "total": int(vc.sum()),
                        "one_hot": sorted(vc.index) if len(vc) <= cfg.one_hot_max else []}
    plan = {"asset": ASSET, "version": cfg.version(), "config": asdict(cfg), "planned_on_day": day, "columns": plan_cols}
    save_json(artifact_dir(store_root, ASSET, cfg.version()) / "plan.json", plan)
    return plan


def load_plan(store_root: str, cfg: EncodingConfig) -> dict | None:
    """The saved plan of this configuration, or None."""
    path = artifact_dir(store_root, ASSET, cfg.version()) / "plan.json"
    return json.loads(path.read_text()) if path.is_file() else None


def families(plan: dict, cfg: EncodingConfig) -> dict[str, list[str]]:
    """Feature names per family for the cost file."""
    cols = plan["columns"]
    return {
        "count_encoding": [f"count({c})" for c in cols],
        "frequency_encoding": [f"freq({c})" for c in cols],
        "one_hot": [f"onehot({c}={v})" for c, p in cols.items() for v in p["one_hot"]],
        "hashing": [f"hash_{name}_{i:02d}" for name, _ in cfg.hash_histories for i in range(cfg.hash_features)],
    }


def compute(store_root: str, day: str, start: str, cfg: EncodingConfig, plan: dict) -> tuple[pd.DataFrame, dict]:
    """Encoded candidates of day D's entities (pure): frame and per-family seconds."""
    t0 = time.perf_counter()
    snap = _snapshot(store_root, cfg)
    days = window_days(day, cfg.hash_window_days, start)
    avail = source_columns(store_root, cfg.source, days)
    need = [cfg.entity] + [c for c, dim in cfg.hash_histories if dim is None] + (["product_id"] if any(d for _, d in cfg.hash_histories) else [])
    ev = read_window(store_root, cfg.source, days, [c for c in dict.fromkeys(need) if c in avail], before=cutoff_of(day))
    if len(ev):
        ev[cfg.entity] = ev[cfg.entity].astype(str)
    entities = sorted(set(snap.index) | (set(ev[cfg.entity].dropna()) if len(ev) else set()))
    read_s = time.perf_counter() - t0
    cols: dict[str, np.ndarray] = {}
    seconds = {}
    t = time.perf_counter()
    for c, p in plan["columns"].items():
        v = snap[c].reindex(entities) if c in snap.columns else pd.Series(None, index=entities, dtype=object)
        counts = v.astype(object).map(lambda x, m=p["counts"]: np.nan if x is None or x != x else m.get(str(x), 0)).astype("float64")
        cols[f"count({c})"] = counts.to_numpy()
        cols[f"freq({c})"] = (counts / max(p["total"], 1)).to_numpy()
    seconds["count_encoding"] = seconds["frequency_encoding"] = (time.perf_counter() - t) / 2
    t = time.perf_counter()
    for c, p in plan["columns"].items():
        v = snap[c].reindex(entities).astype(object) if c in snap.columns else pd.Series(None, index=entities, dtype=object)
        for level in p["one_hot"]:
            cols[f"onehot({c}={level})"] = np.where(v.isna(), np.nan, (v.astype(str) == level).astype("float64"))
    seconds["one_hot"] = time.perf_counter() - t
    t = time.perf_counter()
    blocks = [pd.DataFrame(cols)]
    for name, dim in cfg.hash_histories:
        if dim is None:
            tokens = ev[name] if name in ev.columns else pd.Series(None, index=ev.index, dtype=object)
        else:
            table = read_snapshot(store_root, dim)
            lookup = table.drop_duplicates("product_id").set_index("product_id")[name] if name in table.columns else pd.Series(dtype=object)
            tokens = ev["product_id"].map(lookup) if "product_id" in ev.columns else pd.Series(None, index=ev.index, dtype=object)
        ent = ev[cfg.entity] if len(ev) else pd.Series(dtype=object)
        blocks.append(hash_bags(ent, tokens, entities, cfg.hash_features, f"hash_{name}"))
    seconds["hashing"] = time.perf_counter() - t + read_s  # the event read only serves the histories
    feats = pd.concat(blocks, axis=1)
    return as_candidates(feats, pd.DataFrame({cfg.entity: entities}), day), seconds


def day_task(store_root: str, day: str, start: str, cfg: EncodingConfig, plan: dict, staging: str) -> dict:
    """Dask task: compute one day and write it as the staging folder's single part."""
    return single_part_day(ASSET, day, cfg.entity, staging, lambda: compute(store_root, day, start, cfg, plan))
