"""Relations between features of a partition: what must hold, and what should.

Two sources of relations per feature asset:

- implied by the declaration (`implied_relations`), always true by construction: a
  shorter window never counts more than a longer one of the same stream (counts, sums of
  non-negative values, active days; distinct counts within the HLL error), quantiles
  are ordered and lie within min..max, min <= mean <= max, the shares of one
  declaration sum to 1, and the time since the last filtered event is at least the time
  since the last event of any kind;
- declared here (`RELATIONS`, next to the group declarations in spirit): business
  relations. Only relations that truly must hold are declared as laws; the funnel
  (purchases <= cart adds <= views per entity and window) is a *tendency*: in the demo
  generator every purchase follows a cart add of the same session and every cart add
  an item viewed in it, but on real data a purchase can come from a "buy now" button, a
  cart added before the window started, or a cart add that arrived late in the next
  day's folder and is not merged yet. So it is declared with `max_violation_share`: a
  few violating rows are allowed, a systematic break is not. Features that should move
  together are declared with a minimum rank correlation (`Correlates`).

A `Relation` with `max_violation_share == 0` is a law: it is also part of the blocking
Pandera schema (see `feature_schemas.py`). Every relation is evaluated on each
partition when it is profiled and reported by the `relations` check with the
violating rows (keys and both sides) or the measured correlation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Union

import numpy as np
import pandas as pd

from featurecore.spec import FeatureGroup

from .layout import NON_NEGATIVE_COLUMNS

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = ("<=", ">=", "==")


@dataclass(frozen=True)
class Relation:
    """`left <op> right` on every row where both sides are defined; sides are pandas expressions."""

    left: str
    op: str
    right: str
    name: str = ""
    rtol: float = 1e-9
    atol: float = 1e-9
    max_violation_share: float = 0.0  # 0: a law (every row); > 0: a tendency
    description: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"relation {self.left} {self.op} {self.right}: op must be one of {_OPS}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.left} {self.op} {self.right}")

    @property
    def hard(self) -> bool:
        """True for a law that must hold on every row."""
        return self.max_violation_share == 0

    def columns(self) -> set[str]:
        """Feature columns the relation reads."""
        return set(_IDENT.findall(self.left)) | set(_IDENT.findall(self.right))

    def sides(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Left and right values per row (float64)."""
        def ev(expr: str) -> np.ndarray:
            """One side: a column, or an expression over columns."""
            v = df[expr] if expr in df.columns else df.eval(expr, engine="python")
            return np.asarray(pd.to_numeric(v, errors="coerce"), dtype=np.float64)
        return ev(self.left), ev(self.right)

    def holds(self, df: pd.DataFrame) -> pd.Series:
        """Per row: True where the relation holds or a side is undefined."""
        a, b = self.sides(df)
        slack = self.atol + self.rtol * np.abs(b)
        with np.errstate(invalid="ignore"):
            if self.op == "<=":
                ok = a <= b + slack
            elif self.op == ">=":
                ok = a >= b - slack
            else:
                ok = np.abs(a - b) <= slack
        return pd.Series(ok | np.isnan(a) | np.isnan(b), index=df.index)


