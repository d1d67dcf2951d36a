"""Freshness of feature assets: is every partition whose data has landed written, and up to date?

Each feature asset has an expected freshness (`Freshness`, declared per group in
`FRESHNESS`): partition D is due ``deadline`` after the later of its cutoff (D+1 00:00
UTC, when its data is complete) and the arrival of its data (the newest file of
``<landing>/events/D/`` or of late rows routed to D, ``<store>/_routed_events/date=D/``).
A group is

- **late** when a landed day's partition is missing past its due time;
- **stale** when a partition was written before data it depends on arrived (a landing
  folder rewritten, or late rows routed into a day of its window) and was not recomputed
  within the deadline;
- **too old** (optional, `max_age`) when its newest cutoff is older than `max_age`,
  whether or not data landed: this also catches a source that stopped delivering.

Everything is judged from file times in the landing zone and the offline store, so the
check needs no run history. It is attached to the declared groups (a candidate asset's
cadence decides which partitions exist). `fresh_until` is the next moment the verdict can
change without new writes; the project's ``feature_freshness_sensor`` re-evaluates the
check then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Mapping

import pandas as pd

from featurecore.timeutil import cutoff, day_range, shift_day


@dataclass(frozen=True)
class Freshness:
    """When a partition is due, and how far back to look."""

    deadline: timedelta = timedelta(hours=3)
    max_age: timedelta | None = None
    lookback_days: int = 35


# The daily schedule starts at 01:00 UTC; two hours of slack for the run itself.
FRESHNESS: dict[str, Freshness] = {
    "user_behavior": Freshness(timedelta(hours=3)),
    "user_temporal": Freshness(timedelta(hours=3)),
    "product_dynamic": Freshness(timedelta(hours=3)),
    "category_stats": Freshness(timedelta(hours=6)),
    "brand_popularity": Freshness(timedelta(hours=6)),
    "user_product": Freshness(timedelta(hours=4)),
    "user_context": Freshness(timedelta(hours=6)),
}
DEFAULT_FRESHNESS = Freshness()


def freshness_for(name: str) -> Freshness:
    """The declared freshness of an asset (the default for undeclared candidate assets)."""
    return FRESHNESS.get(name, DEFAULT_FRESHNESS)


def _mtime(path: Path) -> datetime | None:
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")] if path.is_dir() else []
    if not files:
        return None
    return datetime.fromtimestamp(max(p.stat().st_mtime for p in files), tz=timezone.utc)


def data_arrivals(landing_root: str, store_root: str) -> dict[str, datetime]:
    """Day -> when its newest data arrived (landing folder files or late rows routed to it)."""
    out: dict[str, datetime] = {}
    events = Path(landing_root) / "events"
    if events.is_dir():
        for d in events.iterdir():
            t = _mtime(d)
            if t is not None and len(d.name) == 10:
                out[d.name] = t
    routed = Path(store_root) / "_routed_events"
    if routed.is_dir():
        for d in routed.iterdir():
            t = _mtime(d)
            day = d.name.removeprefix("date=")
            if t is not None and len(day) == 10:
                out[day] = max(out.get(day, t), t)
    return out


def partition_writes(store_root: str, asset: str) -> dict[str, datetime]:
    """Day -> when the asset's partition was last written."""
    out = {}
    folder = Path(store_root) / asset
    if folder.is_dir():
        for d in folder.iterdir():
            if d.name.startswith("date="):
                t = _mtime(d)
                if t is not None:
                    out[d.name.removeprefix("date=")] = t
    return out


def _fmt(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _hours(td: timedelta) -> str:
    return f"{td.total_seconds() / 3600:.1f} h"


def evaluate_freshness(
    name: str,
    written: Mapping[str, datetime],
    arrivals: Mapping[str, datetime],
    *,
    window_days: int | None,
    rule: Freshness,
    now: datetime,
    start: str,
) -> dict:
    """Verdict for one asset: late partitions, stale partitions, data age, and when to look again."""
    now = now.astimezone(timezone.utc)
    newest = max([*arrivals, *written], default=start)
    first = max(start, shift_day(newest, -rule.lookback_days))  # the recent history, however old the data
    due = {d: max(cutoff(d).to_pydatetime(), t) + rule.deadline for d, t in arrivals.items() if d >= first}
    late = sorted(d for d, t in due.items() if t <= now and d not in written)
    pending = [t for d, t in due.items() if t > now and d not in written]

    stale, catching_up = [], []
    for p, wt in sorted(written.items()):
        if p < first:
            continue
        lo = first if window_days is None else max(first, shift_day(p, -(window_days - 1)))
        inputs = [(d, arrivals[d]) for d in day_range(lo, p) if d in arrivals]
        newer = [(d, t) for d, t in inputs if t > wt]
        if not newer:
            continue
        d, t = max(newer, key=lambda x: x[1])
        if t + rule.deadline <= now:
            stale.append((p, wt, d, t))
        else:
            catching_up.append(t + rule.deadline)

    latest = max(written) if written else None
    age = now - cutoff(latest).to_pydatetime() if latest else None
    too_old = rule.max_age is not None and (age is None or age > rule.max_age)

    problems = []
    if late:
        shown = "; ".join(f"{d} due {_fmt(due[d])} (overdue {_hours(now - due[d])})" for d in late[:5])
        problems.append(f"{name} is late: {len(late)} partition(s) with landed data not written past their deadline "
                        f"({_hours(rule.deadline)} after cutoff/arrival): {shown}")
    if stale:
        shown = "; ".join(f"{p} written {_fmt(wt)} before data of {d} arrived {_fmt(t)} (overdue "
                          f"{_hours(now - t - rule.deadline)})" for p, wt, d, t in stale[:5])
        problems.append(f"{name} has {len(stale)} stale partition(s): {shown}")
    if too_old:
        problems.append(f"{name} data is too old: newest cutoff "
                        f"{cutoff(latest).isoformat() if latest else 'none'} is {_hours(age) if age else 'inf'} old "
                        f"(allowed {_hours(rule.max_age)})")
    if problems:
        fresh_until = None
    else:
        # data landing later is due `deadline` after it lands: looking again within a deadline catches it
        nxt = [*pending, *catching_up, now + rule.deadline]
        if rule.max_age is not None and latest:
            nxt.append(cutoff(latest).to_pydatetime() + rule.max_age)
        fresh_until = min(nxt)
    description = " | ".join(problems) if problems else (
        f"{name} is fresh: every partition with landed data is written and current"
        + (f"; newest partition {latest} (cutoff {cutoff(latest).isoformat()}, data age {_hours(age)})" if latest else "")
        + (f"; {len(pending) + len(catching_up)} partition(s) not yet due" if pending or catching_up else ""))
    return {
        "passed": not problems,
        "description": description,
        "late": late,
        "stale": [p for p, *_ in stale],
        "latest_partition": latest,
        "data_age_hours": round(age.total_seconds() / 3600, 2) if age is not None else None,
        "deadline_hours": rule.deadline.total_seconds() / 3600,
        "fresh_until": fresh_until,
        "evaluated_at": now,
    }


def utc_now() -> datetime:
    """The current time in UTC (a function so callers can pass their own)."""
    return pd.Timestamp.now(tz="UTC").to_pydatetime()
