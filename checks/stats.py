"""Statistical validation of a partition against the trailing partitions, from profiles only.

Rules (all configurable in `StatRules`):

- row count within ``[rows_error_low, rows_error_high] x`` the trailing mean (ERROR),
  within ``[rows_warn_low, rows_warn_high] x`` (WARN otherwise); for a group that keeps
  every entity ever seen: never fewer rows than the previous partition (ERROR), at most
  ``rows_warn_high x`` as many (WARN);
- per feature, the missing rate within the trailing mean +- ``max(missing_tol,
  missing_sd x trailing std)`` (ERROR: a null burst is a pipeline defect);
- per feature, the zero rate within the trailing mean +- ``max(zero_tol, zero_sd x std)`` (WARN);
- per feature, the outlier rate (robust z, see `profiles.py`) at most the trailing mean
  + ``max(outlier_tol, outlier_sd x std)`` (WARN; ERROR beyond twice that allowance);
  findings list the most extreme offending values with their keys.

A count is outside its band only beyond binomial sampling slack (``alpha = 0.001``):
on 80 rows, 2 outliers against an allowed 2 % are noise, 10 are not.

Bounds are relative to the asset's own history because what is normal differs per
feature (a conversion rate is missing for most users, a 1-day count is mostly zero).
With fewer than `min_reference_days` trailing profiles a rule is not applied, and a
feature is judged only once its window is full (after the first partition, windows fill
up and rates move by construction).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.stats import binom

from featurecore.timeutil import shift_day

from .drift import worst
from .layout import FeatureLayout
from .profiles import feature_rows, partition_rows


@dataclass(frozen=True)
class StatRules:
    """Bounds for the statistical validation."""

    rows_warn_low: float = 0.8
    rows_warn_high: float = 1.25
    rows_error_low: float = 0.5
    rows_error_high: float = 2.0
    missing_tol: float = 0.05
    missing_sd: float = 4.0
    zero_tol: float = 0.10
    zero_sd: float = 4.0
    outlier_tol: float = 0.02
    outlier_sd: float = 4.0
    min_reference_days: int = 3
    alpha: float = 0.001  # binomial slack: a rate outside its band by sampling noise alone is not a finding
    rows_warmup_days: int = 14  # row counts of all-time groups grow fast while history builds up
    cumulative_warmup_days: int = 14  # features never comparable for drift still get rate bounds from then


def _band(values: np.ndarray, tol: float, sd: float) -> tuple[float, float]:
    mean = float(np.mean(values))
    spread = max(tol, sd * float(np.std(values, ddof=1)) if len(values) > 1 else tol)
    return mean, spread


def _rate(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


def _ready(warmup: int | None, start: str | None, rules: StatRules) -> str:
    """First day a feature's rates are comparable (its window is full)."""
    if start is None:
        return ""
    days = rules.cumulative_warmup_days if warmup is None else warmup
    return shift_day(start, max(days - 1, 0))


