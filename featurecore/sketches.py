"""Thin helpers over Apache DataSketches: build per-group sketches, serialize, merge, estimate.

Sketches are stored in tiles as serialized ``bytes`` (``None`` = empty), so tiles stay
plain DataFrames that Parquet, Dask and pickle move around freely.

Distinct counts: HLL (``hll_sketch``), ``lg_k = 12`` (4096 buckets), HLL_4 storage.
Relative standard error ``RSE = 1.04 / sqrt(2^12) ~= 1.625 %`` (``HLL_RSE``); ~95 % of
estimates fall within 2 RSE (3.3 %) and ~99.7 % within 3 RSE. For small cardinalities
(below ~k/4 distinct values per sketch) the sketch is in its list/set ("coupon") mode
and the estimate is exact up to hash collisions: rounding it gives the true count.

Quantiles: KLL (``kll_doubles_sketch``, doubles so values are kept exactly), ``k = 200``:
normalized rank error ~1.33 % for a single quantile (``KLL_RANK_ERROR``) and ~1.65 %
for PMF/CDF-style queries (``KLL_PMF_RANK_ERROR``), at 99 % confidence. A returned
quantile ``x`` for rank ``q`` has a true rank within ``q +- KLL_PMF_RANK_ERROR``. With at
most ``k`` values the sketch holds them all and ``get_quantile(q, inclusive=True)`` is
exact: the smallest value ``x`` with ``#(v <= x) >= q * n`` (numpy's
``method="inverted_cdf"``). Beyond ``k`` values, KLL compaction is randomized, so two
merges of the same inputs may differ within the bound.

Values: strings are hashed as strings; numbers as float64 (so 1 and 1.0 count once).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable, Sequence

import datasketches as ds
import numpy as np
import pandas as pd

HLL_LG_K = 12
HLL_TYPE = ds.tgt_hll_type.HLL_4
HLL_RSE = 1.04 / math.sqrt(2**HLL_LG_K)
KLL_K = 200
KLL_RANK_ERROR = ds.kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)
KLL_PMF_RANK_ERROR = ds.kll_doubles_sketch.get_normalized_rank_error(KLL_K, True)

_hll_deser = ds.hll_sketch.deserialize
_kll_deser = ds.kll_doubles_sketch.deserialize


# --------------------------------------------------------------------------- values


def _items(values: np.ndarray | pd.Index | pd.Series | Sequence) -> list:
    """Python objects to feed a sketch: str for strings, float for numbers."""
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if arr.dtype.kind in "iufb":
        return arr.astype(np.float64).tolist()
    out = arr.astype(object).tolist()
    if not all(isinstance(v, str) for v in out):
        out = [v if isinstance(v, str) else (float(v) if isinstance(v, (int, float, np.number)) else str(v))
               for v in out]
    return out


def _group_bounds(sorted_codes: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """(groups, starts, ends) of runs of equal codes in a sorted code array."""
    if len(sorted_codes) == 0:
        return [], [], []
    cut = np.flatnonzero(np.diff(sorted_codes)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(sorted_codes)]])
    return sorted_codes[starts].tolist(), starts.tolist(), ends.tolist()


# --------------------------------------------------------------------------- HLL


def hll_of(values: Iterable) -> bytes:
    """One serialized HLL sketch of the given values (nulls must be removed first)."""
    sk = ds.hll_sketch(HLL_LG_K, HLL_TYPE)
    deque(map(sk.update, _items(np.asarray(list(values) if not hasattr(values, "dtype") else values))),
          maxlen=0)
    return sk.serialize_compact()


def hll_by_group(codes: np.ndarray, values: np.ndarray, n_groups: int,
                 value_uniques: Sequence | None = None) -> np.ndarray:
    """Serialized HLL per group code in ``[0, n_groups)`` (``None`` for groups without values).

    ``values`` are the (non-null) values, or, with ``value_uniques``, integer codes into it
    (as returned by ``pd.factorize``). Each distinct (group, value) pair updates a sketch
    once: pairs are deduplicated with numpy and the only Python loop runs over groups.
    """
    out = np.full(n_groups, None, dtype=object)
    if len(codes) == 0:
        return out
    if value_uniques is None:
        vcodes, uniq = pd.factorize(values, sort=False)
    else:
        vcodes, uniq = np.asarray(values, dtype=np.int64), value_uniques
    nv = max(len(uniq), 1)
    pairs = np.sort(codes.astype(np.int64) * nv + vcodes)  # sort + diff: faster than np.unique here
    if len(pairs) > 1:
        pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]
    g = pairs // nv
    items = np.asarray(_items(uniq), dtype=object)[pairs % nv].tolist()
    groups, starts, ends = _group_bounds(g)
    new, lg, typ = ds.hll_sketch, HLL_LG_K, HLL_TYPE
    for gi, s, e in zip(groups, starts, ends):
        sk = new(lg, typ)
        deque(map(sk.update, items[s:e]), maxlen=0)
        out[gi] = sk.serialize_compact()
    return out


def hll_merge(sketches: Iterable[bytes | None]) -> bytes | None:
    """Union of serialized HLL sketches (``None`` entries are skipped)."""
    parts = [b for b in sketches if b is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    u = ds.hll_union(HLL_LG_K)
    for b in parts:
        u.update(_hll_deser(b))
    return u.get_result(HLL_TYPE).serialize_compact()


def hll_merge_by_group(codes: np.ndarray, sketches: np.ndarray, n_groups: int) -> np.ndarray:
    """Union of the sketches of each group code (rows with ``None`` are ignored)."""
    return _merge_by_group(codes, sketches, n_groups, hll_merge)


def hll_estimate(sketch: bytes | None) -> float:
    """Estimated distinct count (0.0 for an empty/absent sketch)."""
    return 0.0 if sketch is None else _hll_deser(sketch).get_estimate()


def hll_estimates(sketches: Sequence[bytes | None]) -> np.ndarray:
    return np.fromiter((0.0 if b is None or (isinstance(b, float) and math.isnan(b)) else
                        _hll_deser(b).get_estimate() for b in sketches), dtype=np.float64, count=len(sketches))


# --------------------------------------------------------------------------- KLL


def kll_of(values: Iterable[float]) -> bytes:
    sk = ds.kll_doubles_sketch(KLL_K)
    sk.update(np.asarray(values, dtype=np.float64))
    return sk.serialize()


def kll_by_group(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Serialized KLL (doubles) per group code (``None`` for groups without values)."""
    out = np.full(n_groups, None, dtype=object)
    if len(codes) == 0:
        return out
    order = np.argsort(codes, kind="stable")
    cs = codes[order]
    xs = np.ascontiguousarray(np.asarray(values, dtype=np.float64)[order])
    groups, starts, ends = _group_bounds(cs)
    new, k = ds.kll_doubles_sketch, KLL_K
    for gi, s, e in zip(groups, starts, ends):
        sk = new(k)
        sk.update(xs[s:e])
        out[gi] = sk.serialize()
    return out


