"""Cost-aware feature selection validated by time-split CV (no Dagster imports).

Input: a *candidate* training set (``featurecore.training``) that holds every feature worth
considering (the declared groups, static attributes, candidate assets). Output: the
decisions and metrics that become a versioned ``FeatureSet`` (``selected_feature_set``,
``publish``).

Splits (all rows of one entity share a split, so the model cannot recognise users):

- entities are hashed (seeded) into *selection* (``share_selection``, 70%) and
  *validation* (30%). Selection entities are hashed again into ``importance_folds``;
- the univariate tests, the redundancy check and the importance models see selection
  entities only. Validation entities are used once, by the final CV;
- a *time* gap of the label delay (7 days for ``purchase_7d``) separates every training
  window from its validation window, so no training label's horizon overlaps validation.

Pipeline (each heavy step is a Dask task; the caller only handles the small dicts):

1. **screen** (``screen``): drop constant and all-missing features. Test each feature
   against the label on *one random row per entity*. Rows of one entity are not
   independent, and testing all rows would understate p-values: a pure-noise user
   attribute looks "significant" once each user is counted 20 times. Numeric features
   get Mann-Whitney U for a binary label (Spearman for a continuous one), categoricals a
   chi-squared (or Kruskal) test. Benjamini-Hochberg keeps the false discovery rate at
   ``fdr_level``. This is tsfresh's relevance table with the per-entity sample added.
2. **redundancy** (``prune_redundant``): of each relevant pair with |Spearman rho| >
   ``corr_threshold``, the cheaper feature stays (at equal cost, the one with stronger
   univariate evidence). This runs before the model because near-duplicates share
   permutation importance and would both look useless.
3. **importance** (``importance_fold``, one task per fold): LightGBM trained on the other
   folds' entities up to the gap before the last quarter of the days. Permutation
   importance (AUC drop, ``n_repeats``) is measured on this fold's entities in that last
   quarter, for the top ``max_permutation_features`` by split gain, plus one joint
   permutation per family. A feature stays when its mean drop exceeds
   ``min_importance + cost_weight * seconds_per_day``, so a costly feature must earn
   more. A family whose joint drop does not exceed
   ``min_family_gain + family_cost_weight * family seconds_per_day`` is dropped whole
   (static attributes cost nothing per day). Decisions never see a timing of the current
   run: each family's seconds per day are recorded the first time it is measured
   (``decision_costs``, ``<store>/_selection/cost_basis.json``) and reused until its source
   version changes, then rounded to half-decades (``quantize_cost``). Measured seconds are
   still reported.
4. **validation** (``cv_config``, one task per configuration): time-split CV, expanding
   windows, ``n_folds`` validation windows at the end of the range. Models train on
   selection entities and validate on validation entities. It compares the selected set
   with the declared-groups baseline, plus the selected set without each family and the
   baseline plus each new source (the ablation report).

Categoricals with at most ``max_native_categories`` values are split natively by
LightGBM. Larger ones are target-encoded inside every fit with
``featurecore.encodings_target.TimeAwareTargetEncoder``: ordered out-of-fold on the
training rows, and full training statistics for validation rows, which the gap makes known.

Models are LightGBM with ``n_jobs=1`` (parallelism comes from Dask tasks; OpenMP threads
fight other processes on a shared 2-core machine) and ``deterministic=True``, so a fixed
seed gives the same result on every run over the same candidate training set.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .candidates.costs import column_bytes
from .encodings_target import TimeAwareTargetEncoder
from .feature_sets import FeatureRef, FeatureSet

S, C = 0, 1  # entity splits: selection, validation


@dataclass(frozen=True)
class SelectionConfig:
    """Knobs of the selection; every field is recorded in the published feature set."""

    seed: int = 7
    fdr_level: float = 0.01  # strict: a wide table of noise yields chance "discoveries" at 5%
    share_selection: float = 0.7  # entities used by selection; the rest only validate (final CV)
    importance_folds: int = 2  # entity folds within the selection share for cross-fitted importance
    gap_days: int | None = None  # default: the label delay
    n_folds: int = 3
    min_train_days: int = 5
    n_repeats: int = 3
    max_native_categories: int = 32  # more categories: time-aware target encoding
    max_permutation_features: int = 100  # by split gain; the rest count as unimportant
    min_importance: float = 0.0002  # AUC (or R^2) drop when the feature is permuted
    require_stable: bool = False  # also require a positive drop in every importance fold
    cost_weight: float = 0.0005  # extra importance a feature must show per compute second per day
    corr_threshold: float = 0.95
    min_family_gain: float = 0.0  # joint permutation drop a family must show (plus its cost share)
    family_cost_weight: float = 0.0002  # per compute second per day of the family
    max_rows: int = 150_000
    n_estimators: int = 100
    learning_rate: float = 0.1
    max_valid_rows: int = 6000  # permutation importance scores this many validation rows (sampled)
    max_train_rows: int = 40_000  # rows a CV or importance model trains on (seeded sample of the window)
    max_bin: int = 63
    num_leaves: int = 15
    min_child_samples: int = 100
    colsample_bytree: float = 0.5
    smoothing: float = 20.0  # target-encoding prior weight


# --------------------------------------------------------------------------- frame


@dataclass
class Frame:
    """The candidate rows a selection works on (lives on a Dask worker)."""

    X: pd.DataFrame  # features; categoricals as object
    y: np.ndarray
    ts: pd.Series  # label_ts
    day: np.ndarray  # label day index 0..n_days-1
    split: np.ndarray  # S/C per row
    fold: np.ndarray  # importance fold of the row's entity (within S)
    entity: np.ndarray
    days: list[str]
    binary: bool
    categorical: list[str] = field(default_factory=list)


def entity_hash(entities, seed: int) -> np.ndarray:
    """A stable seeded uniform [0, 1) number per row from a hash of its entity id."""
    uniq, inv = np.unique(np.asarray(entities, dtype=str), return_inverse=True)
    u = np.array([int(hashlib.sha1(f"{seed}:{e}".encode()).hexdigest()[:12], 16) / 16**12 for e in uniq])
    return u[inv]


def load_frame(store_root: str, training_set: str, features: list[str], entity_key: str, cfg: SelectionConfig) -> Frame:
    """Dask task: read the candidate training set and prepare the frame (sampled to `max_rows`, fixed order)."""
    import pyarrow.compute as pc

    from .training import read_training_table

    t = read_training_table(store_root, training_set, columns=[entity_key, "label_ts", "label", *features])
    t = t.filter(pc.is_valid(t["label"]))
    order = pc.sort_indices(t, sort_keys=[("label_ts", "ascending"), (entity_key, "ascending")]).to_numpy()
    if len(order) > cfg.max_rows:  # a seeded subsample, still in time order
        order = order[np.sort(np.random.default_rng(cfg.seed).choice(len(order), cfg.max_rows, replace=False))]
    t = t.take(pa.array(order))  # one copy, in Arrow; pandas conversion happens once per column below
    meta = t.select([entity_key, "label_ts", "label"]).to_pandas()
    cols = {}
    cats = []
    for c in features:
        col = t[c]
        typ = col.type
        if pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ) or pa.types.is_null(typ):
            arr = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            if np.isinf(arr).any():
                arr = np.where(np.isfinite(arr), arr, np.nan)
            cols[c] = arr
        else:
            cats.append(c)
            cols[c] = col.to_pandas().astype(object).to_numpy()
    X = pd.DataFrame(cols, copy=False)
    del t
    day = meta["label_ts"].dt.strftime("%Y-%m-%d")
    days = sorted(day.unique())
    y = meta["label"].to_numpy("float64")
    u = entity_hash(meta[entity_key], cfg.seed)
    return Frame(X=X, y=y, ts=meta["label_ts"], day=day.map({d: i for i, d in enumerate(days)}).to_numpy(),
                 split=np.where(u < cfg.share_selection, S, C),
                 fold=np.minimum((u / cfg.share_selection * cfg.importance_folds).astype(int), cfg.importance_folds - 1),
                 entity=meta[entity_key].to_numpy(dtype=object), days=days,
                 binary=bool(np.isin(np.unique(y), [0.0, 1.0]).all()), categorical=cats)


def frame_summary(fr: Frame) -> dict:
    """Small facts about the frame for reports."""
    return {"rows": len(fr.y), "days": fr.days, "n_days": len(fr.days), "entities": int(len(np.unique(fr.entity))),
            "binary": fr.binary, "label_mean": float(fr.y.mean()) if len(fr.y) else None,
            "rows_by_split": {"selection": int((fr.split == S).sum()), "validation": int((fr.split == C).sum())},
            "categorical": fr.categorical}


# --------------------------------------------------------------------------- models


def _gap(cfg: SelectionConfig, delay_days: int) -> int:
    return delay_days if cfg.gap_days is None else cfg.gap_days


def _encode(fr: Frame, cols: list[str], train: np.ndarray, other: np.ndarray, delay: pd.Timedelta, cfg: SelectionConfig):
    """Numeric matrices for train and other rows, and the indices of native categorical columns.

    Categoricals with few values are integer codes (from the training rows; unseen -> NaN)
    that LightGBM splits natively. Those with many values are target-encoded without
    leakage (ordered out-of-fold on the training rows).
    """
    Xt = np.empty((int(train.sum()), len(cols)))
    Xo = np.empty((int(other.sum()), len(cols)))
    native = []
    for j, c in enumerate(cols):
        if c in fr.categorical:
            tr_vals = fr.X.loc[train, c].astype(object).where(fr.X.loc[train, c].notna(), "<missing>").astype(str)
            ot_vals = fr.X.loc[other, c].astype(object).where(fr.X.loc[other, c].notna(), "<missing>").astype(str)
            cats = pd.Index(sorted(tr_vals.unique()))
            if len(cats) <= cfg.max_native_categories:
                native.append(j)
                Xt[:, j] = cats.get_indexer(tr_vals)
                code = cats.get_indexer(ot_vals).astype(float)
                Xo[:, j] = np.where(code < 0, np.nan, code)
            else:
                enc = TimeAwareTargetEncoder(delay, cfg.smoothing)
                Xt[:, j] = enc.fit_transform(fr.X.loc[train, c], fr.ts[train], fr.y[train])
                Xo[:, j] = enc.transform(fr.X.loc[other, c])
        else:
            col = fr.X[c].to_numpy("float64")
            Xt[:, j], Xo[:, j] = col[train], col[other]
    return Xt, Xo, native


def _model(cfg: SelectionConfig, binary: bool):
    import lightgbm as lgb

    kw = dict(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate, num_leaves=cfg.num_leaves,
              min_child_samples=cfg.min_child_samples, subsample=0.8, subsample_freq=1,
              colsample_bytree=cfg.colsample_bytree, reg_lambda=1.0, random_state=cfg.seed, n_jobs=1, max_bin=cfg.max_bin,
              deterministic=True, force_row_wise=True, verbose=-1)
    return lgb.LGBMClassifier(**kw) if binary else lgb.LGBMRegressor(**kw)


def _score(model, X, y, binary: bool) -> float:
    from sklearn.metrics import r2_score, roc_auc_score

    if binary:
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(roc_auc_score(y, model.predict_proba(X)[:, 1]))
    return float(r2_score(y, model.predict(X)))


def fit_score(fr: Frame, cols: list[str], train: np.ndarray, valid: np.ndarray, delay: pd.Timedelta, cfg: SelectionConfig):
    """Fit on `train` rows, score on `valid` rows; returns (metric, model, Xvalid)."""
    rows = np.flatnonzero(train)
    if len(rows) > cfg.max_train_rows:
        train = np.zeros_like(train)
        train[np.random.default_rng([cfg.seed, len(rows)]).choice(rows, cfg.max_train_rows, replace=False)] = True
    Xt, Xv, native = _encode(fr, cols, train, valid, delay, cfg)
    model = _model(cfg, fr.binary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Xt, fr.y[train], categorical_feature=native or "auto")
    return _score(model, Xv, fr.y[valid], fr.binary), model, Xv


def cv_folds(fr: Frame, cfg: SelectionConfig, delay_days: int) -> list[dict]:
    """Expanding-window folds: validation windows at the end of the range, each after a gap of the label delay."""
    n, g = len(fr.days), _gap(cfg, delay_days)
    v = max(1, (n - g - cfg.min_train_days) // cfg.n_folds)
    folds = []
    for k in range(cfg.n_folds):
        v0 = n - (cfg.n_folds - k) * v
        if v0 - g < 1:
            continue
        folds.append({"train_days": [0, v0 - g - 1], "valid_days": [v0, v0 + v - 1]})
    if not folds:
        raise ValueError(f"selection: {n} label days are too few for a gap of {g} days and {cfg.min_train_days} training days")
    return folds


def _fold_masks(fr: Frame, fold: dict, train_splits, valid_splits) -> tuple[np.ndarray, np.ndarray]:
    tr = (fr.day >= fold["train_days"][0]) & (fr.day <= fold["train_days"][1]) & np.isin(fr.split, train_splits)
    va = (fr.day >= fold["valid_days"][0]) & (fr.day <= fold["valid_days"][1]) & np.isin(fr.split, valid_splits)
    return tr, va


# --------------------------------------------------------------------------- step 1: screen


def _bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values)."""
    p = np.asarray(p, dtype=float)
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def univariate_pvalue(x: pd.Series, y: np.ndarray, categorical: bool, binary: bool) -> float:
    """p-value of one feature against the label (MWU / Spearman for numeric, chi-squared for categorical)."""
    from scipy import stats

    if categorical:
        xs = x.astype(object).where(x.notna(), "<missing>").astype(str)
        if xs.nunique() < 2:
            return 1.0
        if binary:
            table = pd.crosstab(xs, y)
            if table.shape[1] < 2:
                return 1.0
            return float(stats.chi2_contingency(table.to_numpy())[1])
        groups = [y[(xs == v).to_numpy()] for v in xs.unique()]
        return float(stats.kruskal(*groups).pvalue) if len(groups) > 1 else 1.0
    ok = x.notna().to_numpy()
    xv, yv = x.to_numpy("float64")[ok], y[ok]
    if len(xv) < 20 or np.nanstd(xv) == 0:
        return 1.0
    if binary:
        a, b = xv[yv > 0.5], xv[yv <= 0.5]
        if len(a) < 5 or len(b) < 5:
            return 1.0
        return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return float(stats.spearmanr(xv, yv).pvalue)