def evaluate_stats(current: pd.DataFrame, references: Mapping[str, pd.DataFrame], rules: StatRules = StatRules(),
                   source: str = "", *, day: str | None = None, start: str | None = None,
                   layout: FeatureLayout | None = None, all_time_universe: bool = False) -> dict:
    """Findings of the statistical validation of one partition's profile against reference profiles (day -> profile).

    With `start` (the first partition) and `layout`, a feature is judged only from the day its
    window is full, against reference days whose window is full too: while windows fill up
    after the first partition, rates move by construction. An `all_time_universe` (a group
    that keeps every entity ever seen) can only grow: its rows are compared with the
    previous partition instead of a trailing mean it outgrows.
    """
    findings: list[dict] = []
    rows = partition_rows(current)
    ref_days = sorted(references)
    row_days = [d for d in ref_days if d >= _ready(rules.rows_warmup_days, start, rules)]
    judged_rows = len(row_days) >= rules.min_reference_days and (day is None or day >= _ready(rules.rows_warmup_days, start, rules))
    ratio = float("nan")
    if judged_rows and all_time_universe:
        prev_day = row_days[-1]
        prev = partition_rows(references[prev_day])
        ratio = rows / prev if prev else float("inf")
        if rows < prev:
            level, why = "error", f"fewer than the {prev} of {prev_day}: an all-time universe only grows (lost state?)"
        elif ratio > rules.rows_warn_high:
            level, why = "warn", f"{ratio:.2f}x the {prev} of {prev_day} (more than {rules.rows_warn_high:g}x new entities in a day)"
        else:
            level = "ok"
        if level != "ok":
            findings.append({"item": "__rows__", "rule": "row count", "status": level, "value": rows, "expected": prev,
                             "message": f"{source}: row count {rows} is {why}"})
    elif judged_rows:
        mean_rows = float(np.mean([partition_rows(references[d]) for d in row_days]))
        ratio = rows / mean_rows if mean_rows else float("inf")
        if not rules.rows_error_low <= ratio <= rules.rows_error_high:
            level = "error"
        elif not rules.rows_warn_low <= ratio <= rules.rows_warn_high:
            level = "warn"
        else:
            level = "ok"
        if level != "ok":
            findings.append({"item": "__rows__", "rule": "row count", "status": level, "value": rows, "expected": mean_rows,
                             "message": f"{source}: row count {rows} is {ratio:.2f}x the trailing {len(row_days)}-day mean "
                                        f"{mean_rows:.0f} (allowed {rules.rows_warn_low:g}x-{rules.rows_warn_high:g}x, "
                                        f"error outside {rules.rows_error_low:g}x-{rules.rows_error_high:g}x)"})

    cur = feature_rows(current)
    refs = {d: feature_rows(references[d]) for d in ref_days}
    judged = 0
    for name, row in cur.iterrows():
        warm = layout.get(name).warmup_days if layout is not None and name in layout.names() else 0
        ready = _ready(warm, start, rules)
        if day is not None and day < ready:
            continue
        hist = [r.loc[name] for d, r in refs.items() if d >= ready and name in r.index and r.loc[name, "rows"] > 0]
        if len(hist) < rules.min_reference_days or not row["rows"]:
            continue
        judged += 1
        n = row["rows"]
        checks = [
            ("missing rate", "n_missing", rules.missing_tol, rules.missing_sd, "error", True),
            ("zero rate", "n_zero", rules.zero_tol, rules.zero_sd, "warn", True),
            ("outlier rate", "n_outlier", rules.outlier_tol, rules.outlier_sd, "warn", False),
        ]
        for label, col, tol, sd, level, two_sided in checks:
            if col == "n_zero" and row["dtype"] == "object":
                continue
            den_now = n if col == "n_missing" else n - row["n_missing"]
            now = _rate(row[col], den_now)
            past = np.array([_rate(h[col], h["rows"] if col == "n_missing" else h["rows"] - h["n_missing"]) for h in hist])
            past = past[~np.isnan(past)]
            if math.isnan(now) or not len(past):
                continue
            mean, spread = _band(past, tol, sd)
            lo, hi = max(0.0, mean - spread), min(1.0, mean + spread)
            count = int(row[col])
            # a count is judged against the band with binomial slack: 2 outliers in 80 rows is not a burst
            over = count > binom.ppf(1 - rules.alpha, int(den_now), hi) if hi < 1 else False
            under = two_sided and lo > 0 and count < binom.ppf(rules.alpha, int(den_now), lo)
            if not (over or under):
                continue
            sev = level
            if col == "n_outlier" and count > binom.ppf(1 - rules.alpha, int(den_now), min(1.0, mean + 2 * spread)):
                sev = "error"
            msg = (f"{source}.{name}: {label} {now:.1%} ({count} of {int(den_now)} rows) vs trailing mean {mean:.1%} "
                   f"over {len(past)} days (allowed {lo:.1%}-{hi:.1%})")
            ex = []
            if col == "n_outlier" and isinstance(row.get("examples"), str):
                ex = json.loads(row["examples"])
                shown = "; ".join(", ".join(f"{k}={v}" for k, v in e.items() if k not in ("value", "z"))
                                  + f": {e['value']:g} (z={e['z']:g})" for e in ex)
                msg += f"; most extreme: {shown}"
            findings.append({"item": name, "rule": label, "status": sev, "value": round(now, 6), "expected": round(mean, 6),
                             "low": round(lo, 6), "high": round(hi, 6), "message": msg, "examples": ex})
    note = "" if judged or judged_rows else f"nothing judged yet ({len(ref_days)} trailing profile(s); windows still filling)"
    return {"status": worst(f["status"] for f in findings), "findings": findings, "note": note, "rows": rows,
            "reference_days": len(ref_days), "features_judged": judged,
            "rows_ratio": None if np.isnan(ratio) else round(ratio, 4)}