def kll_merge(sketches: Iterable[bytes | None]) -> bytes | None:
    parts = [b for b in sketches if b is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    sk = _kll_deser(parts[0])
    for b in parts[1:]:
        sk.merge(_kll_deser(b))
    return sk.serialize()


def kll_merge_by_group(codes: np.ndarray, sketches: np.ndarray, n_groups: int) -> np.ndarray:
    return _merge_by_group(codes, sketches, n_groups, kll_merge)


def kll_quantiles(sketch: bytes | None, qs: Sequence[float]) -> list[float]:
    """Quantiles at normalized ranks ``qs`` (inclusive ranks); NaN for an empty sketch."""
    if sketch is None:
        return [math.nan] * len(qs)
    return _kll_deser(sketch).get_quantiles(list(qs), True)


def kll_quantiles_many(sketches: Sequence[bytes | None], qs: Sequence[float]) -> np.ndarray:
    """(len(sketches), len(qs)) array of quantiles, NaN rows for empty sketches."""
    out = np.full((len(sketches), len(qs)), np.nan)
    qs = list(qs)
    for i, b in enumerate(sketches):
        if b is not None and not (isinstance(b, float) and math.isnan(b)):
            out[i] = _kll_deser(b).get_quantiles(qs, True)
    return out


def kll_count(sketch: bytes | None) -> int:
    return 0 if sketch is None else int(_kll_deser(sketch).n)


# --------------------------------------------------------------------------- shared


def _merge_by_group(codes: np.ndarray, sketches: np.ndarray, n_groups: int, merge) -> np.ndarray:
    out = np.full(n_groups, None, dtype=object)
    sketches = np.asarray(sketches, dtype=object)
    ok = ~pd.isna(sketches)
    c, s = codes[ok], sketches[ok]
    if not len(c):
        return out
    cnt = np.bincount(c, minlength=n_groups)
    single = cnt[c] == 1
    out[c[single]] = s[single]
    multi = ~single
    if multi.any():
        cm, sm = c[multi], s[multi]
        order = np.argsort(cm, kind="stable")
        cm, sm = cm[order], sm[order].tolist()
        groups, starts, ends = _group_bounds(cm)
        for gi, a, b in zip(groups, starts, ends):
            out[gi] = merge(sm[a:b])
    return out