def screen(fr: Frame, cfg: SelectionConfig) -> dict:
    """Dask task: constant / all-missing features, and per-entity univariate tests with BH FDR control."""
    sel = fr.split == S
    idx = np.flatnonzero(sel)
    rng = np.random.default_rng(cfg.seed)
    # one random row per entity: shuffle, then keep each entity's first occurrence
    perm = idx[rng.permutation(len(idx))]
    _, first = np.unique(fr.entity[perm].astype(str), return_index=True)
    one = np.sort(perm[first])
    y = fr.y[one]
    out: dict = {"constant": [], "all_missing": [], "pvalue": {}, "qvalue": {}, "missing_rate": {}, "sample_rows": int(len(one))}
    tested = []
    for c in fr.X.columns:
        col = fr.X.loc[sel, c]
        out["missing_rate"][c] = float(col.isna().mean())
        if col.notna().sum() == 0:
            out["all_missing"].append(c)
            continue
        if col.nunique(dropna=True) <= 1 and not (col.isna().any() and c in fr.categorical):
            out["constant"].append(c)
            continue
        out["pvalue"][c] = univariate_pvalue(fr.X[c].iloc[one], y, c in fr.categorical, fr.binary)
        tested.append(c)
    q = _bh(np.array([out["pvalue"][c] for c in tested]))
    out["qvalue"] = {c: float(v) for c, v in zip(tested, q)}
    out["relevant"] = [c for c in tested if out["qvalue"][c] <= cfg.fdr_level]
    return out


