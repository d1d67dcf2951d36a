"""Point-in-time (as-of) join of label rows with feature rows, TTL respected (no Dagster imports).

The rule is the design brief's time contract. A label row ``(keys, label_ts)`` takes, per
source, the latest feature row with the same keys and ``cutoff <= label_ts``. When that
row is older than the source's TTL (``cutoff < label_ts - ttl``) the label row gets nulls
for the source's features. The label row is always kept: Feast's file offline store drops
it, which biases a training set towards active entities. Both ends are inclusive: a row
whose cutoff equals ``label_ts`` is used, and so is a row exactly ``ttl`` old. That is
the online store's rule too (``at - as_of > ttl`` means expired).

Each label row ends in one of three states, counted in training-set manifests:
``matched`` (features from a row within the TTL), ``expired`` (the entity has an
earlier row, but it is older than the TTL) and ``missing`` (no row at or before label_ts).

The kernel is vectorised numpy plus pyarrow hashing, with no per-row Python. Keys are
dictionary-encoded on the feature side and looked up for the labels. Times become ranks
among the distinct feature cutoffs, so ``(entity code, time rank)`` fits one int64 and a
single ``searchsorted`` finds each label's row. Feature partitions hold one row per
entity and day, so the distinct cutoffs are few and ranking them is cheap.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MATCHED, EXPIRED, MISSING = 0, 1, 2
STATUS_NAMES = {MATCHED: "matched", EXPIRED: "expired", MISSING: "missing"}


def _as_array(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, pd.Series):
        return pa.Array.from_pandas(values)
    return pa.array(np.asarray(values, dtype=object) if np.asarray(values).dtype == object else values)


def _ns(values) -> np.ndarray:
    """UTC nanoseconds as int64 from a datetime Series, numpy datetime64, pyarrow timestamps or ints."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if pa.types.is_timestamp(arr.type):
            if arr.type.unit != "ns":
                arr = arr.cast(pa.timestamp("ns", tz=arr.type.tz))
            arr = arr.cast(pa.int64())
        if arr.null_count:
            raise ValueError("as-of join: null timestamps are not allowed")
        return arr.to_numpy(zero_copy_only=False).astype("int64", copy=False)
    if isinstance(values, pd.Series):
        if values.isna().any():
            raise ValueError("as-of join: null timestamps are not allowed")
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]").view("int64")
        if pd.api.types.is_datetime64_any_dtype(values):
            return values.to_numpy("datetime64[ns]").view("int64")
        return values.to_numpy("int64")
    arr = np.asarray(values)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[ns]").view("int64")
    return arr.astype("int64")


