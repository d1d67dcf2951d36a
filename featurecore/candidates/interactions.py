"""AutoFeat-style interaction and transform candidates over the declared feature groups.

A *plan* is made once per configuration version on a sample of the first computed day
and saved (``<store>/_artifacts/interaction_candidates/<version>/plan.json``), so every
day has the same columns:

- base set: the top-k numeric features of the source groups by a cheap relevance score,
  greedily skipping any with |Pearson r| > ``max_corr`` to one already chosen. Without
  labels the score is coverage x spread (non-null share times the normalised entropy of
  a 10-quantile histogram: informative, well-covered features first); with a labels
  table (``entity_id, label_ts, label``) it is |Spearman rho| with the label, joined as of
  the label time (the latest candidate cutoff <= label_ts).
- unary transforms of the base set, where defined on the sample: ``log1p`` (min > -1),
  ``sqrt`` (min >= 0), ``square``, ``reciprocal`` (under half zeros); values outside the
  domain become NaN at compute time, never an error.
- pairwise ``mul``, ``div`` and ``sub`` of base pairs, in order of the pair's scores.
- crosses of low-cardinality categoricals of a dimension snapshot (demo: users' country
  x segment) as string columns, each with its frequency encoding.

``max_features`` is a hard cap over all of them (crosses count too), applied in that order.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ..ingest import read_snapshot
from ..store import partition_exists, read_partition
from .common import CandidateError, artifact_dir, as_candidates, config_hash, save_json, single_part_day

ASSET = "interaction_candidates"
UNARY = ("log1p", "sqrt", "square", "reciprocal")
BINARY = ("mul", "div", "sub")
BOOKKEEPING = ("source_file", "row_number")


@dataclass(frozen=True)
class InteractionConfig:
    """Which inputs, how many base features, which transforms, and the hard cap."""

    sources: tuple[str, ...] = ("user_behavior", "user_temporal", "user_context")
    entity: str = "user_id"
    top_k: int = 8
    unary: tuple[str, ...] = UNARY
    binary: tuple[str, ...] = BINARY
    max_features: int = 150
    max_corr: float = 0.95
    sample_rows: int = 5000
    dimension: str | None = "users"  # snapshot whose low-cardinality categoricals are crossed
    max_categories: int = 16
    max_crosses: int = 6
    labels_path: str | None = None
    seed: int = 0

    def __post_init__(self):
        bad = [u for u in self.unary if u not in UNARY] + [b for b in self.binary if b not in BINARY]
        if bad:
            raise ValueError(f"unknown transforms {bad}; unary: {UNARY}, binary: {BINARY}")
        if self.top_k < 1 or self.max_features < 1:
            raise ValueError("top_k and max_features must be >= 1")

    def version(self) -> str:
        """Plan version: a hash of this configuration."""
        return config_hash(self, "interactions-1")


# --------------------------------------------------------------------------- inputs


def read_sources(store_root: str, day: str, cfg: InteractionConfig) -> pd.DataFrame:
    """The source groups' rows of day D joined on the entity (outer): keys, then numeric features."""
    frames = []
    for src in cfg.sources:
        if not partition_exists(store_root, src, day):
            raise CandidateError(f"{ASSET} {day}: input partition {src}/date={day} is missing; materialize {src} for {day} first")
        df = read_partition(store_root, src, day)
        if cfg.entity not in df.columns:
            raise CandidateError(f"{ASSET}: source {src} has no entity column {cfg.entity!r} (columns: {list(df.columns)[:10]}…)")
        num = [c for c in df.columns if c not in (cfg.entity, "cutoff") and pd.api.types.is_numeric_dtype(df[c])]
        frames.append(df[[cfg.entity, *num]].set_index(cfg.entity))
    joined = pd.concat(frames, axis=1, join="outer")
    joined = joined.loc[:, ~joined.columns.duplicated()]
    return joined.sort_index()


def read_categoricals(store_root: str, cfg: InteractionConfig) -> pd.DataFrame | None:
    """Low-cardinality string attributes of the dimension snapshot, indexed by entity."""
    if not cfg.dimension or not (Path(store_root) / cfg.dimension / "snapshot.parquet").is_file():
        return None
    snap = read_snapshot(store_root, cfg.dimension)
    if cfg.entity not in snap.columns:
        return None
    cols = [c for c in snap.columns if c not in (cfg.entity, *BOOKKEEPING) and snap[c].dtype == object
            and snap[c].dropna().map(type).eq(str).all() and 1 < snap[c].nunique() <= cfg.max_categories]
    return snap[[cfg.entity, *cols]].drop_duplicates(cfg.entity).assign(**{cfg.entity: lambda d: d[cfg.entity].astype(str)}).set_index(cfg.entity)


# --------------------------------------------------------------------------- scoring and plan