# --------------------------------------------------------------------------- step 2: importance


def importance_fold(fr: Frame, cols: list[str], cfg: SelectionConfig, delay_days: int, k: int,
                    families: dict[str, str] | None = None) -> dict:
    """Dask task: LightGBM on the other folds' entities (early days), permutation importance on fold k's (late days).

    Also permutes each family's features jointly: the family's value in the model.
    """
    n, g = len(fr.days), _gap(cfg, delay_days)
    # the last quarter of the days validates; everything up to the gap before it trains
    t_valid = max(cfg.min_train_days + g, n - max(3, n // 4))
    train = (fr.day < t_valid - g) & (fr.split == S) & (fr.fold != k)
    valid = (fr.day >= t_valid) & (fr.split == S) & (fr.fold == k)
    rows = np.flatnonzero(valid)
    if len(rows) > cfg.max_valid_rows:
        valid = np.zeros_like(valid)
        valid[np.random.default_rng([cfg.seed, k, 1]).choice(rows, cfg.max_valid_rows, replace=False)] = True
    t0 = time.perf_counter()
    base, model, Xv = fit_score(fr, cols, train, valid, pd.Timedelta(days=delay_days), cfg)
    gain = model.booster_.feature_importance(importance_type="gain").astype(float)
    gain = gain / gain.sum() if gain.sum() > 0 else gain
    order = np.argsort(-gain, kind="stable")
    todo = [int(j) for j in order[: cfg.max_permutation_features] if gain[j] > 0]
    rng = np.random.default_rng([cfg.seed, k])
    yv = fr.y[valid]
    drops = {}
    for j in todo:
        saved = Xv[:, j].copy()
        d = []
        for _ in range(cfg.n_repeats):
            Xv[:, j] = saved[rng.permutation(len(saved))]
            d.append(base - _score(model, Xv, yv, fr.binary))
        Xv[:, j] = saved
        drops[cols[j]] = float(np.mean(d))
    fam_drops = {}
    by_family: dict[str, list[int]] = {}
    for j, c in enumerate(cols):
        by_family.setdefault(family_of(c, families or {}), []).append(j)
    for fam, js in sorted(by_family.items()):
        saved = Xv[:, js].copy()
        d = []
        for _ in range(cfg.n_repeats):
            Xv[:, js] = saved[rng.permutation(len(saved))]  # rows permuted together: the family's joint signal
            d.append(base - _score(model, Xv, yv, fr.binary))
        Xv[:, js] = saved
        fam_drops[fam] = float(np.mean(d))
    return {"fold": k, "metric": base, "train_rows": int(train.sum()), "valid_rows": int(valid.sum()),
            "train_days": [0, t_valid - g - 1], "valid_days": [t_valid, n - 1],
            "gain": {c: float(v) for c, v in zip(cols, gain)}, "drops": drops, "family_drops": fam_drops,
            "seconds": time.perf_counter() - t0}


def combine_importance(folds: list[dict], cols: list[str], binary: bool) -> dict:
    """Mean permutation importance over folds, its smallest fold value, and mean gain share."""
    perm = {c: float(np.mean([f["drops"].get(c, 0.0) for f in folds])) for c in cols}
    low = {c: float(min(f["drops"].get(c, 0.0) for f in folds)) for c in cols}
    gain = {c: float(np.mean([f["gain"].get(c, 0.0) for f in folds])) for c in cols}
    used = [c for c in cols if any(c in f["drops"] for f in folds)]
    fams = sorted({k for f in folds for k in f["family_drops"]})
    return {"metric": float(np.mean([f["metric"] for f in folds])), "metric_name": "roc_auc" if binary else "r2",
            "permutation": perm, "permutation_min_fold": low, "gain": gain, "permuted": used,
            "family": {k: float(np.mean([f["family_drops"].get(k, 0.0) for f in folds])) for k in fams},
            "folds": [{k: v for k, v in f.items() if k not in ("gain", "drops", "family_drops")} for f in folds]}


def correlated_pairs(fr: Frame, cols: list[str], threshold: float, max_rows: int = 20_000, seed: int = 0) -> list[tuple[str, str, float]]:
    """Dask task: pairs of numeric features with |Spearman rho| above `threshold` (on selection rows)."""
    num = [c for c in cols if c not in fr.categorical]
    rows = np.flatnonzero(fr.split == S)
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_rows, replace=False))
    if len(num) < 2:
        return []
    rho = fr.X[num].iloc[rows].rank().corr(min_periods=50).to_numpy()
    out = []
    iu = np.triu_indices(len(num), 1)
    for i, j in zip(*iu):
        r = rho[i, j]
        if np.isfinite(r) and abs(r) > threshold:
            out.append((num[i], num[j], float(r)))
    return out


