"""Pandera schemas generated from a feature asset's layout (no Dagster imports).

One schema serves every feature asset with the shared layout (entity keys, `cutoff`,
features): declared groups (`schema_for_group`) and candidate assets
(`schema_for_layout` with a layout from `checks.layout.layout_of_frame`). It checks:

- the column set: exactly keys + `cutoff` + the declared features (no missing, no extra);
- types: the declared dtype of every feature (float64 for numbers, object for strings);
- keys: non-null and unique per partition;
- `cutoff`: a UTC timestamp, the same on every row, equal to D+1 00:00 when the day is known;
- nullability: a feature whose empty value is 0 (counts, sums, distinct counts, active
  days, frequencies, decayed sums) is null only as a whole column (its input column is
  absent from the data); other features may be null (a mean of nothing);
- value ranges implied by the aggregation: counts, distinct counts, recency and standard
  deviations >= 0; counts and active days whole numbers; active days <= window days;
  shares and frequencies in [0, 1]; aggregates of non-negative inputs (price, quantity,
  amount) >= 0; hours in [0, 23];
- the laws among features (`checks.relations`, `max_violation_share == 0`): window
  nesting, ordered quantiles, shares summing to 1, ...

The check runs on the Dask worker that wrote the partition, so only a short list of
failures travels back; each names the feature, the rule and offending values with keys.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from featurecore.spec import FeatureGroup
from featurecore.timeutil import cutoff as cutoff_of

from .layout import CUTOFF, FeatureInfo, FeatureLayout, layout_of_group
from .relations import AnyRelation, Correlates, relation_columns, relations_for

# Kept for callers of the first version.
NON_NEGATIVE = {"count", "distinct", "active_days", "recency", "std"}
UNIT_INTERVAL = {"share", "frequency"}
RELATION_PREFIX = "relation: "
# float error of a ratio of integer counts can exceed 1 by an ulp
_EPS = 1e-9


def _feature_checks(f: FeatureInfo) -> list[pa.Check]:
    checks = []
    if f.lower is not None and f.upper is not None:
        checks.append(pa.Check.in_range(f.lower, f.upper + _EPS, name=f"in [{f.lower:g}, {f.upper:g}]"))
    elif f.lower is not None:
        checks.append(pa.Check.ge(f.lower, name=f">= {f.lower:g}"))
    elif f.upper is not None:
        checks.append(pa.Check.le(f.upper, name=f"<= {f.upper:g}"))
    if f.integer:
        checks.append(pa.Check(lambda s: s.isna() | (s == np.floor(s)), name="whole number"))
    if f.zero_filled:
        checks.append(pa.Check(
            lambda s: pd.Series(True, index=s.index) if s.isna().all() else s.notna(),
            ignore_na=False,
            name="null only as a whole column (empty value is 0)",
        ))
    return checks


def _cutoff_checks(day: str | None) -> list[pa.Check]:
    def utc(s: pd.Series) -> bool:
        """True for a tz-aware UTC timestamp column."""
        return isinstance(s.dtype, pd.DatetimeTZDtype) and str(s.dtype.tz) == "UTC"

    checks = [
        pa.Check(utc, name="UTC timestamp"),
        pa.Check(lambda s: s == s.iloc[0] if len(s) else pd.Series([], dtype=bool), name="one cutoff per partition"),
    ]
    if day is not None:
        want = cutoff_of(day)
        checks.append(pa.Check(lambda s: s == want, name=f"== {want.isoformat()}"))
    return checks


def schema_for_layout(layout: FeatureLayout, day: str | None = None,
                      relations: Iterable[AnyRelation] = ()) -> pa.DataFrameSchema:
    """The Pandera schema a partition of an asset with `layout` must satisfy (cutoff pinned when `day` is given)."""
    columns = {k: pa.Column(object, nullable=False, coerce=False) for k in layout.keys}
    columns[CUTOFF] = pa.Column(None, checks=_cutoff_checks(day), nullable=False)
    for f in layout.features:
        dtype = object if f.dtype == "object" else (f.dtype or None)
        columns[f.name] = pa.Column(dtype, checks=_feature_checks(f), nullable=True, required=True)
    laws = [r for r in relations if r.hard and not isinstance(r, Correlates)]
    return pa.DataFrameSchema(
        columns,
        checks=[pa.Check(r.holds, name=RELATION_PREFIX + r.name) for r in laws],
        unique=list(layout.keys),
        strict=layout.strict,
        name=f"{layout.name}_v{layout.version}",
    )


def schema_for_group(group: FeatureGroup, day: str | None = None) -> pa.DataFrameSchema:
    """The Pandera schema a feature partition of `group` must satisfy (laws among features included)."""
    return schema_for_layout(layout_of_group(group), day, relations_for(group))


def _key_text(df: pd.DataFrame, keys: list[str], index) -> str:
    try:
        row = df.loc[index]
    except (KeyError, TypeError):
        return ""
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    return ", ".join(f"{k}={row[k]}" for k in keys if k in row.index)


def _format(df: pd.DataFrame, layout: FeatureLayout, relations: dict[str, AnyRelation],
            fc: pd.DataFrame, max_examples: int) -> list[str]:
    keys = list(layout.keys)
    out = []
    fc = fc.copy()
    fc["column"] = fc["column"].astype(object).where(fc["column"].notna(), None)
    # a column of the wrong type fails its value checks too: report the type only
    wrong_type = set(fc.loc[fc["check"].astype(str).str.startswith("dtype("), "column"])
    fc = fc[~(fc["column"].isin(wrong_type) & ~fc["check"].astype(str).str.startswith("dtype("))]
    for check, grp in fc.groupby("check", dropna=False, sort=False):
        check = str(check)
        if check.startswith(RELATION_PREFIX):
            rel = relations[check[len(RELATION_PREFIX):]]
            a, b = rel.sides(df)
            bad = ~rel.holds(df).to_numpy()
            idx = np.flatnonzero(bad)[:max_examples]
            ex = "; ".join(f"{_key_text(df, keys, df.index[i])}: {a[i]:g} vs {b[i]:g}" for i in idx)
            out.append(f"{layout.name}: relation {rel.name} fails on {int(bad.sum())} of {len(df)} row(s), e.g. {ex}")
            continue
        if check == "multiple_fields_uniqueness":
            n = len(grp["index"].dropna().unique())
            ex = ", ".join(dict.fromkeys(_key_text(df, keys, i) for i in grp["index"].dropna().unique()[:max_examples]))
            out.append(f"{layout.name}: keys ({', '.join(keys)}) not unique: {n} row(s) share a key, e.g. {ex}")
            continue
        for column, cgrp in grp.groupby("column", dropna=False, sort=False):
            if check == "column_in_schema":
                out.append(f"{layout.name}: unexpected column(s) {', '.join(map(str, cgrp['failure_case']))}")
                continue
            if check == "column_in_dataframe":
                out.append(f"{layout.name}: missing column(s) {', '.join(map(str, cgrp['failure_case']))}")
                continue
            if check.startswith("dtype("):
                got = cgrp["failure_case"].iloc[0]
                out.append(f"{layout.name}.{column}: wrong type {got}, expected {check[6:-1].strip(chr(39))}")
                continue
            rows = cgrp[cgrp["index"].notna()]
            if len(rows) == 0:  # a whole-column check (no row to show)
                out.append(f"{layout.name}.{column}: {check} failed")
                continue
            ex = ", ".join(
                f"{_key_text(df, keys, r['index'])}: {r['failure_case']}".lstrip(": ") for _, r in rows.head(max_examples).iterrows()
            )
            out.append(f"{layout.name}.{column}: {check} failed for {len(rows)} of {len(df)} row(s), e.g. {ex}")
    return out


def validate_partition(df: pd.DataFrame, layout: FeatureLayout, day: str | None = None,
                       relations: Iterable[AnyRelation] = (), max_examples: int = 5) -> list[str]:
    """Validate a partition of any feature asset; return human-readable failures (empty when clean)."""
    # a relation over a missing column cannot run; the missing column is reported by itself
    relations = [r for r in relations if relation_columns(r) <= set(df.columns)]
    schema = schema_for_layout(layout, day, relations)
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        return _format(df, layout, {r.name: r for r in relations}, err.failure_cases, max_examples)
    return []


def validate_features(df, group: FeatureGroup | FeatureLayout, max_examples: int = 5, day: str | None = None) -> list[str]:
    """Validate a feature partition of a group (or of any layout); return human-readable failures."""
    if isinstance(group, FeatureLayout):
        return validate_partition(df, group, day, (), max_examples)
    return validate_partition(df, layout_of_group(group), day, relations_for(group), max_examples)
