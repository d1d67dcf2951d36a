"""Emit one asset-check evaluation per partition, in single-partition and range runs alike.

Dagster 1.13 records a partitioned check's `AssetCheckResult` under the run's partition
key; in a single-run backfill (a partition range) there is none, so the result lands on
no partition and every partition of the range keeps its PLANNED placeholder. Here each
day of a range gets its own `AssetCheckEvaluation` event (partition set, target
materialization attached), and the step's required result is a summary over the range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import dagster as dg


@dataclass
class Verdict:
    """The outcome of one check on one partition."""

    passed: bool
    description: str
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    metadata: dict = field(default_factory=dict)


def from_status(status: str, description: str, metadata: dict | None = None) -> Verdict:
    """A verdict from 'ok' / 'warn' / 'error'."""
    sev = dg.AssetCheckSeverity.WARN if status == "warn" else dg.AssetCheckSeverity.ERROR
    return Verdict(status not in ("warn", "error"), description, sev, metadata or {})


def _targets(instance: dg.DagsterInstance, asset_key: dg.AssetKey, days: list[str]) -> dict:
    """The latest materialization of each partition (one query for the range, newest first)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    out = {}
    recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=days),
                                           limit=4 * len(days)).records
    for r in recs:
        part = r.partition_key
        if part not in out:
            out[part] = AssetCheckEvaluationTargetMaterializationData(storage_id=r.storage_id, run_id=r.run_id,
                                                                      timestamp=r.timestamp)
    return out


def emit(context, asset_key: dg.AssetKey | str, check_name: str, per_day: dict[str, Verdict],
         blocking: bool = False) -> Iterator[dg.AssetCheckResult]:
    """Yield the check's result(s): one per partition, plus a range summary in range runs."""
    key = dg.AssetKey.from_coercible(asset_key)
    days = sorted(per_day)
    op = getattr(context, "op_execution_context", context)
    if not op.has_partition_key_range or len(days) == 1 and op.has_partition_key:
        v = per_day[days[-1]]
        yield dg.AssetCheckResult(asset_key=key, check_name=check_name, passed=v.passed, severity=v.severity,
                                  description=v.description, metadata=v.metadata)
        return
    targets = _targets(op.instance, key, days)
    for d in days:
        v = per_day[d]
        op.log_event(dg.AssetCheckEvaluation(
            asset_key=key, check_name=check_name, passed=v.passed, metadata=v.metadata, severity=v.severity,
            description=v.description, blocking=blocking, partition=d, target_materialization_data=targets.get(d),
        ))
    failed = [d for d in days if not per_day[d].passed]
    worst = dg.AssetCheckSeverity.ERROR if any(per_day[d].severity == dg.AssetCheckSeverity.ERROR for d in failed) \
        else dg.AssetCheckSeverity.WARN
    lines = [f"| {d} | {'pass' if per_day[d].passed else per_day[d].severity.value} | "
             f"{per_day[d].description[:160].replace('|', '/')} |" for d in days]
    yield dg.AssetCheckResult(
        asset_key=key, check_name=check_name, passed=not failed, severity=worst,
        description=(f"range {days[0]}..{days[-1]}: all {len(days)} partitions pass" if not failed else
                     f"range {days[0]}..{days[-1]}: {len(failed)} of {len(days)} partitions fail "
                     f"({', '.join(failed[:5])}{'...' if len(failed) > 5 else ''}); first: {per_day[failed[0]].description}"),
        metadata={"per_partition": dg.MetadataValue.md("| partition | result | detail |\n|---|---|---|\n" + "\n".join(lines)),
                  "partitions_failed": len(failed)},
    )


def md_table(rows: Iterable[dict], columns: list[str], limit: int = 30) -> dg.MetadataValue:
    """A small markdown table for check metadata."""
    rows = list(rows)
    if not rows:
        return dg.MetadataValue.md("_none_")
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "\n".join("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows[:limit])
    more = f"\n\n_{len(rows) - limit} more_" if len(rows) > limit else ""
    return dg.MetadataValue.md(head + body + more)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "/").replace("\n", " ")[:200]
