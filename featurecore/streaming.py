"""Streaming-style statistics as pure, mergeable per-entity states (no Dagster, no globals).

The same low-level functions serve the batch path (the EMA and variance columns of the
daily tiles in ``tiles.py``) and an online updater that feeds events as they come:

- ``EMAState``: continuous-time exponential moving aggregate with half-life ``h``:
  ``S(t) = sum_i x_i * 2^(-(t - t_i)/h)`` and ``W(t) = sum_i 2^(-(t - t_i)/h)``;
  ``value(t, "sum") = S``, ``"mean" = S / W`` (a decayed average), ``"rate" =
  S * ln2 / h_days`` (a per-day rate: a steady daily amount ``a`` gives ~``a``).
  A state keeps ``S``, ``W`` at a reference time ``ref`` (per entity); any reference
  works because decaying is multiplicative, so states merge by decaying both to the
  later reference and adding.
- ``Welford``: running count / mean / M2 (sum of squared deviations) per entity;
  ``merge`` is the parallel formula of Chan et al.; variance is the sample variance
  (ddof=1, NaN for n < 2), like the ``std`` feature.
- ``LastN``: the N latest items per entity by timestamp; ties on the timestamp are
  broken by the larger item, so the result depends only on the multiset of events.

Each class is immutable: ``from_events(df)``, ``update(df)`` and ``merge(other)``
return new objects, and feeding events day by day, in any chunks, or all at once gives
the same state (up to float rounding for EMA and Welford).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .spec import parse_duration

NS_PER_DAY = 86_400 * 10**9
LN2 = math.log(2.0)

# --------------------------------------------------------------------------- helpers


def factorize_keys(df: pd.DataFrame | Mapping[str, Any], keys: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """Group codes (int64, -1 where a key is null) and the unique key rows, in first-seen order.

    ``df`` is a DataFrame or a mapping of column name -> array.
    """
    keys = list(keys)
    if len(keys) == 1:
        codes, uniq = pd.factorize(df[keys[0]], sort=False)
        return codes.astype(np.int64, copy=False), pd.DataFrame({keys[0]: np.asarray(uniq, dtype=object)
                                                                 if not _is_numeric(uniq) else uniq})
    parts = [pd.factorize(df[k], sort=False) for k in keys]
    n_rows = len(parts[0][0])
    combined = np.zeros(n_rows, dtype=np.int64)
    bad = np.zeros(n_rows, dtype=bool)
    for c, u in parts:
        bad |= c < 0
        combined = combined * max(len(u), 1) + np.maximum(c, 0)
    combined[bad] = -1
    codes, uniq_comb = pd.factorize(combined, sort=False)
    codes = codes.astype(np.int64, copy=False)
    # -1 (a null key) is a real value for pd.factorize of ints: map it back to -1
    valid_mask = uniq_comb >= 0
    if not valid_mask.all():
        remap = np.full(len(uniq_comb), -1, dtype=np.int64)
        remap[valid_mask] = np.arange(valid_mask.sum())
        codes = remap[codes]
        uniq_comb = uniq_comb[valid_mask]
    cols: dict[str, Any] = {}
    rest = np.asarray(uniq_comb, dtype=np.int64)
    for k, (c, u) in reversed(list(zip(keys, parts))):
        n = max(len(u), 1)
        idx = rest % n
        rest = rest // n
        vals = np.asarray(u)[idx] if len(u) else np.asarray([], dtype=object)
        cols[k] = vals if _is_numeric(vals) else np.asarray(vals, dtype=object)
    return codes, pd.DataFrame({k: cols[k] for k in keys})


def _is_numeric(values: Any) -> bool:
    return getattr(values, "dtype", None) is not None and values.dtype.kind in "iufb"


def ts_ns(ts: pd.Series | pd.DatetimeIndex | Any) -> np.ndarray:
    """UTC nanoseconds since the epoch (int64) of a timestamp column (naive = UTC)."""
    if not isinstance(ts, (pd.Series, pd.DatetimeIndex)):
        ts = pd.Series(ts)
    dtype = ts.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        arr = ts.array  # DatetimeArray: asi8 is UTC-based for tz-aware values
    else:
        arr = pd.to_datetime(ts, utc=True).array
    if arr.unit != "ns":
        arr = arr.as_unit("ns")
    return np.asarray(arr.asi8, dtype=np.int64)


def to_utc(ns: np.ndarray | int) -> pd.DatetimeIndex | pd.Timestamp:
    """Inverse of ``ts_ns``: UTC timestamps from int64 nanoseconds."""
    if np.ndim(ns) == 0:
        return pd.Timestamp(int(ns), tz="UTC")
    return pd.to_datetime(np.asarray(ns, dtype=np.int64), utc=True)


def half_life_ns(half_life: Any) -> int:
    """A half-life (``"7d"``, ``timedelta``, ...) in integer nanoseconds."""
    return int(parse_duration(half_life).total_seconds() * 1e9)


def decay_factor(from_ns: np.ndarray | int, to_ns: np.ndarray | int, hl_ns: int) -> np.ndarray:
    """``2^(-(to - from) / h)``: the weight an amount at ``from`` has at ``to``."""
    dt = np.asarray(to_ns, dtype=np.int64) - np.asarray(from_ns, dtype=np.int64)
    return np.exp2(-dt.astype(np.float64) / float(hl_ns))


def ema_partial(codes: np.ndarray, t_ns: np.ndarray, x: np.ndarray | None, ref_ns: np.ndarray | int,
                hl_ns: int, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group ``S = sum x_i 2^(-(ref - t_i)/h)`` and ``W = sum 2^(-(ref - t_i)/h)``.

    ``ref_ns`` is a scalar or a per-group array; ``x=None`` means an indicator (x_i = 1).
    """
    ref = np.asarray(ref_ns, dtype=np.int64)
    ref_rows = ref if ref.ndim == 0 else ref[codes]
    w = decay_factor(t_ns, ref_rows, hl_ns)
    W = np.bincount(codes, weights=w, minlength=n_groups)
    S = W.copy() if x is None else np.bincount(codes, weights=w * x, minlength=n_groups)
    return S, W