# --------------------------------------------------------------------------- step 4: CV


def cv_config(fr: Frame, cols: list[str], folds: list[dict], cfg: SelectionConfig, delay_days: int) -> dict:
    """Dask task: time-split CV of one feature list (train on selection entities, validate on the others)."""
    if not cols:
        return {"folds": [], "mean": float("nan"), "features": 0}
    delay = pd.Timedelta(days=delay_days)
    scores = []
    for f in folds:
        tr, va = _fold_masks(fr, f, [S], [C])
        scores.append(fit_score(fr, cols, tr, va, delay, cfg)[0])
    return {"folds": scores, "mean": float(np.nanmean(scores)), "features": len(cols)}


# --------------------------------------------------------------------------- decisions (small, in the caller)


def quantize_cost(seconds: float) -> float:
    """Round a cost to a half-decade (0.1, 0.316, 1, 3.16 ...): decisions compare cost tiers, not digits."""
    if not seconds or seconds <= 0 or not np.isfinite(seconds):
        return 0.0
    return float(10 ** (round(2 * np.log10(seconds)) / 2))


COST_BASIS = Path("_selection") / "cost_basis.json"


def read_cost_basis(store_root: str) -> dict[str, dict]:
    """The recorded per-family cost basis of a store ({} when none is recorded)."""
    path = Path(store_root) / COST_BASIS
    return json.loads(path.read_text())["families"] if path.is_file() else {}


