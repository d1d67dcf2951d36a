"""The daily partitioning shared by every time-partitioned asset."""

from __future__ import annotations

import dagster as dg

from featurecore.config import load_source_config

# Partition D is the UTC day [D, D+1); its last key is yesterday, the last complete day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=load_source_config().partition_start, timezone="UTC", fmt="%Y-%m-%d"
)