def _entity_codes(label_keys: Sequence, feature_keys: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes per entity on both sides; masks of label and feature rows with usable keys."""
    n, m = len(label_keys[0]), len(feature_keys[0])
    lc = np.zeros(n, dtype=np.int64)
    fc = np.zeros(m, dtype=np.int64)
    l_ok = np.ones(n, dtype=bool)
    f_ok = np.ones(m, dtype=bool)
    for lk, fk in zip(label_keys, feature_keys):
        fk, lk = _as_array(fk), _as_array(lk)
        if fk.type != lk.type:
            # e.g. large_string vs string, or int32 vs int64: compare on a common type.
            try:
                lk = lk.cast(fk.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                fk, lk = fk.cast(pa.string()), lk.cast(pa.string())
        enc = pc.dictionary_encode(fk)
        f_idx = enc.indices
        f_ok &= f_idx.is_valid().to_numpy(zero_copy_only=False)
        l_idx = pc.index_in(lk, value_set=enc.dictionary)
        l_ok &= l_idx.is_valid().to_numpy(zero_copy_only=False)
        radix = max(len(enc.dictionary), 1)
        fc = fc * radix + f_idx.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        lc = lc * radix + l_idx.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        if fc.size and int(fc.max()) > 2**40:  # keep the mixed-radix code small for the next key
            uniq, fc = np.unique(fc, return_inverse=True)
            pos = np.searchsorted(uniq, lc)
            found = (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == lc)
            l_ok &= found
            lc = np.where(found, pos, 0)
    return lc, fc, l_ok, f_ok


DENSE_MAX_CELLS = 16_000_000  # entity codes x distinct cutoffs up to which the table lookup is used (3 int32 tables)


def asof_indices(
    label_keys: Sequence,
    label_ts,
    feature_keys: Sequence,
    feature_cutoff,
    ttl: pd.Timedelta | None = None,
    *,
    dense: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each label row, the position of its feature row (-1 if none) and its status (matched/expired/missing).

    `label_keys` and `feature_keys` are parallel lists of key columns; timestamps are
    datetime-like or int64 nanoseconds. Among duplicate (keys, cutoff) feature rows the
    last one in input order wins. `dense` forces (True) or forbids (False) the table
    lookup; by default it is used when entities x distinct cutoffs is small enough.
    """
    if len(label_keys) != len(feature_keys) or not label_keys:
        raise ValueError("as-of join needs the same, non-empty list of key columns on both sides")
    l_t, f_t = _ns(label_ts), _ns(feature_cutoff)
    n = len(l_t)
    idx = np.full(n, -1, dtype=np.int64)
    status = np.full(n, MISSING, dtype=np.int8)
    if n == 0 or len(f_t) == 0:
        return idx, status
    lc, fc, l_ok, f_ok = _entity_codes(label_keys, feature_keys)
    rows = np.flatnonzero(f_ok)
    if len(rows) == 0:
        return idx, status
    cut = np.unique(f_t[rows])
    u = len(cut)
    f_rank = np.searchsorted(cut, f_t[rows])
    # The label's time becomes the rank of the latest distinct cutoff <= label_ts (-1: none).
    l_rank = np.searchsorted(cut, l_t, side="right") - 1
    n_codes = int(fc[rows].max()) + 1
    if dense is None:
        dense = n_codes * u <= DENSE_MAX_CELLS
    usable = l_ok & (l_rank >= 0) & (lc < n_codes)
    if dense:
        # A table (entity, cutoff rank) -> row, forward-filled along the ranks: one gather per label.
        itype = np.int32 if len(f_t) < 2**31 else np.int64
        table = np.full(n_codes * u, -1, dtype=itype)
        np.maximum.at(table, fc[rows] * u + f_rank, rows.astype(itype))  # duplicates: the last row in input order
        table = table.reshape(n_codes, u)
        has = np.where(table >= 0, np.arange(u, dtype=np.int32), np.int32(-1))
        last = np.maximum.accumulate(has, axis=1)  # latest rank <= r that has a row, per entity
        e = np.where(usable, lc, 0)
        r = np.where(usable, l_rank, 0)
        lr = last[e, r]
        found = usable & (lr >= 0)
        cand = np.where(found, table[e, np.maximum(lr, 0)], 0).astype(np.int64)
    else:
        key_f = fc[rows] * u + f_rank
        key_l = lc * u + l_rank
        order = np.argsort(key_f, kind="stable")
        sorted_keys = key_f[order]
        pos = np.searchsorted(sorted_keys, key_l, side="right") - 1
        safe = np.maximum(pos, 0)
        found = usable & (pos >= 0) & (sorted_keys[safe] >= lc * u)
        cand = rows[order[safe]]
    if ttl is not None:
        ttl_ns = int(pd.Timedelta(ttl).value)
        expired = found & (f_t[cand] < l_t - ttl_ns)
    else:
        expired = np.zeros(n, dtype=bool)
    status = np.where(found & ~expired, MATCHED, np.where(expired, EXPIRED, MISSING)).astype(np.int8)
    idx = np.where(status == MATCHED, cand, -1)
    return idx, status


def take_rows(table: pa.Table, idx: np.ndarray) -> pa.Table:
    """Rows of `table` at `idx`; -1 gives an all-null row (types preserved)."""
    mask = idx < 0
    if table.num_rows == 0:
        return pa.table({c: pa.nulls(len(idx), type=t) for c, t in zip(table.column_names, table.schema.types)})
    return table.take(pa.array(np.where(mask, 0, idx), mask=mask))


def asof_join(
    labels: pd.DataFrame,
    features: pd.DataFrame,
    keys: Sequence[str],
    feature_columns: Sequence[str] | None = None,
    ttl: pd.Timedelta | None = None,
    *,
    label_ts: str = "label_ts",
    cutoff: str = "cutoff",
    prefix: str = "",
    with_cutoff: bool = False,
) -> pd.DataFrame:
    """Labels with the as-of feature columns appended (pandas in, pandas out; row order kept).

    Feature columns are renamed ``prefix + name``; with `with_cutoff` the used row's cutoff
    is added as ``prefix + "cutoff"`` (null unless matched).
    """
    keys = list(keys)
    cols = [c for c in (feature_columns if feature_columns is not None else features.columns) if c not in keys and c != cutoff]
    idx, _ = asof_indices([labels[k] for k in keys], labels[label_ts], [features[k] for k in keys], features[cutoff], ttl)
    take = [*cols, cutoff] if with_cutoff else cols
    got = take_rows(pa.Table.from_pandas(features[take], preserve_index=False), idx).to_pandas()
    got.columns = [prefix + c for c in take]
    got.index = labels.index
    return pd.concat([labels, got], axis=1)


def brute_force_asof(
    labels: pd.DataFrame,
    features: pd.DataFrame,
    keys: Sequence[str],
    feature_columns: Sequence[str],
    ttl: pd.Timedelta | None,
    *,
    label_ts: str = "label_ts",
    cutoff: str = "cutoff",
) -> pd.DataFrame:
    """Reference implementation: a per-row scan, for tests only (quadratic)."""
    keys = list(keys)
    out = []
    for _, row in labels.iterrows():
        cand = features
        for k in keys:
            cand = cand[cand[k] == row[k]] if pd.notna(row[k]) else cand.iloc[:0]
        cand = cand[cand[cutoff] <= row[label_ts]]
        vals = {c: None for c in feature_columns}
        status = MISSING
        if len(cand):
            latest = cand[cand[cutoff] == cand[cutoff].max()].iloc[-1]
            if ttl is not None and latest[cutoff] < row[label_ts] - ttl:
                status = EXPIRED
            else:
                status = MATCHED
                vals = {c: latest[c] for c in feature_columns}
        out.append({**vals, "_status": status})
    return pd.DataFrame(out, index=labels.index, columns=[*feature_columns, "_status"])
