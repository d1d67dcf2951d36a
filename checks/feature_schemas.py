"""Pandera schemas generated from a feature group's declaration (no Dagster imports).

The ranges follow from the aggregation: counts, distinct counts and active days are
>= 0; shares and frequencies lie in [0, 1]; recency is >= 0; entity keys are non-null
and unique per partition. The check runs on the Dask worker that wrote the partition,
so only a short list of failures travels back.
"""

from __future__ import annotations

import pandera.pandas as pa

from featurecore.spec import FeatureGroup

NON_NEGATIVE = {"count", "distinct", "active_days", "recency"}
UNIT_INTERVAL = {"share", "frequency"}


def _checks_for(kind: str) -> list[pa.Check]:
    if kind in NON_NEGATIVE:
        return [pa.Check.ge(0)]
    if kind in UNIT_INTERVAL:
        # float error of a ratio of integer counts can exceed 1 by an ulp
        return [pa.Check.in_range(0.0, 1.0 + 1e-9)]
    return []


def schema_for_group(group: FeatureGroup) -> pa.DataFrameSchema:
    """The Pandera schema a feature partition of `group` must satisfy."""
    columns = {k: pa.Column(object, nullable=False, coerce=False) for k in group.keys}
    for f in group.features():
        dtype = None if f.dtype == "object" else f.dtype
        columns[f.name] = pa.Column(dtype, checks=_checks_for(f.kind), nullable=True, required=True)
    return pa.DataFrameSchema(
        columns,
        unique=list(group.keys),
        strict=False,
        name=f"{group.name}_v{group.version}",
    )


def validate_features(df, group: FeatureGroup, max_examples: int = 5) -> list[str]:
    """Validate a feature partition; return human-readable failures (empty when clean)."""
    try:
        schema_for_group(group).validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        out = []
        for (column, check), grp in fc.groupby(["column", "check"], dropna=False):
            examples = ", ".join(map(str, grp["failure_case"].head(max_examples)))
            out.append(f"{group.name}.{column}: {check} failed for {len(grp)} row(s), e.g. {examples}")
        return out
    return []
