"""Day partitions and cutoffs: the time contract of the project (all UTC)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pandas as pd

DAY = pd.Timedelta(days=1)


def to_day(value: str | date | datetime | pd.Timestamp) -> date:
    """Return the calendar day (UTC) of a partition key, date or timestamp."""
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    if isinstance(value, pd.Timestamp):
        value = value.tz_convert("UTC") if value.tzinfo else value
        return value.date()
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date() if value.tzinfo else value.date()
    return value


def day_key(day: date | str) -> str:
    """Partition key string `YYYY-MM-DD` for a day."""
    return to_day(day).isoformat()


def day_start(day: date | str) -> pd.Timestamp:
    """`D 00:00 UTC`: the first instant of partition D."""
    return pd.Timestamp(to_day(day).isoformat(), tz="UTC")


def cutoff(day: date | str) -> pd.Timestamp:
    """`D+1 00:00 UTC`: a feature row for partition D uses only events with ts < cutoff."""
    return day_start(day) + DAY


def day_range(start: date | str, end: date | str) -> list[str]:
    """Inclusive list of day keys from start to end."""
    s, e = to_day(start), to_day(end)
    return [(s + timedelta(days=i)).isoformat() for i in range((e - s).days + 1)]


def shift_day(day: date | str, days: int) -> str:
    """The day key `days` after (or before, if negative) `day`."""
    return (to_day(day) + timedelta(days=days)).isoformat()