def spread_score(x: pd.Series) -> float:
    """Coverage x normalised entropy of a 10-quantile histogram (0 for constant or empty)."""
    v = x.replace([np.inf, -np.inf], np.nan).dropna()
    if len(v) < 2 or v.nunique() < 2:
        return 0.0
    edges = np.unique(np.quantile(v, np.linspace(0, 1, 11)))
    counts = np.histogram(v, bins=edges)[0] if len(edges) > 1 else np.array([len(v)])
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum() / np.log(10))
    return float(len(v) / len(x)) * entropy


def label_scores(base: pd.DataFrame, day: str, labels: pd.DataFrame, entity: str) -> pd.Series:
    """|Spearman rho| of each feature with labels whose as-of candidate row is this day's (label_ts >= cutoff)."""
    from ..timeutil import cutoff as cutoff_of

    lab = labels.rename(columns={"entity_id": entity})
    lab = lab[pd.to_datetime(lab["label_ts"], utc=True) >= cutoff_of(day)]
    lab = lab.assign(**{entity: lab[entity].astype(str)}).groupby(entity)["label"].first()
    x = base.join(lab, how="inner")
    if len(x) < 10:
        raise CandidateError(f"{ASSET} {day}: only {len(x)} entities have a label at or after the cutoff; too few to score features")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x.drop(columns="label").corrwith(x["label"], method="spearman").abs().fillna(0.0)


def pick_base(sample: pd.DataFrame, scores: pd.Series, k: int, max_corr: float) -> list[str]:
    """Top-k by score, skipping features too correlated with one already picked."""
    chosen: list[str] = []
    filled = sample.replace([np.inf, -np.inf], np.nan)
    for name in scores.sort_values(ascending=False, kind="stable").index:
        if scores[name] <= 0 or len(chosen) >= k:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corr = [abs(filled[name].corr(filled[c])) for c in chosen]
        if all(not (r > max_corr) for r in corr):
            chosen.append(name)
    return chosen