def decision_costs(store_root: str, feature_seconds: dict[str, float], families: dict[str, str],
                   source_versions: dict[str, str], remeasure: bool = False, record: bool = True) -> dict:
    """The costs selection decides with: per family, the seconds/day recorded when it was first measured.

    Measured seconds move with the machine's load (the demo's group timings varied 2.3x
    between two runs, which crossed half-decade steps for 166 of 679 candidates). So the
    first measurement of a family is recorded in ``<store>/_selection/cost_basis.json``
    with its source's version and reused by every later selection. A family is measured
    again only when its source version changes (a new group version, new candidate
    artifacts) or with ``remeasure``. Per feature: the family's recorded seconds spread
    over its features in this candidate set; both rounded with ``quantize_cost``.
    Returns ``features`` and ``families`` (decision costs), ``basis`` (the entries used)
    and ``recorded`` (families measured by this call).
    """
    measured: dict[str, float] = {}
    size: dict[str, int] = {}
    for q, sec in feature_seconds.items():
        fam = family_of(q, families)
        measured[fam] = measured.get(fam, 0.0) + float(sec or 0.0)
        size[fam] = size.get(fam, 0) + 1
    basis = read_cost_basis(store_root)
    recorded = []
    stamp = pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")
    for fam in sorted(measured):
        version = str(source_versions.get(fam.split(":", 1)[0], ""))
        old = basis.get(fam)
        if remeasure or old is None or old.get("source_version") != version:
            basis[fam] = {"seconds_per_day": measured[fam], "source_version": version, "recorded_at": stamp,
                          "features_when_recorded": size[fam]}
            recorded.append(fam)
    if recorded and record:
        path = Path(store_root) / COST_BASIS
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"families": dict(sorted(basis.items()))}, indent=1))
        tmp.replace(path)
    fam_cost = {fam: quantize_cost(basis[fam]["seconds_per_day"]) for fam in measured}
    feat_cost = {q: quantize_cost(basis[family_of(q, families)]["seconds_per_day"] / size[family_of(q, families)])
                 for q in feature_seconds}
    return {"features": feat_cost, "families": fam_cost, "basis": {f: basis[f] for f in sorted(measured)},
            "recorded": recorded}


def family_of(col: str, families: dict[str, str]) -> str:
    """A qualified column's family: the candidate family if known, else its source."""
    return families.get(col, col.split(".", 1)[0])


def prune_redundant(relevant: list[str], pairs: list, pvalues: dict[str, float], costs: dict[str, float],
                    cfg: SelectionConfig) -> tuple[list[str], dict]:
    """Drop one feature of each highly correlated pair before the model sees them.

    Near-duplicates share permutation importance (permuting one leaves the other), so both
    would look useless. Of a pair, the cheaper feature stays; at equal cost, the one with
    the stronger univariate evidence.
    """
    dropped: dict[str, str] = {}
    rank = {c: (costs.get(c, 0.0), pvalues.get(c, 1.0), c) for c in relevant}
    for a, b, r in sorted(pairs, key=lambda p: (-abs(p[2]), p[0], p[1])):
        if a in dropped or b in dropped or a not in rank or b not in rank:
            continue
        win, lose = (a, b) if rank[a] <= rank[b] else (b, a)
        why = "cheaper" if costs.get(win, 0.0) < costs.get(lose, 0.0) else "stronger univariate evidence"
        dropped[lose] = f"redundant with {win} (|rho|={abs(r):.3f} > {cfg.corr_threshold}; kept the {why} one)"
    return [c for c in relevant if c not in dropped], dropped


def decide_features(scr: dict, imp: dict, costs: dict[str, float], cfg: SelectionConfig,
                    redundant: dict[str, str] | None = None) -> tuple[list[str], dict]:
    """Keep/drop per feature with a reason (pure; small inputs)."""
    dropped: dict[str, str] = {}
    for c in scr["all_missing"]:
        dropped[c] = "all values missing"
    for c in scr["constant"]:
        dropped[c] = "constant"
    for c, q in scr["qvalue"].items():
        if q > cfg.fdr_level:
            dropped[c] = f"not relevant: q={q:.3g} > {cfg.fdr_level} (per-entity univariate test, BH)"
    dropped.update(redundant or {})
    kept = []
    for c in scr["relevant"]:
        if c in dropped:
            continue
        m, low = imp["permutation"].get(c, 0.0), imp["permutation_min_fold"].get(c, 0.0)
        need = cfg.min_importance + cfg.cost_weight * costs.get(c, 0.0)
        cost = f" (cost ~{costs[c]:.3g} s/day)" if costs.get(c, 0.0) > 0 else ""
        if c not in imp["permuted"]:
            dropped[c] = "no model importance: never used by the model"
        elif cfg.require_stable and low <= 0:
            dropped[c] = f"no stable importance: permutation drop {m:.4f} on average but {low:.4f} in one fold"
        elif m <= need:
            why = "no model importance" if m <= cfg.min_importance else "too costly for its value"
            dropped[c] = f"{why}: permutation drop {m:.4f} <= {need:.4f} needed{cost}"
        else:
            kept.append(c)
    return kept, dropped


