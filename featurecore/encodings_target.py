"""Out-of-fold target encoding on time-ordered data: no row sees its own label or a future one.

A label is *known* at ``label_ts + delay``. A derived ``purchase_7d`` label is known once
its 7-day horizon has passed, so ``delay = 7 days``. The encoding of a row at time ``t``
uses only labels of rows with the same category that are already known at ``t``:
``label_ts_j + delay <= t``, strictly ``<`` when ``delay == 0``, so rows at the same
instant never see each other. ``fit_transform`` therefore never uses the row's own label,
or any label whose horizon overlaps the row's future. That matches what a model sees
online: when it scores at ``t``, only labels known at ``t`` exist.

The value is the smoothed mean ``(sum_y + m * prior) / (n + m)``, where ``prior`` is the
mean of every label known at ``t`` over all categories. It is NaN while no label at all
is known, and gradient boosting handles that. A missing category (None/NaN) is a
category of its own.

This is the ordered (time-expanding) form of out-of-fold encoding: each row's fold is
"everything known before it". ``fold_transform`` is the blocked form, for when a model
trains on time-ordered folds. ``transform`` encodes new rows (validation, serving) with
every label seen in ``fit_transform``. The caller must make sure those labels are known
by the time the new rows are scored; the time-split CV's gap of ``delay`` does that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_MISSING = "\x00<missing>"


def _codes(values: pd.Series, categories: pd.Index | None = None) -> tuple[np.ndarray, pd.Index]:
    v = pd.Series(values, copy=False).astype(object).where(pd.notna(values), _MISSING).astype(str)
    if categories is None:
        codes, cats = pd.factorize(v, sort=True)
        return codes.astype(np.int64), pd.Index(cats)
    return categories.get_indexer(v).astype(np.int64), categories


def _ns(ts) -> np.ndarray:
    s = pd.Series(ts, copy=False)
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy("datetime64[ns]").view("int64")


def ordered_target_encode(categories, label_ts, y, delay: pd.Timedelta = pd.Timedelta(0), smoothing: float = 20.0,
                          query_ts=None) -> np.ndarray:
    """Encode every row from the labels known strictly before it (see module docstring); vectorised.

    `query_ts` (default: `label_ts`) is the time at which each row is encoded.
    """
    y = np.asarray(y, dtype="float64")
    codes, _ = _codes(categories)
    t = _ns(label_ts)
    q = t if query_ts is None else _ns(query_ts)
    d = int(pd.Timedelta(delay).value)
    known = t + d
    side = "right" if d > 0 else "left"  # delay 0: a label at exactly t is not known at t
    times = np.unique(np.concatenate([known, q]))
    u = len(times)
    r_known = np.searchsorted(times, known)
    r_q = np.searchsorted(times, q)
    order = np.argsort(codes * u + r_known, kind="stable")
    keys = (codes * u + r_known)[order]
    csum = np.concatenate([[0.0], np.cumsum(y[order])])
    pos = np.searchsorted(keys, codes * u + r_q, side=side)
    start = np.searchsorted(keys, codes * u, side="left")
    n = pos - start
    s = csum[pos] - csum[start]
    g_order = np.argsort(known, kind="stable")
    g_sorted = known[g_order]
    g_sum = np.concatenate([[0.0], np.cumsum(y[g_order])])
    g_pos = np.searchsorted(g_sorted, q, side=side)
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(g_pos > 0, g_sum[g_pos] / np.maximum(g_pos, 1), np.nan)
        return np.where(g_pos > 0, (s + smoothing * prior) / (n + smoothing), np.nan)


class TimeAwareTargetEncoder:
    """Target encoder that fits on time-ordered rows without leakage and encodes new rows with what it saw."""

    def __init__(self, delay: pd.Timedelta = pd.Timedelta(0), smoothing: float = 20.0):
        self.delay = pd.Timedelta(delay)
        self.smoothing = float(smoothing)
        self.categories_: pd.Index | None = None
        self.sums_: np.ndarray | None = None
        self.counts_: np.ndarray | None = None
        self.prior_: float = float("nan")

    def fit_transform(self, categories, label_ts, y) -> np.ndarray:
        """Ordered out-of-fold encoding of the training rows; also keeps the full statistics for `transform`."""
        y = np.asarray(y, dtype="float64")
        codes, self.categories_ = _codes(categories)
        self.sums_ = np.bincount(codes, weights=y, minlength=len(self.categories_))
        self.counts_ = np.bincount(codes, minlength=len(self.categories_)).astype("float64")
        self.prior_ = float(y.mean()) if len(y) else float("nan")
        return ordered_target_encode(categories, label_ts, y, self.delay, self.smoothing)

    def transform(self, categories) -> np.ndarray:
        """Encode rows scored after every training label is known (unseen categories get the prior)."""
        if self.categories_ is None:
            raise RuntimeError("TimeAwareTargetEncoder.transform before fit_transform")
        codes, _ = _codes(categories, self.categories_)
        seen = codes >= 0
        c = np.where(seen, codes, 0)
        s = np.where(seen, self.sums_[c], 0.0)
        n = np.where(seen, self.counts_[c], 0.0)
        return (s + self.smoothing * self.prior_) / (n + self.smoothing)


def fold_transform(categories, label_ts, y, n_folds: int = 5, delay: pd.Timedelta = pd.Timedelta(0),
                   smoothing: float = 20.0) -> np.ndarray:
    """Blocked out-of-fold encoding: rows of time block k use only labels of earlier blocks known at the block's start."""
    t = pd.Series(_ns(label_ts))
    blocks = np.array_split(np.unique(t.to_numpy()), n_folds)
    out = np.full(len(t), np.nan)
    y = np.asarray(y, dtype="float64")
    cats = pd.Series(categories, copy=False).reset_index(drop=True)
    for b in blocks:
        if not len(b):
            continue
        rows = np.flatnonzero(t.isin(b).to_numpy())
        start = int(b.min())
        # Every row of the block is encoded as of the block's start, so it sees no label of its own block.
        q = np.full(len(t), start, dtype="int64")
        enc = ordered_target_encode(cats, t.astype("datetime64[ns]"), y, delay, smoothing,
                                    query_ts=pd.Series(q).astype("datetime64[ns]"))
        out[rows] = enc[rows]
    return out
