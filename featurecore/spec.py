"""Declaration vocabulary for feature groups (pure Python, no Dagster).

A feature group is one short declaration, in the spirit of Chronon's
GroupBy/Aggregation/Window and Feast's FeatureView::

    FeatureGroup(
        "user_behavior",
        keys=("user_id",),
        aggregations=[
            Aggregation("count", where=PURCHASE, windows=("1d", "7d", "30d", ALL_TIME)),
            Aggregation("sum", column="amount", where=PURCHASE, windows=("7d", "30d")),
            Aggregation("distinct", column="product_id", where=VIEW, windows=("30d",)),
        ],
        derived=[Derived.ratio("conversion_rate_30d", "purchase_count_30d", "view_count_30d")],
        ttl=timedelta(days=30),
    )

Time contract (all UTC): the feature row of partition day ``D`` is the state as of the
cutoff ``t = D+1 00:00`` and uses only events with ``ts < t``. A window of ``w`` days
covers ``[t - w days, t)``, i.e. exactly the daily tiles of days ``D-w+1 .. D``;
``ALL_TIME`` covers every event with ``ts < t``.

Vocabulary
----------
Aggregation ops (each takes one or more windows):

========== ================================================================ ===========
op         value (per entity, over the events of the window)                 empty window
========== ================================================================ ===========
count      number of matching events (with ``column``: non-null values)     0
sum        sum of ``column``                                                 0
mean       arithmetic mean of ``column``                                     NaN
std        *sample* standard deviation (ddof=1) of ``column``; NaN if n<2   NaN
min / max  min / max of ``column``                                          NaN
last       ``column`` value of the latest event (ties on ts: largest value) NaN
distinct   approximate distinct count of ``column`` (HLL, lg_k=12)           0
quantile   approximate quantiles of ``column`` (KLL, k=200), one feature     NaN
           per entry of ``quantiles`` (inclusive rank, "inverted CDF")
share      for each declared category value c: #(column == c) / #(column   NaN
           non-null); plus ``other`` = values outside the declared list
active_days number of distinct UTC days in the window with a matching event 0
========== ================================================================ ===========

Derived features (computed at feature time from tile state, see ``Derived``):
``ratio`` (a / b, NaN when b is 0 or NaN), ``recency`` (seconds from the cutoff back to
the last matching event, all-time, NaN if none), ``frequency`` (active days / window
days, i.e. the fraction of days of the window with at least one matching event) and
``ema`` (continuous-time exponentially decayed sum / mean / rate with a half-life).

Filters (``where``): ``("event_type", "==", "purchase")``, ``("event_type", "in",
("view", "cart_add"))``, ``!=``, ``not in``, ``>``, ``>=``, ``<``, ``<=``,
``("referrer", "notnull")``, ``("referrer", "isnull")``, or a tuple of such conditions
(AND). A null value never matches a comparison (only ``isnull``).

Engine-derived value columns (``DERIVED_COLUMNS``; an event column of the same name,
if present, takes precedence): ``amount = price * quantity`` (needs both columns);
``dow`` (``mon`` .. ``sun`` of ``ts``); ``hour`` (0..23); ``hour_bucket`` (``night``
[0,6), ``morning`` [6,12), ``afternoon`` [12,18), ``evening`` [18,24) of the UTC hour).

Missing optional columns: an aggregation whose column, filter column or derived-column
inputs are absent from the events is *skipped* in the tile (its tile columns are not
written). In the features it then appears as an all-NaN column, never as 0, so the
schema is stable and "unknown" stays distinguishable from "zero". An optional column
that is present but entirely null is data, not absence: counts/sums over it are 0.
All numeric features are float64 (counts too), so NaN is always representable and the
schema never depends on the data; ``last`` of a string column is a string (object).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Iterable

import pandas as pd

AGG_OPS = (
    "count", "sum", "mean", "std", "min", "max", "last", "distinct", "quantile", "share",
    "active_days",
)
DERIVED_KINDS = ("ratio", "recency", "frequency", "ema")
EMA_MODES = ("sum", "mean", "rate")
COMPARE_OPS = ("==", "!=", "in", "not in", ">", ">=", "<", "<=", "notnull", "isnull")
REQUIRED_EVENT_COLUMNS = ("user_id", "ts", "event_type")
#: Contract columns known to be numeric (``last`` of them is float64, of others object).
NUMERIC_COLUMNS = ("price", "quantity", "amount", "hour")

#: Value columns the engine derives from raw event columns: name -> raw inputs.
DERIVED_COLUMNS: dict[str, tuple[str, ...]] = {
    "amount": ("price", "quantity"),
    "dow": ("ts",),
    "hour": ("ts",),
    "hour_bucket": ("ts",),
}
DOW_VALUES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: hour-of-day buckets (UTC): name -> [start hour, end hour)
HOUR_BUCKETS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}

# Tile statistics per op (see tiles.py for their meaning and merge rule).
_OP_STATS = {
    "count": ("n",),
    "sum": ("n", "sum"),
    "mean": ("n", "sum"),
    "std": ("n", "sum", "m2"),
    "min": ("min",),
    "max": ("max",),
    "last": ("first_ts", "last_ts", "last"),
    "distinct": ("hll",),
    "quantile": ("kll",),
    "share": ("n",),  # + cnt_<category>
    "active_days": ("active",),
}
_STAT_ORDER = ("n", "sum", "m2", "min", "max", "first_ts", "last_ts", "last", "hll", "kll", "active")
_NEEDS_COLUMN = {"sum", "mean", "std", "min", "max", "last", "distinct", "quantile", "share"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _slug(value: Any) -> str:
    """Readable, identifier-safe label for a value: lower case, [a-z0-9_]."""
    s = str(value).strip().lower()
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_")
    return s or "blank"


def parse_duration(value: Any) -> timedelta:
    """``"7d"``, ``"2w"``, ``"12h"``, ``"30m"``, ``"90s"``, ``timedelta`` or ``pd.Timedelta``."""
    if isinstance(value, pd.Timedelta):
        return value.to_pytimedelta()
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([wdhms])\s*", value.lower())
        if m:
            n, unit = float(m.group(1)), m.group(2)
            return timedelta(**{{"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[unit]: n})
    raise ValueError(f"cannot parse duration {value!r}: use e.g. '7d', '12h', '2w' or a timedelta")


def _duration_label(td: timedelta) -> str:
    secs = td.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{secs:g}s".replace(".", "_")


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """A whole number of days before the cutoff, or all time.

    ``Window("7d") == Window(7) == Window.days(7)``; ``Window("all") == ALL_TIME``.
    A window of w days covers ``[t - w days, t)``: the tiles of days D-w+1 .. D.
    """

    length: Any = "all"

    def __post_init__(self) -> None:
        v = self.length
        if isinstance(v, Window):
            v = v.length
        if v is None or (isinstance(v, str) and v.strip().lower() in ("all", "all_time", "alltime")):
            object.__setattr__(self, "length", "all")
            return
        if isinstance(v, bool):
            raise ValueError(f"invalid window {v!r}")
        if isinstance(v, int):
            n = v
        else:
            td = parse_duration(v)
            if td.total_seconds() % 86400 != 0:
                raise ValueError(f"window {v!r} is not a whole number of days (tiles are daily)")
            n = int(td.total_seconds() // 86400)
        if n < 1:
            raise ValueError(f"window {v!r} must be at least 1 day")
        object.__setattr__(self, "length", f"{n}d")

    @classmethod
    def days(cls, n: int) -> "Window":
        """A window of ``n`` days (``Window.days(7) == Window("7d")``)."""
        return cls(int(n))

    @property
    def is_all_time(self) -> bool:
        """True for the all-time window."""
        return self.length == "all"

    @property
    def n_days(self) -> int | None:
        """Window length in days, ``None`` for all time."""
        return None if self.is_all_time else int(self.length[:-1])

    @property
    def label(self) -> str:
        """Feature-name suffix: ``1d``, ``7d``, ``30d``, ``all``."""
        return self.length

    def describe(self) -> str:
        """Readable span for feature descriptions, e.g. ``the 7 days before the cutoff [t-7d, t)``."""
        if self.is_all_time:
            return "all time before the cutoff (ts < t)"
        n = self.n_days
        return f"the {n} day{'s' if n > 1 else ''} before the cutoff [t-{n}d, t)"

    def sort_key(self) -> float:
        """Sort key of windows: length in days, all time last (infinity)."""
        return math.inf if self.is_all_time else float(self.n_days)

    def __repr__(self) -> str:
        return "ALL_TIME" if self.is_all_time else f"Window({self.length!r})"


ALL_TIME = Window("all")


def _windows(value: Any) -> tuple[Window, ...]:
    if value is None:
        return ()
    if isinstance(value, (Window, str, int, timedelta, pd.Timedelta)):
        value = (value,)
    out: list[Window] = []
    for v in value:
        w = v if isinstance(v, Window) else Window(v)
        if w not in out:
            out.append(w)
    return tuple(out)


# --------------------------------------------------------------------------- filters

Condition = tuple  # (column, op, value)


def normalize_where(where: Any) -> tuple[Condition, ...] | None:
    """Canonical form of a filter: a tuple of (column, op, value) conditions, ANDed."""
    if where is None or where == ():
        return None
    if isinstance(where, (tuple, list)) and where and isinstance(where[0], str):
        where = (where,)
    conds = []
    for cond in where:
        if not isinstance(cond, (tuple, list)) or len(cond) not in (2, 3) or not isinstance(cond[0], str):
            raise ValueError(
                f"invalid filter condition {cond!r}: use (column, op, value), e.g. "
                "('event_type', '==', 'purchase') or ('event_type', 'in', ('view', 'cart_add'))"
            )
        col, op = cond[0], str(cond[1]).strip().lower()
        if op not in COMPARE_OPS:
            raise ValueError(f"unknown filter op {cond[1]!r} in {cond!r}; known: {', '.join(COMPARE_OPS)}")
        if op in ("notnull", "isnull"):
            if len(cond) == 3 and cond[2] is not None:
                raise ValueError(f"filter {cond!r}: {op} takes no value")
            conds.append((col, op, None))
            continue
        if len(cond) != 3:
            raise ValueError(f"filter {cond!r} needs a value")
        value = cond[2]
        if op in ("in", "not in"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                raise ValueError(f"filter {cond!r}: '{op}' needs a tuple of values")
            value = tuple(value)
            if not value:
                raise ValueError(f"filter {cond!r}: empty value list")
        elif isinstance(value, (list, tuple, set)):
            raise ValueError(f"filter {cond!r}: '{op}' needs a single value (use 'in' for several)")
        conds.append((col, op, value))
    return tuple(conds)


def where_label(where: tuple[Condition, ...] | None) -> str:
    """Feature-name prefix of a filter, e.g. ``purchase``, ``view_or_cart_add``."""
    if not where:
        return ""
    parts = []
    for col, op, value in where:
        vals = "_or_".join(_slug(v) for v in value) if op in ("in", "not in") else _slug(value)
        prefix = "" if col == "event_type" else f"{_slug(col)}_"
        if op in ("==", "in"):
            parts.append(f"{prefix}{vals}")
        elif op in ("!=", "not in"):
            parts.append(f"{prefix}not_{vals}")
        elif op == "notnull":
            parts.append(f"has_{_slug(col)}")
        elif op == "isnull":
            parts.append(f"no_{_slug(col)}")
        else:
            word = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}[op]
            parts.append(f"{_slug(col)}_{word}_{vals}")
    return "_and_".join(parts)


def where_describe(where: tuple[Condition, ...] | None) -> str:
    """Readable form of a filter for feature descriptions, e.g. ``events with event_type == 'purchase'``."""
    if not where:
        return "all events"
    return "events with " + " and ".join(
        f"{c} {op}" if op in ("notnull", "isnull") else f"{c} {op} {v!r}" for c, op, v in where
    )


def where_columns(where: tuple[Condition, ...] | None) -> tuple[str, ...]:
    """Columns a filter reads, in order of first use, without duplicates."""
    return tuple(dict.fromkeys(c for c, _, _ in (where or ())))


# --------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class Stream:
    """The events matching ``where`` with a non-null ``column`` (or all matching events).

    Tile columns of a stream are named ``<label>__<stat>``, e.g. ``purchase__n``,
    ``purchase_amount__sum``, ``view_product_id__hll``, ``view_category__cnt_books``.
    """

    where: tuple | None
    column: str | None
    label: str

    def col(self, stat: str) -> str:
        """Tile column name of one of the stream's statistics: ``<label>__<stat>``."""
        return f"{self.label}__{stat}"

    @property
    def inputs(self) -> tuple[str, ...]:
        """Event columns (raw, or derived names) the stream reads."""
        cols = list(where_columns(self.where))
        if self.column:
            cols.append(self.column)
        return tuple(dict.fromkeys(cols))

    @property
    def raw_inputs(self) -> tuple[str, ...]:
        """Raw event columns the stream needs (derived columns expanded)."""
        out: list[str] = []
        for c in self.inputs:
            out.extend(DERIVED_COLUMNS.get(c, (c,)))
        return tuple(dict.fromkeys(out))