def ablation_configs(selected: list[str], baseline: list[str], families: dict[str, str]) -> dict[str, list[str]]:
    """The feature lists the CV validates.

    They are the baseline, the selected set, the selected set without each family (the
    family's marginal gain), and the baseline plus each new *source* (all of the
    source's selected features, whatever their family).
    """
    fam_sel: dict[str, list[str]] = {}
    src_sel: dict[str, list[str]] = {}
    for c in selected:
        fam_sel.setdefault(family_of(c, families), []).append(c)
        src_sel.setdefault(c.split(".", 1)[0], []).append(c)
    base_srcs = {c.split(".", 1)[0] for c in baseline}
    out = {"baseline": list(baseline), "selected": list(selected)}
    for f in sorted(fam_sel):
        out[f"selected - {f}"] = [c for c in selected if family_of(c, families) != f]
    for src in sorted(src_sel):
        if src not in base_srcs:
            out[f"baseline + {src}"] = list(baseline) + src_sel[src]
    return out


def run_selection(client, store_root: str, training_set: str, features: list[str], baseline: list[str],
                  entity_key: str, delay_days: int, costs: dict[str, float] | None = None,
                  families: dict[str, str] | None = None, family_costs: dict[str, float] | None = None,
                  cfg: SelectionConfig = SelectionConfig()) -> dict:
    """The whole selection on Dask; returns small results (decisions, importances, metrics, ablation)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        """Record the seconds since the previous lap."""
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 3)

    families = families or {}
    # Callers pass recorded costs (``decision_costs``), never this run's timings; half-decade steps on top.
    costs = {k: quantize_cost(v) for k, v in (costs or {}).items()}
    family_costs = {k: quantize_cost(v) for k, v in (family_costs or {}).items()}
    fr = client.submit(load_frame, store_root, training_set, features, entity_key, cfg, pure=False)
    summary_f = client.submit(frame_summary, fr, pure=False)
    folds_f = client.submit(cv_folds, fr, cfg, delay_days, pure=False)
    base_f = client.submit(cv_config, fr, baseline, folds_f, cfg, delay_days, pure=False)  # overlaps the screening
    scr = client.submit(screen, fr, cfg, pure=False).result()
    lap("load_and_screen")
    relevant = scr["relevant"]
    if not relevant:
        raise ValueError("selection: no feature passed the univariate relevance test; is the label informative?")
    pairs = client.submit(correlated_pairs, fr, relevant, cfg.corr_threshold, 20_000, cfg.seed, pure=False).result()
    candidates, redundant = prune_redundant(relevant, pairs, scr["pvalue"], costs, cfg)
    lap("redundancy")
    imp_fs = [client.submit(importance_fold, fr, candidates, cfg, delay_days, k, families, pure=False)
              for k in range(cfg.importance_folds)]
    folds = folds_f.result()
    imp = combine_importance(client.gather(imp_fs), candidates, summary_f.result()["binary"])
    lap("importance")
    selected, dropped = decide_features(scr, imp, costs, cfg, redundant)
    # A family must pay for itself: its joint permutation value (selection entities only) against its compute cost.
    dropped_fams = {}
    for fam in sorted({family_of(c, families) for c in selected}):
        value, cost = imp["family"].get(fam, 0.0), family_costs.get(fam, 0.0)
        need = cfg.min_family_gain + cfg.family_cost_weight * cost
        if value <= need:
            dropped_fams[fam] = f"family {fam} dropped: joint permutation value {value:+.4f} <= {need:.4f} needed" + (
                f" for ~{cost:.3g} s/day" if cost > 0 else "")
    for c in selected:
        if family_of(c, families) in dropped_fams:
            dropped[c] = dropped_fams[family_of(c, families)]
    selected = [c for c in selected if c not in dropped]
    if not selected:
        raise ValueError("selection: every relevant feature was dropped (no model importance); nothing to publish")
    # Validation on entities selection never saw: the chosen set, the baseline, and the ablations (for the report).
    configs = ablation_configs(selected, baseline, families)
    futs = {name: (base_f if name == "baseline" else client.submit(cv_config, fr, cols, folds, cfg, delay_days, pure=False))
            for name, cols in configs.items()}
    cv = {name: f.result() for name, f in futs.items()}
    lap("cross_validation")
    fam_gain = {name[len("selected - "):]: cv["selected"]["mean"] - r["mean"] for name, r in cv.items() if name.startswith("selected - ")}
    summary = summary_f.result()
    del fr
    return {
        "selected": selected, "dropped": dropped, "screen": scr, "importance": imp, "pairs": pairs, "folds": folds,
        "cv": cv, "configs": {k: len(v) for k, v in configs.items()}, "family_gain": fam_gain, "dropped_families": dropped_fams,
        "family_value": imp["family"], "family_costs_used": family_costs,
        "baseline": baseline, "metric_name": imp["metric_name"], "frame": summary, "config": asdict(cfg),
        "seconds": time.perf_counter() - t0, "timings": timings,
    }


# --------------------------------------------------------------------------- feature sets: candidates in, selection out

CANDIDATE_SUFFIX = "_candidates"
STATIC_BOOKKEEPING = ("source_file", "row_number")


def candidate_sources(store_root: str, entity_keys: tuple[str, ...] = ("user_id",)) -> list[str]:
    """Candidate assets in the store (``*_candidates`` with day partitions) keyed by `entity_keys`."""
    from .training import source_days

    root = Path(store_root)
    out = []
    for p in sorted(root.glob(f"*{CANDIDATE_SUFFIX}")) if root.is_dir() else []:
        days = source_days(store_root, p.name)
        if not days:
            continue
        files = sorted((p / f"date={days[-1]}").glob("*.parquet"))
        if files and set(entity_keys) <= set(pq.read_schema(files[0]).names):
            out.append(p.name)
    return out


def _schema_of_latest(store_root: str, source: str) -> pa.Schema:
    from .training import source_days

    days = source_days(store_root, source)
    files = sorted((Path(store_root) / source / f"date={days[-1]}").glob("*.parquet"))
    return pq.read_schema(files[0])


def candidate_feature_set(store_root: str, name: str = "user_candidates", entity_keys: tuple[str, ...] = ("user_id",),
                          static_sources: tuple[str, ...] = ("users", "users_wide"), candidate_ttl_days: int = 14,
                          candidates: list[str] | None = None) -> FeatureSet:
    """Every feature worth considering for `entity_keys`: declared groups, static attributes present, candidate assets present.

    Candidate assets declare no TTL. They get ``candidate_ttl_days``, which is long enough
    for a weekly cadence, and the value is recorded in the set, so the online store
    applies the same one.
    """
    from .groups import GROUPS
    from .training import SNAPSHOT, source_days

    feats, ttls = [], {}
    for g in GROUPS.values():
        if tuple(g.keys) != tuple(entity_keys) or not source_days(store_root, g.name):
            continue
        dtypes, descr = g.feature_dtypes(), g.feature_descriptions()
        feats += [FeatureRef(g.name, n, dtypes[n], descr[n]) for n in g.feature_names()]
        ttls[g.name] = int(g.ttl.total_seconds())
    for src in static_sources:
        path = Path(store_root) / src / SNAPSHOT
        if not path.is_file():
            continue
        for f in pq.read_schema(path):
            if f.name in entity_keys or f.name in STATIC_BOOKKEEPING:
                continue
            temporal = pa.types.is_date(f.type) or pa.types.is_timestamp(f.type)
            numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
            dtype = "float64" if temporal or numeric else "object"
            what = f"days from {f.name} to the row's label_ts" if temporal else f"{f.name}"
            feats.append(FeatureRef(src, f.name, dtype, f"Static attribute of {src} (assumed time-invariant): {what}"))
    for src in candidates if candidates is not None else candidate_sources(store_root, entity_keys):
        schema = _schema_of_latest(store_root, src)
        fam = _candidate_families(store_root, src)
        for f in schema:
            if f.name in entity_keys or f.name == "cutoff":
                continue
            numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
            feats.append(FeatureRef(src, f.name, "float64" if numeric else "object",
                                    f"Candidate from {src} (family {fam.get(f.name, src)})"))
        ttls[src] = candidate_ttl_days * 86_400
    return FeatureSet(name, "0", tuple(entity_keys), tuple(feats),
                      "Every candidate feature for selection: declared groups, static attributes and candidate assets.", ttls)


def _candidate_families(store_root: str, source: str) -> dict[str, str]:
    try:
        from .candidates.costs import feature_families
    except ImportError:  # the candidates package is optional for selection
        return {}
    return feature_families(store_root, source)


def feature_families(store_root: str, fs: FeatureSet) -> dict[str, str]:
    """Qualified column -> family: the candidates' own families (``asset:family``), else the source."""
    out = {}
    cache: dict[str, dict] = {}
    for f in fs.features:
        if f.source.endswith(CANDIDATE_SUFFIX):
            fam = cache.setdefault(f.source, _candidate_families(store_root, f.source)).get(f.feature)
            out[f.qualified] = f"{f.source}:{fam}" if fam else f.source
        else:
            out[f.qualified] = f.source
    return out