def welford_groups(codes: np.ndarray, x: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group (n, sum, M2) of the values ``x`` (no nulls), two-pass and stable.

    Values are shifted by one value of their own group before summing (the "shifted
    data" algorithm), so near-constant groups of large values keep M2 ~ 0 even though
    ``np.bincount`` sums naively.
    """
    n = np.bincount(codes, minlength=n_groups).astype(np.int64)
    ref = np.zeros(n_groups)
    ref[codes[::-1]] = x[::-1]  # first value of each group (last assignment wins)
    d = x - ref[codes]
    sd = np.bincount(codes, weights=d, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_d = np.where(n > 0, sd / np.maximum(n, 1), 0.0)
    dev = d - mean_d[codes]
    m2 = np.bincount(codes, weights=dev * dev, minlength=n_groups)
    total = ref * n + sd
    return n, total, m2


def welford_merge_rows(codes: np.ndarray, n: np.ndarray, total: np.ndarray, m2: np.ndarray,
                       n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine many partial (n, sum, M2) rows per group (Chan et al.).

    ``M2 = sum_i M2_i + sum_i n_i (mean_i - mean)^2``: the pairwise parallel formula
    applied to all parts at once; associative and order-independent (up to rounding).
    """
    n = np.nan_to_num(np.asarray(n, dtype=np.float64))
    total = np.nan_to_num(np.asarray(total, dtype=np.float64))
    m2 = np.nan_to_num(np.asarray(m2, dtype=np.float64))
    N = np.bincount(codes, weights=n, minlength=n_groups)
    T = np.bincount(codes, weights=total, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_i = np.where(n > 0, total / np.maximum(n, 1), 0.0)
        mean = np.where(N > 0, T / np.maximum(N, 1), 0.0)
    d = mean_i - mean[codes]
    between = np.where(n > 0, n * d * d, 0.0)
    M2 = np.bincount(codes, weights=m2, minlength=n_groups) + np.bincount(codes, weights=between, minlength=n_groups)
    return np.rint(N).astype(np.int64), T, M2


def sample_variance(n: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """M2 / (n - 1), NaN for n < 2 (sample variance, ddof=1)."""
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(n >= 2, np.maximum(np.asarray(m2, dtype=np.float64), 0.0) / (n - 1), np.nan)
    return v


def _values(df: pd.DataFrame, column: str | None) -> np.ndarray | None:
    if column is None:
        return None
    return pd.to_numeric(df[column], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)


def _concat_states(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- EMA


@dataclass(frozen=True)
class EMAState:
    """Per-entity continuous-time EMA state: ``keys..., s, w, ref`` (ref = latest ts seen).

    ``value`` is a numeric column (None: each event counts 1); null values are skipped.
    """

    half_life: Any
    keys: tuple[str, ...] = ("user_id",)
    value: str | None = None
    ts: str = "ts"
    state: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "half_life", parse_duration(self.half_life))
        object.__setattr__(self, "keys", (self.keys,) if isinstance(self.keys, str) else tuple(self.keys))
        if self.state is None:
            object.__setattr__(self, "state", self._empty())

    @property
    def hl_ns(self) -> int:
        """The half-life in integer nanoseconds."""
        return int(self.half_life.total_seconds() * 1e9)

    def _empty(self) -> pd.DataFrame:
        d = {k: pd.Series([], dtype=object) for k in self.keys}
        d.update(s=pd.Series([], dtype=float), w=pd.Series([], dtype=float),
                 ref=pd.Series([], dtype="datetime64[ns, UTC]"))
        return pd.DataFrame(d)

    def _with(self, state: pd.DataFrame) -> "EMAState":
        return EMAState(self.half_life, self.keys, self.value, self.ts, state)

    def from_events(self, events: pd.DataFrame) -> "EMAState":
        """A fresh state of these events alone (same configuration)."""
        ev = events
        x = _values(ev, self.value)
        ok = np.ones(len(ev), dtype=bool) if x is None else ~np.isnan(x)
        codes, uniq = factorize_keys(ev, self.keys)
        ok &= codes >= 0
        codes, t = codes[ok], ts_ns(ev[self.ts])[ok]
        x = None if x is None else x[ok]
        g = len(uniq)
        ref = np.full(g, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(ref, codes, t)
        keep = np.bincount(codes, minlength=g) > 0
        S, W = ema_partial(codes, t, x, ref, self.hl_ns, g)
        out = uniq[keep].reset_index(drop=True)
        out["s"], out["w"], out["ref"] = S[keep], W[keep], to_utc(ref[keep])
        return self._with(out)

    def update(self, events: pd.DataFrame) -> "EMAState":
        """A new state with these events added (``merge(from_events(events))``)."""
        return self.merge(self.from_events(events))

    def merge(self, *others: "EMAState") -> "EMAState":
        """Combined with ``others`` (same configuration): per entity, s and w decayed to the latest ref and added."""
        for o in others:
            if (o.half_life, o.keys, o.value) != (self.half_life, self.keys, self.value):
                raise ValueError("cannot merge EMA states of different configurations")
        df = _concat_states([self.state] + [o.state for o in others])
        if df is None:
            return self._with(self._empty())
        codes, uniq = factorize_keys(df, self.keys)
        g = len(uniq)
        r = ts_ns(df["ref"])
        ref = np.full(g, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(ref, codes, r)
        f = decay_factor(r, ref[codes], self.hl_ns)
        uniq["s"] = np.bincount(codes, weights=df["s"].to_numpy() * f, minlength=g)
        uniq["w"] = np.bincount(codes, weights=df["w"].to_numpy() * f, minlength=g)
        uniq["ref"] = to_utc(ref)
        return self._with(uniq.sort_values(list(self.keys), ignore_index=True))

    def value_at(self, at: Any, mode: str = "sum") -> pd.DataFrame:
        """Keys and ``value`` at time ``at`` (``>=`` every event fed), for ``mode`` sum|mean|rate."""
        at_ns = int(ts_ns(pd.Series([pd.Timestamp(at)]))[0])
        r = ts_ns(self.state["ref"])
        if len(r) and r.max() > at_ns:
            raise ValueError(f"EMA state holds events after {at}: evaluate at or after the latest event")
        f = decay_factor(r, at_ns, self.hl_ns)
        out = self.state[list(self.keys)].copy()
        out["value"] = ema_value(self.state["s"].to_numpy() * f, self.state["w"].to_numpy() * f,
                                 mode, self.hl_ns)
        return out


def ema_value(S: np.ndarray, W: np.ndarray, mode: str, hl_ns: int) -> np.ndarray:
    """Feature value from decayed S, W (already at the evaluation time)."""
    S = np.asarray(S, dtype=np.float64)
    if mode == "sum":
        return S
    if mode == "rate":
        return S * LN2 / (hl_ns / NS_PER_DAY)
    if mode == "mean":
        W = np.asarray(W, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(W > 0, S / np.where(W > 0, W, 1.0), np.nan)
    raise ValueError(f"unknown EMA mode {mode!r}")


# --------------------------------------------------------------------------- Welford


@dataclass(frozen=True)
class Welford:
    """Per-entity running count / mean / M2 of a numeric column: ``keys..., n, mean, m2``."""

    value: str
    keys: tuple[str, ...] = ("user_id",)
    state: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", (self.keys,) if isinstance(self.keys, str) else tuple(self.keys))
        if self.state is None:
            d = {k: pd.Series([], dtype=object) for k in self.keys}
            d.update(n=pd.Series([], dtype=np.int64), mean=pd.Series([], dtype=float),
                     m2=pd.Series([], dtype=float))
            object.__setattr__(self, "state", pd.DataFrame(d))

    def _with(self, state: pd.DataFrame) -> "Welford":
        return Welford(self.value, self.keys, state)

    def from_events(self, events: pd.DataFrame) -> "Welford":
        """A fresh state of these events alone (null values and null keys skipped)."""
        x = _values(events, self.value)
        codes, uniq = factorize_keys(events, self.keys)
        ok = (codes >= 0) & ~np.isnan(x)
        g = len(uniq)
        n, total, m2 = welford_groups(codes[ok], x[ok], g)
        keep = n > 0
        out = uniq[keep].reset_index(drop=True)
        out["n"], out["mean"], out["m2"] = n[keep], total[keep] / n[keep], m2[keep]
        return self._with(out)

    def update(self, events: pd.DataFrame) -> "Welford":
        """A new state with these events added (``merge(from_events(events))``)."""
        return self.merge(self.from_events(events))

    def merge(self, *others: "Welford") -> "Welford":
        """Combined with ``others``: per entity, n, mean and M2 pooled with the parallel formula (Chan et al.)."""
        df = _concat_states([self.state] + [o.state for o in others])
        if df is None:
            return self._with(None)
        codes, uniq = factorize_keys(df, self.keys)
        n = df["n"].to_numpy(dtype=np.float64)
        N, T, M2 = welford_merge_rows(codes, n, n * df["mean"].to_numpy(), df["m2"].to_numpy(), len(uniq))
        uniq["n"], uniq["mean"], uniq["m2"] = N, T / np.maximum(N, 1), M2
        return self._with(uniq.sort_values(list(self.keys), ignore_index=True))

    def result(self) -> pd.DataFrame:
        """Keys, n, mean, var (ddof=1), std (NaN for n < 2)."""
        out = self.state[list(self.keys) + ["n", "mean"]].copy()
        out["var"] = sample_variance(self.state["n"].to_numpy(), self.state["m2"].to_numpy())
        out["std"] = np.sqrt(out["var"])
        return out


# --------------------------------------------------------------------------- LastN


@dataclass(frozen=True)
class LastN:
    """The ``n`` latest items per entity: long state ``keys..., ts, item``.

    Order: ts descending, then item descending (deterministic tie-break); duplicates
    (same ts and item twice) are kept, as two views of the same product are two events.
    """

    item: str
    n: int = 10
    keys: tuple[str, ...] = ("user_id",)
    ts: str = "ts"
    state: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", (self.keys,) if isinstance(self.keys, str) else tuple(self.keys))
        if self.n < 1:
            raise ValueError("LastN needs n >= 1")
        if self.state is None:
            d = {k: pd.Series([], dtype=object) for k in self.keys}
            d.update(ts=pd.Series([], dtype="datetime64[ns, UTC]"), item=pd.Series([], dtype=object))
            object.__setattr__(self, "state", pd.DataFrame(d))

    def _with(self, state: pd.DataFrame) -> "LastN":
        return LastN(self.item, self.n, self.keys, self.ts, state)

    def _top(self, df: pd.DataFrame) -> pd.DataFrame:
        keys = list(self.keys)
        df = df.sort_values(keys + ["ts", "item"], ascending=[True] * len(keys) + [False, False],
                            kind="mergesort")
        return df.groupby(keys, sort=False).head(self.n).reset_index(drop=True)

    def from_events(self, events: pd.DataFrame) -> "LastN":
        """A fresh state of these events alone (rows with a null key, ts or item dropped)."""
        df = events[list(self.keys)].copy()
        df["ts"] = pd.to_datetime(events[self.ts], utc=True).dt.as_unit("ns")
        df["item"] = events[self.item].to_numpy()
        df = df.dropna()
        return self._with(self._top(df))

    def update(self, events: pd.DataFrame) -> "LastN":
        """A new state with these events added (``merge(from_events(events))``)."""
        return self.merge(self.from_events(events))

    def merge(self, *others: "LastN") -> "LastN":
        """Combined with ``others``: the ``n`` latest items per entity over all the states."""
        df = _concat_states([self.state] + [o.state for o in others])
        return self._with(None if df is None else self._top(df))

    def items(self) -> pd.DataFrame:
        """Keys and ``items``: a list, newest first."""
        keys = list(self.keys)
        if not len(self.state):
            return pd.DataFrame({**{k: [] for k in keys}, "items": []})
        return self.state.groupby(keys, sort=True)["item"].agg(list).rename("items").reset_index()


def as_timedelta(value: Any) -> timedelta:
    """A duration (``"7d"``, ``timedelta``, ``pd.Timedelta``) as a ``timedelta`` (``parse_duration``)."""
    return parse_duration(value)