@dataclass(frozen=True)
class SumsTo:
    """The row sum of `columns` equals `total` (or is at most it, when not `exact`) where any is defined."""

    columns: tuple[str, ...]
    total: float = 1.0
    exact: bool = True
    atol: float = 1e-6
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        if not self.name:
            stem = _common_prefix(self.columns)
            object.__setattr__(self, "name", f"sum({stem}*) {'==' if self.exact else '<='} {self.total:g}")

    hard = True
    max_violation_share = 0.0

    def holds(self, df: pd.DataFrame) -> pd.Series:
        """Per row: True where the shares add up (rows with every share undefined pass)."""
        block = df[list(self.columns)].astype(np.float64)
        s = block.sum(axis=1, min_count=1)
        ok = (s - self.total).abs() <= self.atol if self.exact else s <= self.total + self.atol
        return ok | s.isna()

    def sides(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Row sums and the expected total."""
        s = df[list(self.columns)].astype(np.float64).sum(axis=1, min_count=1).to_numpy()
        return s, np.full(len(df), self.total)

    def columns_read(self) -> set[str]:
        """Feature columns the rule reads."""
        return set(self.columns)


@dataclass(frozen=True)
class Correlates:
    """`a` and `b` should move together: rank correlation >= `min_corr` on the partition."""

    a: str
    b: str
    min_corr: float = 0.5
    method: str = "spearman"
    min_rows: int = 30  # fewer complete rows: not evaluated
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"corr({self.a}, {self.b}) >= {self.min_corr:g}")

    hard = False

    def columns(self) -> set[str]:
        """Feature columns the rule reads."""
        return {self.a, self.b}

    def correlation(self, df: pd.DataFrame) -> tuple[float, int]:
        """(correlation, rows used); NaN when too few rows or a constant column."""
        pair = df[[self.a, self.b]].astype(np.float64).dropna()
        if len(pair) < self.min_rows or pair[self.a].nunique() < 2 or pair[self.b].nunique() < 2:
            return float("nan"), len(pair)
        return float(pair[self.a].corr(pair[self.b], method=self.method)), len(pair)


AnyRelation = Union[Relation, SumsTo, Correlates]


def _common_prefix(names: Iterable[str]) -> str:
    names = list(names)
    p = names[0] if names else ""
    for n in names[1:]:
        while not n.startswith(p):
            p = p[:-1]
    return p


def relation_columns(r: AnyRelation) -> set[str]:
    """Feature columns a relation reads."""
    return r.columns_read() if isinstance(r, SumsTo) else r.columns()


# --------------------------------------------------------------------------- implied by declarations


def implied_relations(group: FeatureGroup) -> list[AnyRelation]:
    """Relations that hold by construction of the group's features."""
    out: list[AnyRelation] = []
    feats = group.features()
    by_source: dict[int, list] = {}
    for f in feats:
        by_source.setdefault(id(f.source), []).append(f)
    for fs in by_source.values():
        f0 = fs[0]
        kind = f0.kind
        col = f0.stream.column if f0.stream is not None else None
        if kind in ("count", "active_days") or (kind == "sum" and col in NON_NEGATIVE_COLUMNS):
            ordered = sorted(fs, key=lambda f: f.window.sort_key())
            for a, b in zip(ordered, ordered[1:]):
                out.append(Relation(a.name, "<=", b.name, description=f"{a.window.label} window inside {b.window.label}"))
        elif kind == "distinct":
            ordered = sorted(fs, key=lambda f: f.window.sort_key())
            for a, b in zip(ordered, ordered[1:]):
                out.append(Relation(a.name, "<=", b.name, rtol=0.05, max_violation_share=0.01,
                                    description="distinct count of a shorter window, within the HLL error"))
        elif kind == "quantile":
            by_window: dict = {}
            for f in fs:
                by_window.setdefault(f.window, []).append(f)
            for ws in by_window.values():
                ws = sorted(ws, key=lambda f: f.param)
                for a, b in zip(ws, ws[1:]):
                    out.append(Relation(a.name, "<=", b.name, description="quantiles of one sketch are ordered"))
        elif kind == "share":
            by_window = {}
            for f in fs:
                by_window.setdefault(f.window, []).append(f)
            for ws in by_window.values():
                exact = f0.source.other  # without 'other', values outside the list are left out
                out.append(SumsTo(tuple(f.name for f in ws), 1.0, exact=exact,
                                  description="shares of one declaration" + ("" if exact else " (no 'other' share)")))
    # min <= mean/quantiles <= max on the same stream and window
    stats: dict[tuple, dict[str, list[str]]] = {}
    for f in feats:
        if f.kind in ("min", "max", "mean", "quantile") and f.stream is not None:
            stats.setdefault((f.stream.label, f.window), {}).setdefault(f.kind, []).append(f.name)
    for d in stats.values():
        for lo in d.get("min", []):
            for mid in d.get("mean", []) + d.get("quantile", []) + d.get("max", []):
                out.append(Relation(lo, "<=", mid, rtol=1e-9, description="minimum of the same values"))
        for hi in d.get("max", []):
            for mid in d.get("mean", []) + d.get("quantile", []):
                out.append(Relation(mid, "<=", hi, rtol=1e-9, description="maximum of the same values"))
    # recency of a filtered stream >= recency of any event
    rec = [f for f in feats if f.kind == "recency"]
    unfiltered = [f for f in rec if not f.stream.where]
    for base in unfiltered:
        for f in rec:
            if f.stream.where:
                out.append(Relation(f.name, ">=", base.name, description="the last filtered event is not after the last event"))
    return out


# --------------------------------------------------------------------------- declared


def _funnel(*pairs: tuple[str, str], share: float = 0.02) -> list[Relation]:
    return [
        Relation(a, "<=", b, max_violation_share=share,
                 description="funnel tendency: a purchase follows a cart add and a cart add follows a view; "
                             "late cart adds, 'buy now' and carts before the window start break it on a few rows")
        for a, b in pairs
    ]


RELATIONS: dict[str, list[AnyRelation]] = {
    "user_behavior": [
        *_funnel(("purchase_count_7d", "cart_add_count_7d"), ("purchase_count_30d", "cart_add_count_30d"),
                 ("cart_add_count_7d", "view_count_7d"), ("cart_add_count_30d", "view_count_30d")),
        Relation("view_product_id_distinct_30d", "<=", "view_count_30d", rtol=0.05, max_violation_share=0.01,
                 description="distinct products viewed cannot exceed views (HLL estimate: 5 % slack)"),
        Correlates("purchase_count_30d", "purchase_amount_sum_30d", 0.8,
                   description="more purchases, more revenue"),
        Correlates("view_count_30d", "view_product_id_distinct_30d", 0.7,
                   description="more views reach more distinct products"),
        Correlates("cart_add_count_30d", "purchase_count_30d", 0.4,
                   description="purchases follow cart adds"),
    ],
    "user_temporal": [
        Relation("purchase_frequency_30d * 30", "<=", "active_days_30d", atol=1e-6,
                 description="days with a purchase are days with an event"),
        Correlates("active_days_7d", "active_days_30d", 0.5, description="recent and monthly activity"),
    ],
    "product_dynamic": [
        *_funnel(("purchase_count_7d", "cart_add_count_7d"), ("purchase_count_30d", "cart_add_count_30d"),
                 ("cart_add_count_7d", "view_count_7d"), ("cart_add_count_30d", "view_count_30d")),
        Correlates("view_count_7d", "user_id_distinct_7d", 0.7, description="views come from distinct users"),
        Correlates("popularity_hl7d", "view_count_7d", 0.7, description="decayed popularity follows recent views"),
    ],
    "brand_popularity": [
        *_funnel(("purchase_count_30d", "view_count_30d")),
        Correlates("view_count_30d", "user_id_distinct_30d", 0.7, description="views come from distinct users"),
    ],
    "user_product": [
        *_funnel(("purchase_count_30d", "cart_add_count_30d"), ("cart_add_count_30d", "view_count_30d"),
                 ("purchase_count_all", "cart_add_count_all"), ("cart_add_count_all", "view_count_all")),
    ],
}


def relations_for(group: FeatureGroup | None, name: str | None = None,
                  extra: Iterable[AnyRelation] = ()) -> list[AnyRelation]:
    """Implied plus declared relations of a group (or only declared ones for a candidate asset `name`)."""
    out = implied_relations(group) if group is not None else []
    out += RELATIONS.get(name or (group.name if group is not None else ""), [])
    out += list(extra)
    return out


# --------------------------------------------------------------------------- evaluation


def _examples(df: pd.DataFrame, bad: np.ndarray, keys: list[str], a: np.ndarray, b: np.ndarray,
              n: int) -> list[dict]:
    idx = np.flatnonzero(bad)
    # the largest excess first: the most telling rows
    order = idx[np.argsort(-(np.nan_to_num(a[idx]) - np.nan_to_num(b[idx])), kind="stable")][:n]
    out = []
    for i in order:
        row = {k: str(df[k].iloc[i]) for k in keys if k in df.columns}
        row.update(left=float(a[i]), right=float(b[i]))
        out.append(row)
    return out


def evaluate_relations(df: pd.DataFrame, relations: Iterable[AnyRelation], keys: Iterable[str],
                       max_examples: int = 5) -> list[dict]:
    """Evaluate every relation on a partition; one small dict per relation (JSON-friendly)."""
    keys = list(keys)
    out = []
    for r in relations:
        missing = sorted(relation_columns(r) - set(df.columns))
        base = {"relation": r.name, "type": type(r).__name__, "hard": bool(r.hard), "description": r.description}
        if missing:
            out.append({**base, "status": "error" if r.hard else "warn", "checked": 0, "violations": 0,
                        "message": f"{r.name}: column(s) {', '.join(missing)} missing from the partition"})
            continue
        if isinstance(r, Correlates):
            rho, n = r.correlation(df)
            ok = np.isnan(rho) or rho >= r.min_corr
            msg = (f"{r.name}: too few rows ({n}) or a constant column, not evaluated" if np.isnan(rho)
                   else f"{r.method} correlation of {r.a} and {r.b} is {rho:.3f} on {n} rows "
                        f"({'>=' if ok else 'below'} the minimum {r.min_corr:g})")
            out.append({**base, "status": "ok" if ok else "warn", "checked": n, "violations": 0 if ok else 1,
                        "statistic": None if np.isnan(rho) else round(rho, 4), "threshold": r.min_corr, "message": msg})
            continue
        a, b = r.sides(df)
        defined = ~(np.isnan(a) | np.isnan(b))
        bad = ~r.holds(df).to_numpy()
        n_chk, n_bad = int(defined.sum()), int(bad.sum())
        share = n_bad / n_chk if n_chk else 0.0
        allowed = r.max_violation_share
        status = "ok" if (n_bad == 0 or share <= allowed) else ("error" if r.hard else "warn")
        ex = _examples(df, bad, keys, a, b, max_examples) if n_bad else []
        if n_bad == 0:
            msg = f"{r.name}: holds on all {n_chk} rows"
        else:
            shown = "; ".join(
                ", ".join(f"{k}={e[k]}" for k in keys if k in e) + f": {e['left']:g} vs {e['right']:g}" for e in ex)
            msg = (f"{r.name}: {n_bad} of {n_chk} rows violate it ({share:.2%}, allowed {allowed:.2%}); "
                   f"e.g. {shown}")
        out.append({**base, "status": status, "checked": n_chk, "violations": n_bad, "statistic": round(share, 6),
                    "threshold": allowed, "message": msg, "examples": ex})
    return out
