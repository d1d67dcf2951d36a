"""Helpers that turn small frames and stats into Dagster metadata for the UI."""

from __future__ import annotations

import pandas as pd
import dagster as dg


def schema_metadata(df: pd.DataFrame) -> dg.TableSchema:
    """A TableSchema from a frame's columns and dtypes (use on a head, not the data)."""
    return dg.TableSchema(columns=[dg.TableColumn(str(c), str(t)) for c, t in df.dtypes.items()])


def preview(df: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    """A markdown preview of the first rows."""
    return dg.MetadataValue.md(df.head(rows).to_markdown(index=False) if len(df) else "_empty_")


def per_day_table(stats: list[dict], columns: list[str]) -> dg.MetadataValue:
    """A markdown table with one line per partition day."""
    df = pd.DataFrame(stats)[["day", *columns]] if stats else pd.DataFrame(columns=["day", *columns])
    return dg.MetadataValue.md(df.to_markdown(index=False))


def row_count(rows: int, days: int) -> dict:
    """Row-count metadata: Dagster's standard key for one partition, `rows_in_run` for a range.

    A range run records the same metadata on every partition of the range, so a total
    under `dagster/row_count` would be wrong for each of them.
    """
    return {"dagster/row_count" if days == 1 else "rows_in_run": rows}
