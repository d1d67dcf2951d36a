"""What the quality checks know about a feature asset: keys, `cutoff`, and per-feature facts.

Every feature asset (a declared group or a candidate asset) has the same partition layout:
entity key columns, a `cutoff` column (D+1 00:00 UTC) and feature columns. A
`FeatureLayout` carries, per feature, what the checks need: dtype, the aggregation kind
(which implies a value range), the window, whether the value may be missing, how many
days after the first partition its distribution is comparable day to day (warm-up), and
a fingerprint of its definition (for backward compatibility).

Groups give all of this from their declaration (`layout_of_group`). Candidate assets,
whose features are discovered at run time, give at least keys and names; missing facts
are inferred from the partition's dtypes and from common naming patterns
(`layout_of_frame`), and the checks then apply only what is known.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

import pandas as pd

from featurecore.spec import FeatureDef, FeatureGroup

CUTOFF = "cutoff"
# Contract columns that are >= 0 (price and quantity are validated >= 0 at ingestion).
NON_NEGATIVE_COLUMNS = {"price", "quantity", "amount"}
HOUR_COLUMNS = {"hour"}
# Kinds whose empty value is 0, not NaN: a null there is a defect, unless the whole
# column is null (its input column is absent from the data, see spec.py).
ZERO_FILLED = {"count", "sum", "distinct", "active_days", "frequency"}
# All-time aggregates that only grow: their distribution drifts by construction.
CUMULATIVE = {"count", "sum", "distinct", "active_days"}


@dataclass(frozen=True)
class FeatureInfo:
    """What the checks know about one feature column."""

    name: str
    dtype: str = "float64"
    kind: str | None = None  # aggregation op or derived kind; None = unknown
    window_days: int | None = None  # finite window in days; None = all time or not windowed
    lower: float | None = None  # value range implied by the kind and its input column
    upper: float | None = None
    integer: bool = False  # whole numbers only (counts, active days)
    zero_filled: bool = False  # empty window -> 0: partial nulls are a defect
    warmup_days: int | None = 0  # days after the first partition before day-to-day comparison is fair; None = never
    fingerprint: str = ""
    description: str = ""

    @property
    def categorical(self) -> bool:
        """True for string-valued features (compared by category shares)."""
        return self.dtype == "object"


@dataclass(frozen=True)
class FeatureLayout:
    """The layout of a feature asset's partitions and the facts about its features."""

    name: str
    keys: tuple[str, ...]
    features: tuple[FeatureInfo, ...]
    version: str = "1"
    strict: bool = True  # the column set is exactly keys + cutoff + features

    def names(self) -> list[str]:
        """Feature column names in order."""
        return [f.name for f in self.features]

    def get(self, name: str) -> FeatureInfo:
        """Facts about one feature (KeyError names the asset)."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no feature {name!r}")

    def columns(self) -> list[str]:
        """All partition columns in order: keys, cutoff, features."""
        return [*self.keys, CUTOFF, *self.names()]


# --------------------------------------------------------------------------- groups


def _canonical(value) -> object:
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if hasattr(value, "total_seconds"):
        return f"{value.total_seconds():g}s"
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def _definition(f: FeatureDef, group: FeatureGroup, memo: dict[str, str]) -> dict:
    src = f.source
    d = {
        "kind": f.kind,
        "window": f.window.label if f.window is not None else None,
        "where": _canonical(f.stream.where) if f.stream is not None else None,
        "column": f.stream.column if f.stream is not None else None,
        "param": _canonical(f.param) if f.kind != "ratio" else None,
        "dtype": f.dtype,
        "enrich": sorted(group.enrich),
    }
    if f.kind == "ema":
        d["mode"] = src.mode
    if f.kind == "share":
        d["categories"] = _canonical(src.categories)  # the 'other' share depends on the whole list
    if f.kind == "ratio":
        d["numerator"], d["denominator"] = (memo[p] for p in f.param)
    return d


def feature_fingerprints(group: FeatureGroup) -> dict[str, str]:
    """A short hash per feature of everything that determines its values (not its name or text)."""
    memo: dict[str, str] = {}
    for f in group.features():  # ratios come after their parts (the spec enforces it)
        blob = json.dumps(_definition(f, group, memo), sort_keys=True, default=str)
        memo[f.name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return memo


def _range_for(f: FeatureDef, nonneg: Mapping[str, bool]) -> tuple[float | None, float | None, bool]:
    """(lower, upper, non-negative) implied by a feature's kind and input column."""
    col = f.stream.column if f.stream is not None else None
    col_nonneg = col is None or col in NON_NEGATIVE_COLUMNS or col in HOUR_COLUMNS
    k = f.kind
    if k in ("count", "distinct", "recency", "std"):
        return 0.0, None, True
    if k == "active_days":
        return 0.0, float(f.window.n_days) if f.window is not None and not f.window.is_all_time else None, True
    if k in ("share", "frequency"):
        return 0.0, 1.0, True
    if k in ("sum", "mean", "min", "max", "quantile", "last", "ema"):
        if col in HOUR_COLUMNS and k != "sum" and not (k == "ema" and f.source.mode != "mean"):
            return 0.0, 23.0, True
        if f.dtype == "float64" and col_nonneg and (col is not None or k in ("ema",)):
            return 0.0, None, True
        return None, None, False
    if k == "ratio":
        ok = all(nonneg.get(p, False) for p in f.param)
        return (0.0 if ok else None), None, ok
    return None, None, False