def make_plan(store_root: str, day: str, cfg: InteractionConfig) -> dict:
    """Choose base features, transforms, pairs and crosses on a sample of day D; saved as plan.json."""
    t0 = time.perf_counter()
    data = read_sources(store_root, day, cfg)
    if data.empty:
        raise CandidateError(f"{ASSET} {day}: the source groups {cfg.sources} have no rows on {day}")
    sample = data.sample(n=min(cfg.sample_rows, len(data)), random_state=cfg.seed) if len(data) > cfg.sample_rows else data
    if cfg.labels_path:
        scores, scoring = label_scores(sample, day, pd.read_parquet(cfg.labels_path), cfg.entity), "abs_spearman_with_label"
    else:
        scores, scoring = pd.Series({c: spread_score(sample[c]) for c in sample.columns}), "coverage_x_entropy"
    base = pick_base(sample, scores, cfg.top_k, cfg.max_corr)
    if not base:
        raise CandidateError(f"{ASSET} {day}: no numeric source feature varies on the sample; nothing to combine")
    plan_items: list[dict] = []
    for c in base:
        v = sample[c].replace([np.inf, -np.inf], np.nan).dropna()
        defined = {"log1p": v.min() > -1, "sqrt": v.min() >= 0, "square": True, "reciprocal": (v == 0).mean() < 0.5}
        plan_items += [{"op": u, "a": c, "name": f"{u}({c})"} for u in cfg.unary if defined[u]]
    pairs = sorted(combinations(base, 2), key=lambda p: -(scores[p[0]] * scores[p[1]]))
    zero_share = {c: float((sample[c] == 0).mean()) for c in base}
    for a, b in pairs:
        for op in cfg.binary:
            if op == "div":
                if zero_share[b] < 0.5:
                    plan_items.append({"op": "div", "a": a, "b": b, "name": f"div({a},{b})"})
                elif zero_share[a] < 0.5:
                    plan_items.append({"op": "div", "a": b, "b": a, "name": f"div({b},{a})"})
            else:
                plan_items.append({"op": op, "a": a, "b": b, "name": f"{op}({a},{b})"})
    crosses = []
    cats = read_categoricals(store_root, cfg)
    if cats is not None and cats.shape[1] >= 2:
        for a, b in list(combinations(sorted(cats.columns), 2))[: cfg.max_crosses]:
            key = (cats[a].astype(str) + "|" + cats[b].astype(str)).where(cats[a].notna() & cats[b].notna())
            freq = key.value_counts(normalize=True)
            crosses.append({"a": a, "b": b, "name": f"cross({a},{b})", "freq_name": f"freq(cross({a},{b}))",
                            "frequencies": {str(k): float(v) for k, v in freq.items()}})
    # Hard cap: numeric items first (unary, then pairs by score), then crosses (2 columns each).
    budget = cfg.max_features
    capped_items = plan_items[:budget]
    budget -= len(capped_items)
    capped_crosses = crosses[: max(budget // 2, 0)]
    plan = {"asset": ASSET, "version": cfg.version(), "config": asdict(cfg), "planned_on_day": day, "scoring": scoring,
            "base": base, "scores": {c: round(float(scores[c]), 5) for c in base},
            "items": capped_items, "crosses": capped_crosses,
            "candidates_before_cap": len(plan_items) + 2 * len(crosses), "dropped_by_cap": len(plan_items) - len(capped_items) + 2 * (len(crosses) - len(capped_crosses)),
            "sample_rows": int(len(sample)), "plan_seconds": round(time.perf_counter() - t0, 3)}
    save_json(artifact_dir(store_root, ASSET, cfg.version()) / "plan.json", plan)
    return plan


def load_plan(store_root: str, cfg: InteractionConfig) -> dict | None:
    """The saved plan of this configuration, or None."""
    path = artifact_dir(store_root, ASSET, cfg.version()) / "plan.json"
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------- compute


def _apply(op: str, a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "log1p":
            return np.where(a > -1, np.log1p(np.where(a > -1, a, 0.0)), np.nan)
        if op == "sqrt":
            return np.where(a >= 0, np.sqrt(np.where(a >= 0, a, 0.0)), np.nan)
        if op == "square":
            return a * a
        if op == "reciprocal":
            return np.where(a != 0, 1.0 / np.where(a != 0, a, 1.0), np.nan)
        if op == "mul":
            return a * b
        if op == "div":
            return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)
        if op == "sub":
            return a - b
    raise ValueError(op)


def compute(store_root: str, day: str, cfg: InteractionConfig, plan: dict) -> tuple[pd.DataFrame, dict]:
    """Interaction candidates of every entity of day D (pure): frame and per-family seconds."""
    t0 = time.perf_counter()
    data = read_sources(store_root, day, cfg)
    missing = [c for c in plan["base"] if c not in data.columns]
    if missing:
        raise CandidateError(f"{ASSET} {day}: base features {missing} of plan {plan['version']} are not in the sources any more; re-plan")
    cols: dict[str, np.ndarray] = {}
    x = {c: data[c].astype("float64").replace([np.inf, -np.inf], np.nan).to_numpy() for c in plan["base"]}
    t_unary = time.perf_counter()
    for it in plan["items"]:
        if it["op"] in UNARY:
            cols[it["name"]] = _apply(it["op"], x[it["a"]])
    seconds = {"unary": time.perf_counter() - t_unary}
    t_pair = time.perf_counter()
    for it in plan["items"]:
        if it["op"] in BINARY:
            cols[it["name"]] = _apply(it["op"], x[it["a"]], x[it["b"]])
    seconds["pairwise"] = time.perf_counter() - t_pair
    t_cross = time.perf_counter()
    cats = read_categoricals(store_root, cfg) if plan["crosses"] else None
    for cr in plan["crosses"]:
        a = cats[cr["a"]].reindex(data.index) if cats is not None and cr["a"] in cats else pd.Series(None, index=data.index, dtype=object)
        b = cats[cr["b"]].reindex(data.index) if cats is not None and cr["b"] in cats else pd.Series(None, index=data.index, dtype=object)
        key = (a.astype(str) + "|" + b.astype(str)).where(a.notna() & b.notna())
        cols[cr["name"]] = key.astype(object).where(key.notna(), None).to_numpy()
        # unseen combinations get frequency 0: they were absent from the planning sample
        cols[cr["freq_name"]] = key.map(cr["frequencies"]).astype("float64").fillna(0.0).where(key.notna()).to_numpy()
    seconds["crosses"] = time.perf_counter() - t_cross
    feats = pd.DataFrame(cols, index=data.index)
    seconds = {k: v + (t_unary - t0) / 3 for k, v in seconds.items()}  # the shared read, split evenly
    return as_candidates(feats, pd.DataFrame({cfg.entity: data.index.astype(str)}), day), seconds


def families(plan: dict) -> dict[str, list[str]]:
    """Feature names per family for the cost file."""
    return {
        "unary": [it["name"] for it in plan["items"] if it["op"] in UNARY],
        "pairwise": [it["name"] for it in plan["items"] if it["op"] in BINARY],
        "crosses": [n for cr in plan["crosses"] for n in (cr["name"], cr["freq_name"])],
    }


def day_task(store_root: str, day: str, cfg: InteractionConfig, plan: dict, staging: str) -> dict:
    """Dask task: compute one day and write it as the staging folder's single part."""
    return single_part_day(ASSET, day, cfg.entity, staging, lambda: compute(store_root, day, cfg, plan))