def _stream_label(where: tuple | None, column: str | None) -> str:
    parts = [p for p in (where_label(where), _slug(column) if column else "") if p]
    return "_".join(parts) or "event"


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Aggregation:
    """One aggregation over one or more windows; see the module docstring for ops.

    ``name`` replaces the default base name (``<stream>_<op>``; ``<stream>`` for
    quantile; ``<stream>_share`` for share); features are ``<base>_<window>``, or
    ``<base>_<p50|category>_<window>`` for multi-output ops.
    """

    op: str
    column: str | None = None
    where: Any = None
    windows: Any = ()
    name: str | None = None
    quantiles: tuple[float, ...] = (0.5, 0.9)
    categories: tuple | None = None
    other: bool = True  # share: also emit the share of values outside `categories`
    description: str | None = None

    def __post_init__(self) -> None:
        op = str(self.op).strip().lower()
        if op not in AGG_OPS:
            hint = " (declare it with Derived.%s)" % op if op in DERIVED_KINDS else ""
            raise ValueError(f"unknown aggregation op {self.op!r}{hint}; known: {', '.join(AGG_OPS)}")
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "where", normalize_where(self.where))
        wins = _windows(self.windows)
        if not wins:
            raise ValueError(
                f"Aggregation({op!r}, column={self.column!r}): no window; pass windows=('7d', ...) or (ALL_TIME,)"
            )
        object.__setattr__(self, "windows", wins)
        if op in _NEEDS_COLUMN and not self.column:
            raise ValueError(f"Aggregation({op!r}) needs a column")
        if op == "active_days" and self.column:
            raise ValueError("Aggregation('active_days') takes no column (use where=...)")
        if self.column is not None and not isinstance(self.column, str):
            raise ValueError(f"column must be a string, got {self.column!r}")
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ValueError(f"feature name {self.name!r} must match {_NAME_RE.pattern}")
        qs = tuple(float(q) for q in (self.quantiles or ()))
        object.__setattr__(self, "quantiles", qs)
        if op == "quantile":
            if not qs:
                raise ValueError("Aggregation('quantile') needs quantiles=(...)")
            for q in qs:
                if not 0.0 <= q <= 1.0:
                    raise ValueError(f"quantile {q} outside [0, 1]")
            if len({_q_label(q) for q in qs}) != len(qs):
                raise ValueError(f"duplicate quantiles {qs}")
        if op == "share":
            if not self.categories:
                raise ValueError(
                    f"Aggregation('share', column={self.column!r}) needs categories=(...): the declared values"
                )
            cats = tuple(dict.fromkeys(self.categories))
            slugs = [_slug(c) for c in cats] + (["other"] if self.other else [])
            if len(set(slugs)) != len(slugs):
                raise ValueError(f"share categories {cats} collide once turned into names {slugs}")
            object.__setattr__(self, "categories", cats)
        elif self.categories is not None:
            raise ValueError(f"categories only apply to op 'share', not {op!r}")

    @property
    def stream_key(self) -> tuple:
        """``(where, column)``: aggregations with the same key share one stream of tile columns."""
        return (self.where, self.column)