def feature_costs(store_root: str, fs: FeatureSet, start: str, end: str, group_seconds_per_day: dict[str, float] | None = None,
                  sample_days: int = 5) -> tuple[dict[str, dict], dict[str, dict]]:
    """Compute seconds per day and stored bytes per day, per feature and per family.

    Groups: the group's (tiles + features) compute seconds per day from the caller (the
    Dagster instance records them), spread evenly over the group's features. Candidates:
    their cost files (``featurecore.candidates.costs.read_costs``) per family, summed over
    the range and divided by its days (a weekly asset costs a seventh per day). Static
    sources cost no daily compute. Bytes come from the Parquet column sizes of a few sampled
    partitions.
    """
    from .profiling import sample_days as pick
    from .training import SNAPSHOT, source_days
    from .timeutil import day_range

    group_seconds_per_day = group_seconds_per_day or {}
    families = feature_families(store_root, fs)
    n_days = max(len(day_range(start, end)), 1)
    per: dict[str, dict] = {}
    for src in fs.sources:
        names = fs.features_of(src)
        static = (Path(store_root) / src / SNAPSHOT).is_file()
        if static:
            cb = column_bytes([Path(store_root) / src / SNAPSHOT])
            for n in names:
                per[f"{src}.{n}"] = {"seconds_per_day": 0.0, "bytes_per_day": 0.0, "bytes_once": cb.get(n, 0)}
            continue
        days = [d for d in source_days(store_root, src) if start <= d <= end]
        used = pick(days, sample_days)
        cb = column_bytes([f for d in used for f in sorted((Path(store_root) / src / f"date={d}").glob("*.parquet"))])
        # a weekly source has a partition only every 7th day: bytes per calendar day
        scale = (len(days) / n_days) / max(len(used), 1)
        fam_seconds: dict[str, float] = {}
        if src.endswith(CANDIDATE_SUFFIX):
            try:
                from .candidates.costs import read_costs

                costs = read_costs(store_root, src, days)
                fam_seconds = {f"{src}:{k}": float(v) / n_days for k, v in costs.groupby("family")["seconds"].sum().items()}
            except ImportError:
                pass
        fam_size: dict[str, int] = {}
        for n in names:
            fam_size[families[f"{src}.{n}"]] = fam_size.get(families[f"{src}.{n}"], 0) + 1
        for n in names:
            q = f"{src}.{n}"
            fam = families[q]
            if src.endswith(CANDIDATE_SUFFIX):
                sec = fam_seconds.get(fam, 0.0) / max(fam_size[fam], 1)
            else:
                sec = group_seconds_per_day.get(src, 0.0) / max(len(names), 1)
            per[q] = {"seconds_per_day": sec, "bytes_per_day": cb.get(n, 0) * scale, "bytes_once": 0}
    fam: dict[str, dict] = {}
    for q, c in per.items():
        f = fam.setdefault(families[q], {"seconds_per_day": 0.0, "bytes_per_day": 0.0, "features": 0})
        f["seconds_per_day"] += c["seconds_per_day"]
        f["bytes_per_day"] += c["bytes_per_day"]
        f["features"] += 1
    return per, fam