def _warmup(f: FeatureDef) -> int | None:
    if f.window is None:  # ratio: as its slowest part (resolved by the caller)
        return 0
    if not f.window.is_all_time:
        return f.window.n_days
    if f.kind in CUMULATIVE:
        return None
    if f.kind == "ema":
        # the decayed sum reaches ~94 % of its steady state after 4 half-lives
        return int(math.ceil(4 * f.param.total_seconds() / 86400))
    if f.kind == "recency":
        return None  # ages of inactive entities keep growing with the history length
    return 0


def layout_of_group(group: FeatureGroup) -> FeatureLayout:
    """The layout and feature facts of a declared group."""
    prints = feature_fingerprints(group)
    nonneg: dict[str, bool] = {}
    warm: dict[str, int | None] = {}
    feats = []
    for f in group.features():
        lo, hi, nn = _range_for(f, nonneg)
        nonneg[f.name] = nn
        w = _warmup(f)
        if f.kind == "ratio":
            parts = [warm[p] for p in f.param]
            if all(p is None for p in parts):
                w = 7  # a ratio of two cumulative aggregates (e.g. average order value) is a stable mean
            else:
                w = max(p for p in parts if p is not None)
        warm[f.name] = w
        feats.append(FeatureInfo(
            name=f.name,
            dtype=f.dtype,
            kind=f.kind,
            window_days=None if f.window is None or f.window.is_all_time else f.window.n_days,
            lower=lo,
            upper=hi,
            integer=f.kind in ("count", "active_days"),
            zero_filled=f.kind in ZERO_FILLED or (f.kind == "ema" and f.source.mode in ("sum", "rate")),
            warmup_days=w,
            fingerprint=prints[f.name],
            description=f.description,
        ))
    return FeatureLayout(group.name, tuple(group.keys), tuple(feats), group.version)


# --------------------------------------------------------------------------- candidates

# Common names of generated features: Featuretools primitives and tsfresh calculators.
_NAME_KINDS = [
    # the encodings' hashed bag-of-token counts (hash_<name>_NN, FeatureHasher without signs): mostly
    # zero with a long tail; scored as signed values, 6-20% of the positive counts were "outliers"
    (re.compile(r"^hash_\w+_\d+$"), "count"),
    (re.compile(r"^(COUNT|NUM_UNIQUE|NUM_TRUE)\(|__(length|count_above|count_below|number_peaks|number_crossing_m)"), "count"),
    (re.compile(r"^PERCENT_TRUE\(|__ratio_"), "share"),
    # other tsfresh calculators (kind__calculator) and transforms such as sub(a,b), log1p(a):
    # a count-like kind or input name says nothing about their range (e.g. event_count__mean_change < 0)
    (re.compile(r"__|^[a-z0-9_]+\("), None),
    (re.compile(r"(^|_)(count|n)(_|$)"), "count"),
    (re.compile(r"(^|_)share(_|$)"), "share"),
]


def kind_from_name(name: str) -> str | None:
    """A guess at a generated feature's kind from its name (None when unsure)."""
    for pattern, kind in _NAME_KINDS:
        if pattern.search(name):
            return kind
    return None


def layout_of_frame(
    name: str,
    keys: Iterable[str],
    df: pd.DataFrame,
    *,
    version: str = "1",
    kinds: Mapping[str, str] | None = None,
    guess_kinds: bool = True,
) -> FeatureLayout:
    """A layout for a candidate asset from one of its partitions (or an empty frame with its dtypes).

    Ranges follow from `kinds` (explicit) or from the feature name when `guess_kinds`;
    fingerprints are the dtype only, since generated features have no declaration here.
    """
    keys = tuple(keys)
    kinds = dict(kinds or {})
    feats = []
    for col, dtype in df.dtypes.items():
        if col in keys or col == CUTOFF:
            continue
        dt = "object" if dtype == object or pd.api.types.is_string_dtype(dtype) else str(dtype)
        kind = kinds.get(col) or (kind_from_name(str(col)) if guess_kinds and dt != "object" else None)
        lo, hi = {"count": (0.0, None), "share": (0.0, 1.0)}.get(kind, (None, None))
        feats.append(FeatureInfo(str(col), dt, kind, None, lo, hi, fingerprint=dt))
    return FeatureLayout(name, keys, tuple(feats), version)


def with_features(layout: FeatureLayout, **changes) -> FeatureLayout:
    """A copy of `layout` with `changes` applied to every feature (e.g. warmup_days=0)."""
    return replace(layout, features=tuple(replace(f, **changes) for f in layout.features))