def _q_label(q: float) -> str:
    s = f"{q * 100:.6f}".rstrip("0").rstrip(".")
    return "p" + s.replace(".", "_")


@dataclass(frozen=True)
class Derived:
    """A feature computed at feature time; build it with the class methods.

    - ``Derived.ratio(name, numerator, denominator)``: ``numerator / denominator``
      (names of other features of the group); NaN when the denominator is 0 or NaN.
    - ``Derived.recency(where=None)``: seconds from the cutoff back to the last
      matching event, over all time; NaN if there is none. Name
      ``seconds_since_last_<label>`` (``seconds_since_last_event`` without filter).
    - ``Derived.frequency(window, where=None)``: active days / window days, the
      fraction of the window's days (UTC) with at least one matching event, in
      [0, 1]. Name ``<label>_frequency_<w>``. Finite windows only.
    - ``Derived.ema(half_life, column=None, where=None, mode="sum")``: continuous-time
      exponential decay over all matching events before the cutoff t, with weights
      ``w_i = 2^(-(t - t_i) / half_life)`` and ``x_i`` = column value (1 without a
      column): ``sum`` = sum_i w_i x_i; ``mean`` = sum_i w_i x_i / sum_i w_i (NaN if
      no event); ``rate`` = sum_i w_i x_i * ln2 / half_life_days, a per-day rate (a
      steady daily amount a gives ~a). Name ``<label>_ema[_mean|_rate]_hl<h>``.
    """

    kind: str
    name: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    where: Any = None
    column: str | None = None
    window: Any = None
    half_life: Any = None
    mode: str = "sum"
    description: str | None = None

    def __post_init__(self) -> None:
        kind = str(self.kind).strip().lower()
        if kind not in DERIVED_KINDS:
            hint = " (declare it with Aggregation)" if kind in AGG_OPS else ""
            raise ValueError(f"unknown derived kind {self.kind!r}{hint}; known: {', '.join(DERIVED_KINDS)}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "where", normalize_where(self.where))
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ValueError(f"feature name {self.name!r} must match {_NAME_RE.pattern}")
        if kind == "ratio":
            if not (self.name and self.numerator and self.denominator):
                raise ValueError("Derived.ratio needs name, numerator and denominator")
            if self.where or self.column or self.window or self.half_life:
                raise ValueError("Derived.ratio takes only name, numerator and denominator (feature names)")
        if kind == "recency" and (self.column or self.window or self.half_life):
            raise ValueError("Derived.recency takes only where= (it is always all-time)")
        if kind == "frequency":
            if self.window is None:
                raise ValueError("Derived.frequency needs a window, e.g. Derived.frequency('30d', where=...)")
            w = self.window if isinstance(self.window, Window) else Window(self.window)
            if w.is_all_time:
                raise ValueError("Derived.frequency needs a finite window (active days / window days)")
            object.__setattr__(self, "window", w)
            if self.column:
                raise ValueError("Derived.frequency takes no column")
        if kind == "ema":
            if self.half_life is None:
                raise ValueError("Derived.ema needs half_life, e.g. '7d'")
            hl = parse_duration(self.half_life)
            if hl.total_seconds() <= 0:
                raise ValueError("Derived.ema half_life must be positive")
            object.__setattr__(self, "half_life", hl)
            if self.mode not in EMA_MODES:
                raise ValueError(f"Derived.ema mode {self.mode!r}; known: {', '.join(EMA_MODES)}")
            if self.window is not None:
                raise ValueError("Derived.ema is all-time (decay replaces the window); drop window=")

    @classmethod
    def ratio(cls, name: str, numerator: str, denominator: str, description: str | None = None) -> "Derived":
        """A ``numerator / denominator`` feature called ``name`` (both names of other features of the group)."""
        return cls("ratio", name=name, numerator=numerator, denominator=denominator, description=description)

    @classmethod
    def recency(cls, where: Any = None, name: str | None = None, description: str | None = None) -> "Derived":
        """Seconds from the cutoff back to the last event matching ``where``, over all time."""
        return cls("recency", name=name, where=where, description=description)

    @classmethod
    def frequency(cls, window: Any, where: Any = None, name: str | None = None,
                  description: str | None = None) -> "Derived":
        """Active days / window days: the share of the days of ``window`` with an event matching ``where``."""
        return cls("frequency", name=name, where=where, window=window, description=description)

    @classmethod
    def ema(cls, half_life: Any, column: str | None = None, where: Any = None, mode: str = "sum",
            name: str | None = None, description: str | None = None) -> "Derived":
        """An exponentially decayed sum, mean or rate of ``column`` (or of the event count) with ``half_life``."""
        return cls("ema", name=name, where=where, column=column, half_life=half_life, mode=mode,
                   description=description)

    @property
    def stream_key(self) -> tuple:
        """``(where, column)``: the stream whose tile columns the feature reads."""
        return (self.where, self.column)

    @property
    def ema_stat(self) -> str:
        """Tile statistic of the decayed sum at this half-life, e.g. ``ema_hl7d``."""
        return f"ema_hl{_duration_label(self.half_life)}"


@dataclass(frozen=True)
class FeatureDef:
    """One output feature: what it is computed from (resolved by FeatureGroup)."""

    name: str
    kind: str  # aggregation op or derived kind
    window: Window | None
    stream: Stream | None
    source: Any  # the Aggregation or Derived
    param: Any = None  # quantile q, share category (or "__other__"), EMA half-life
    description: str = ""
    dtype: str = "float64"


OTHER = "__other__"


@dataclass(frozen=True)
class FeatureGroup:
    """A named set of features over the same entity keys, computed from daily tiles."""

    name: str
    keys: tuple[str, ...] = ("user_id",)
    aggregations: Any = ()
    derived: Any = ()
    ttl: timedelta = timedelta(days=30)
    version: str = "1"
    description: str = ""
    enrich: tuple[str, ...] = ()
    entity: str = "user"
    _plan: dict = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name or ""):
            raise ValueError(f"group name {self.name!r} must match {_NAME_RE.pattern}")
        keys = (self.keys,) if isinstance(self.keys, str) else tuple(self.keys)
        if not keys:
            raise ValueError(f"group {self.name}: keys must not be empty")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "aggregations", tuple(self.aggregations or ()))
        object.__setattr__(self, "derived", tuple(self.derived or ()))
        object.__setattr__(self, "enrich", (self.enrich,) if isinstance(self.enrich, str) else tuple(self.enrich))
        for a in self.aggregations:
            if not isinstance(a, Aggregation):
                raise TypeError(f"group {self.name}: {a!r} is not an Aggregation")
        for d in self.derived:
            if not isinstance(d, Derived):
                raise TypeError(f"group {self.name}: {d!r} is not a Derived")
        if not self.aggregations and not self.derived:
            raise ValueError(f"group {self.name}: declare at least one aggregation or derived feature")
        if not isinstance(self.ttl, timedelta):
            object.__setattr__(self, "ttl", parse_duration(self.ttl))
        object.__setattr__(self, "version", str(self.version))
        try:
            plan = _build_plan(self)
        except ValueError as e:
            raise ValueError(f"group {self.name}: {e}") from None
        object.__setattr__(self, "_plan", plan)

    # -- features
    def features(self) -> tuple[FeatureDef, ...]:
        """Every output feature, aggregations first, then derived features, in declaration order."""
        return self._plan["features"]

    def feature_names(self) -> list[str]:
        """Names of the output features, in the order of ``features()``."""
        return [f.name for f in self._plan["features"]]

    def feature_descriptions(self) -> dict[str, str]:
        """feature name -> description."""
        return {f.name: f.description for f in self._plan["features"]}

    def feature_dtypes(self) -> dict[str, str]:
        """float64 for every numeric feature; ``last`` of a column is ``object`` unless numeric."""
        return {f.name: f.dtype for f in self._plan["features"]}

    # -- windows and state
    @property
    def windows(self) -> tuple[Window, ...]:
        """All distinct windows used, ascending, ALL_TIME last."""
        return self._plan["windows"]

    @property
    def max_window_days(self) -> int:
        """Largest finite window in days (0 if the group only has all-time features)."""
        return max((w.n_days for w in self.windows if not w.is_all_time), default=0)

    @property
    def has_all_time(self) -> bool:
        """True when some feature needs the carried all-time state."""
        return ALL_TIME in self.windows

    @property
    def streams(self) -> tuple[Stream, ...]:
        """The distinct event streams (filter, column) the tiles aggregate, in tile-column order."""
        return tuple(s for s, _ in self._plan["streams"].values())

    def stream_stats(self) -> dict[str, tuple[Stream, tuple[str, ...]]]:
        """label -> (stream, stats) in tile-column order."""
        return self._plan["streams"]

    def share_categories(self) -> dict[str, tuple]:
        """stream label -> declared category values counted in its ``cnt_<c>`` tile columns."""
        return dict(self._plan["categories"])

    @property
    def tile_columns(self) -> tuple[str, ...]:
        """Tile columns (after the key columns), in order."""
        return self._plan["tile_columns"]

    def tile_columns_for(self, window: Window) -> tuple[str, ...]:
        """Tile columns the features of one window read (``asof``/``event__n`` included)."""
        return self._plan["window_columns"][window]

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Raw event columns read by some feature (keys, ts and event_type included)."""
        cols = list(self.keys) + ["ts"]
        for s in self.streams:
            cols.extend(s.raw_inputs)
        return tuple(dict.fromkeys(cols))

    def describe(self) -> str:
        """One line: name, version, entity, keys and description."""
        return f"{self.name} v{self.version} ({self.entity}, keys={list(self.keys)}): {self.description}"


# --------------------------------------------------------------------------- planning


def _build_plan(group: FeatureGroup) -> dict:
    streams: dict[tuple, Stream] = {}
    stats: dict[tuple, list[str]] = {}
    cats: dict[tuple, list] = {}
    labels: dict[str, tuple] = {}
    window_cols: dict[Window, list[str]] = {}

    def stream(key: tuple) -> Stream:
        if key not in streams:
            label = _stream_label(*key)
            if label in labels and labels[label] != key:
                i = 2
                while f"{label}{i}" in labels:
                    i += 1
                label = f"{label}{i}"
            labels[label] = key
            streams[key] = Stream(key[0], key[1], label)
            stats[key] = []
        return streams[key]

    def need(key: tuple, stat_names: Iterable[str], windows: Iterable[Window]) -> None:
        s = stream(key)
        for st in stat_names:
            if st not in stats[key]:
                stats[key].append(st)
            for w in windows:
                lst = window_cols.setdefault(w, [])
                if s.col(st) not in lst:
                    lst.append(s.col(st))

    features: list[FeatureDef] = []
    for agg in group.aggregations:
        s = stream(agg.stream_key)
        need(agg.stream_key, _OP_STATS[agg.op], agg.windows)
        if agg.op == "share":
            lst = cats.setdefault(agg.stream_key, [])
            for c in agg.categories:
                if c not in lst:
                    lst.append(c)
            need(agg.stream_key, [f"cnt_{_slug(c)}" for c in agg.categories], agg.windows)
        features.extend(_agg_features(agg, s))

    for d in group.derived:
        if d.kind == "ratio":
            features.append(FeatureDef(
                d.name, "ratio", None, None, d, (d.numerator, d.denominator),
                d.description or f"{d.numerator} / {d.denominator} (NaN when the denominator is 0)",
            ))
            continue
        s = stream(d.stream_key)
        if d.kind == "recency":
            need(d.stream_key, ("last_ts",), (ALL_TIME,))
            label = where_label(d.where) or "event"
            features.append(FeatureDef(
                d.name or f"seconds_since_last_{label}", "recency", ALL_TIME, s, d, None,
                d.description or f"Seconds from the cutoff t back to the last of {where_describe(d.where)} "
                "(all time; NaN if none)",
            ))
        elif d.kind == "frequency":
            need(d.stream_key, ("active",), (d.window,))
            label = where_label(d.where) or "event"
            features.append(FeatureDef(
                d.name or f"{label}_frequency_{d.window.label}", "frequency", d.window, s, d, None,
                d.description or f"Share of the days of {d.window.describe()} with at least one of "
                f"{where_describe(d.where)} (active days / {d.window.n_days})",
            ))
        elif d.kind == "ema":
            stat_names = [d.ema_stat] + ([f"emaw_hl{_duration_label(d.half_life)}"] if d.mode == "mean" else [])
            need(d.stream_key, stat_names, (ALL_TIME,))
            hl = _duration_label(d.half_life)
            mode = "" if d.mode == "sum" else f"_{d.mode}"
            what = f"{d.column} of" if d.column else "count of"
            what = f"{what} {where_describe(d.where)}"
            kind = {"sum": "decayed sum", "mean": "decayed mean", "rate": "decayed per-day rate"}[d.mode]
            features.append(FeatureDef(
                d.name or f"{s.label}_ema{mode}_hl{hl}", "ema", ALL_TIME, s, d, d.half_life,
                d.description or f"Exponential {kind} ({what}), "
                f"half-life {hl}, weight 2^(-(t - ts)/{hl}), all time",
            ))

    names = [f.name for f in features]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate feature names {dupes}: set name= on one of the declarations")
    seen: set[str] = set()
    for f in features:
        if f.kind == "ratio":
            for ref in f.param:
                if ref not in names:
                    raise ValueError(f"ratio {f.name}: unknown feature {ref!r}")
                if ref not in seen:
                    raise ValueError(f"ratio {f.name}: {ref!r} must be declared before it")
        seen.add(f.name)

    for key in list(streams):
        if key[1] is None:
            bad = [st for st in stats[key] if st in ("sum", "m2", "min", "max", "last", "hll", "kll")]
            if bad:  # cannot happen through the public constructors; keep the invariant explicit
                raise ValueError(f"stream {streams[key].label}: stats {bad} need a column")

    ordered_streams: dict[str, tuple[Stream, tuple[str, ...]]] = {}
    tile_columns = ["asof", "event__n"]
    for key, s in streams.items():
        st = stats[key]
        base = [x for x in _STAT_ORDER if x in st]
        cnt = [f"cnt_{_slug(c)}" for c in cats.get(key, [])]
        ema = sorted(x for x in st if x.startswith("ema_") or x.startswith("emaw_"))
        ordered = tuple(base + cnt + ema)
        ordered_streams[s.label] = (s, ordered)
        tile_columns.extend(s.col(x) for x in ordered if s.col(x) not in tile_columns)
    windows = tuple(sorted(window_cols, key=Window.sort_key))
    wcols = {w: tuple(dict.fromkeys(["asof", "event__n"] + window_cols[w])) for w in windows}
    return {
        "features": tuple(features),
        "streams": ordered_streams,
        "categories": {streams[k].label: tuple(v) for k, v in cats.items()},
        "tile_columns": tuple(tile_columns),
        "windows": windows,
        "window_columns": wcols,
    }


def _agg_features(agg: Aggregation, s: Stream) -> list[FeatureDef]:
    out = []
    what = where_describe(agg.where)
    col = agg.column
    for w in agg.windows:
        wd = w.describe()
        if agg.op == "quantile":
            base = agg.name or s.label
            for q in agg.quantiles:
                out.append(FeatureDef(
                    f"{base}_{_q_label(q)}_{w.label}", "quantile", w, s, agg, q,
                    agg.description or f"Approximate {q:g}-quantile (KLL) of {col} over {what} in {wd}",
                ))
        elif agg.op == "share":
            base = agg.name or f"{s.label}_share"
            values = list(agg.categories) + ([OTHER] if agg.other else [])
            for c in values:
                shown = "values outside the declared list" if c == OTHER else f"{col} == {c!r}"
                out.append(FeatureDef(
                    f"{base}_{'other' if c == OTHER else _slug(c)}_{w.label}", "share", w, s, agg, c,
                    agg.description or f"Share of {shown} among {what} with a non-null {col}, in {wd}",
                ))
        else:
            base = agg.name or f"{s.label}_{agg.op}"
            desc = {
                "count": (f"Number of non-null {col} values of {what}" if col else f"Number of {what}"),
                "sum": f"Sum of {col} over {what}",
                "mean": f"Mean of {col} over {what}",
                "std": f"Sample standard deviation (ddof=1) of {col} over {what}",
                "min": f"Minimum of {col} over {what}",
                "max": f"Maximum of {col} over {what}",
                "last": f"{col} of the latest of {what} (ties on ts: the largest value)",
                "distinct": f"Approximate distinct count (HLL) of {col} over {what}",
                "active_days": f"Number of UTC days with at least one of {what}",
            }[agg.op]
            dtype = "object" if agg.op == "last" and col not in NUMERIC_COLUMNS else "float64"
            out.append(FeatureDef(f"{base}_{w.label}", agg.op, w, s, agg, None,
                                  agg.description or f"{desc} in {wd}", dtype))
    return out