def _definition_key(fs: FeatureSet) -> str:
    d = fs.definition()
    d.pop("version")
    return json.dumps(d, sort_keys=True)


def publish(fs: FeatureSet, store_root: str) -> FeatureSet:
    """Save `fs` under the version of an identical published definition, else under the next version number."""
    from .feature_sets import load, save

    folder = Path(store_root) / "feature_sets" / fs.name
    versions = sorted(p.stem[1:] for p in folder.glob("v*.json")) if folder.is_dir() else []
    for v in versions:
        old = load(store_root, fs.name, v)
        if _definition_key(old) == _definition_key(fs):
            fs = replace(fs, version=old.version)
            save(fs, store_root)
            return fs
    nums = [int(v) for v in versions if v.isdigit()]
    fs = replace(fs, version=str(max(nums, default=0) + 1))
    save(fs, store_root)
    return fs


def selected_feature_set(candidates: FeatureSet, result: dict, costs: dict[str, dict], families: dict[str, str],
                         name: str = "user_selected", extra_info: dict | None = None) -> FeatureSet:
    """The versioned output of a selection: chosen features, their definitions and the evidence (version assigned by `publish`)."""
    by_q = {f.qualified: f for f in candidates.features}
    chosen = [by_q[c] for c in result["selected"]]
    srcs = list(dict.fromkeys(f.source for f in chosen))
    imp = result["importance"]
    cv = result["cv"]
    info = {
        "kind": "selection",
        "metric": result["metric_name"],
        "metrics": {
            "cv_selected": cv["selected"]["mean"], "cv_baseline": cv["baseline"]["mean"],
            "cv_gain": cv["selected"]["mean"] - cv["baseline"]["mean"],
            "cv_folds": {k: v["folds"] for k, v in cv.items()}, "ablation": {k: v["mean"] for k, v in cv.items()},
            "folds": result["folds"], "importance_model": imp["metric"],
        },
        "importances": {c: imp["permutation"].get(c, 0.0) for c in result["selected"]},
        "importances_all": imp["permutation"],
        "qvalues": {c: result["screen"]["qvalue"].get(c) for c in result["selected"]},
        "cost": {"seconds_per_day": sum(costs.get(c, {}).get("seconds_per_day", 0.0) for c in result["selected"]),
                 "bytes_per_day": sum(costs.get(c, {}).get("bytes_per_day", 0.0) for c in result["selected"]),
                 "per_feature": {c: costs.get(c, {}) for c in result["selected"]}},
        "families": {c: families.get(c, c.split(".", 1)[0]) for c in result["selected"]},
        "family_value": result["family_value"], "dropped_families": result["dropped_families"],
        "dropped": result["dropped"],
        "baseline": result["baseline"],
        "selected_from": {"feature_set": candidates.name, "version": candidates.version},
        "static_sources": [s for s in srcs if s not in candidates.ttl_seconds],
        "selection_config": result["config"],
        "rows": result["frame"]["rows"], "label_days": [result["frame"]["days"][0], result["frame"]["days"][-1]] if result["frame"]["days"] else [],
        **(extra_info or {}),
    }
    return FeatureSet(name, "0", candidates.entity_keys, tuple(chosen),
                      f"Selected from {candidates.name} v{candidates.version} by cost-aware selection "
                      f"({result['metric_name']} {cv['selected']['mean']:.4f} vs declared groups {cv['baseline']['mean']:.4f}).",
                      {s: candidates.ttl_seconds[s] for s in srcs if s in candidates.ttl_seconds}, info)
