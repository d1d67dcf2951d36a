"""tsfresh candidates from per-entity time series of any entity–timestamp table.

A ``SeriesSource`` names a daily-partitioned store asset (``raw_events`` for the demo, or
e.g. ``sensor_readings``), its entity and time columns, the trailing window and the
*kinds* of series: a numeric column (optionally times another column, optionally
filtered), or a row count. With ``frequency`` set (demo: ``"1D"``) each kind is resampled
onto a fixed grid of bins ``[t - window, t)`` — sums and counts fill empty bins with 0,
means/min/max/last carry the last value forward; without it the raw points are used.

Extraction runs per entity shard inside one Dask task (``extract_features(n_jobs=0)``),
which writes its own Parquet part: tsfresh's ``ClusterDaskDistributor`` would gather every
result tuple through the client, which on this workload ate the whole parallel gain.

Parameters: ``minimal``, ``efficient`` (default), ``comprehensive``, ``efficient-no-cq``
(efficient without ``change_quantiles``, ~60% of efficient's time) or the path of a saved
``kind_to_fc_parameters`` JSON — what ``save_selection`` writes after ``select_from_labels``
(tsfresh ``select_features`` + ``from_columns``), so later runs extract only those features.

Series shorter than ``min_length`` (default 3: below that, variance, trend and
autocorrelation calculators are undefined) raise ``SeriesTooShortError`` naming the
entity and kind, unless ``short_series="drop"``, which leaves those entities out and
reports how many.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..timeutil import cutoff as cutoff_of
from ..timeutil import day_start
from .common import (
    CandidateError, EmptyShardError, SeriesTooShortError, artifact_dir, as_candidates, check_columns,
    config_hash, file_sha, read_window, save_json, source_columns, window_days, worker_name, write_part,
)

FAMILY = "tsfresh"
PCA_FAMILY = "tsfresh_pca"
PRESETS = ("minimal", "efficient", "comprehensive", "efficient-no-cq")
FILL_ZERO = ("sum", "count")
AGGS = ("sum", "count", "mean", "min", "max", "last")
OPS = {"==": lambda s, v: s == v, "!=": lambda s, v: s != v, ">": lambda s, v: s > v, ">=": lambda s, v: s >= v,
       "<": lambda s, v: s < v, "<=": lambda s, v: s <= v, "in": lambda s, v: s.isin(list(v))}


@dataclass(frozen=True)
class SeriesKind:
    """One series per entity: `column` (times `multiply`), rows filtered by `where`; no column = row count."""

    name: str
    column: str | None = None
    agg: str = "sum"  # how rows fall into a resampling bin
    where: tuple | None = None  # (column, op, value)
    multiply: str | None = None

    def __post_init__(self):
        if "__" in self.name or not self.name:
            raise ValueError(f"series kind {self.name!r}: names must be non-empty and not contain '__' (tsfresh's separator)")
        if self.agg not in AGGS:
            raise ValueError(f"series kind {self.name!r}: agg {self.agg!r} not in {AGGS}")
        if self.column is None and self.agg != "count":
            raise ValueError(f"series kind {self.name!r}: without a column the only aggregation is 'count'")

    def columns(self) -> list[str]:
        """Source columns this kind reads."""
        return [c for c in (self.column, self.multiply, self.where[0] if self.where else None) if c]


@dataclass(frozen=True)
class SeriesSource:
    """Where the series come from and how they are shaped."""

    asset: str = "raw_events"
    entity: str = "user_id"
    time: str = "ts"
    window_days: int = 28
    frequency: str | None = "1D"
    kinds: tuple[SeriesKind, ...] = (
        SeriesKind("event_count", agg="count"),
        SeriesKind("purchase_amount", column="price", multiply="quantity", agg="sum", where=("event_type", "==", "purchase")),
    )
    min_length: int = 3
    short_series: str = "error"  # "error" | "drop"

    def __post_init__(self):
        if self.short_series not in ("error", "drop"):
            raise ValueError(f"short_series={self.short_series!r}: expected 'error' or 'drop'")
        if not self.kinds:
            raise ValueError("a SeriesSource needs at least one kind")
        if self.frequency is not None:
            n = self.n_bins()
            if n < self.min_length:
                raise SeriesTooShortError(
                    f"window of {self.window_days} days at frequency {self.frequency} gives series of {n} points, "
                    f"fewer than min_length={self.min_length} that the calculators need")

    def n_bins(self) -> int:
        """Points per resampled series."""
        return int(pd.Timedelta(days=self.window_days) / pd.Timedelta(self.frequency))

    def read_columns(self) -> list[str]:
        """Every source column the kinds need, plus entity and time."""
        cols = [self.entity, self.time]
        for k in self.kinds:
            cols += [c for c in k.columns() if c not in cols]
        return cols


@dataclass(frozen=True)
class TsfreshConfig:
    """tsfresh settings of one candidate asset; every field is part of the artifact version."""

    source: SeriesSource = field(default_factory=SeriesSource)
    parameters: str = "efficient"
    pca_components: int = 0
    sample_entities: int = 300  # PCA is fitted on this many entities' features
    seed: int = 0

    def version(self, asset: str) -> str:
        """Hash of the config, the saved parameters file's content (if any) and tsfresh's version."""
        import tsfresh

        extra = file_sha(self.parameters) if self.parameters not in PRESETS else ""
        return config_hash(self, asset, extra, tsfresh.__version__, "tsfresh-1")


# --------------------------------------------------------------------------- parameters


def resolve_parameters(parameters: str, kinds: list[str]) -> dict[str, dict]:
    """kind -> fc_parameters for a preset name or a saved kind_to_fc_parameters JSON file."""
    from tsfresh.feature_extraction import ComprehensiveFCParameters, EfficientFCParameters, MinimalFCParameters

    if parameters in PRESETS:
        base = {"minimal": MinimalFCParameters, "efficient": EfficientFCParameters,
                "comprehensive": ComprehensiveFCParameters, "efficient-no-cq": EfficientFCParameters}[parameters]()
        if parameters == "efficient-no-cq":
            base.pop("change_quantiles", None)
        return {k: dict(base) for k in kinds}
    path = Path(parameters)
    if not path.is_file():
        raise CandidateError(f"tsfresh parameters {parameters!r}: not a preset {PRESETS} and no such file")
    saved = json.loads(path.read_text())
    saved = saved.get("kind_to_fc_parameters", saved)
    unknown = sorted(set(saved) - set(kinds))
    if unknown:
        raise CandidateError(f"saved tsfresh parameters {path} name kinds {unknown} that the source does not define ({kinds})")
    return {k: v for k, v in saved.items()}


def expected_columns(kind_params: dict[str, dict]) -> list[str]:
    """The feature columns the parameters produce (tsfresh on a dummy series of each kind)."""
    from tsfresh import extract_features

    rng = np.random.default_rng(0)
    cols = []
    for kind, params in kind_params.items():
        if not params:
            continue
        dummy = pd.DataFrame({"id": 0, "t": np.arange(40), "value": rng.normal(size=40)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = extract_features(dummy, column_id="id", column_sort="t", column_value="value",
                                 default_fc_parameters=params, n_jobs=0, disable_progressbar=True)
        cols += [f"{kind}__{c.split('__', 1)[1]}" for c in x.columns]
    return cols


# --------------------------------------------------------------------------- series


def _days(day: str, start: str, src: SeriesSource) -> list[str]:
    return window_days(day, src.window_days, start)


def check_source(store_root: str, day: str, start: str, src: SeriesSource) -> None:
    """Raise EntityConfigError when the entity, time or a kind's column is not in the source."""
    cols = source_columns(store_root, src.asset, _days(day, start, src))
    if not cols:
        return
    needed = {"entity": src.entity, "time": src.time}
    for k in src.kinds:
        needed.update({f"kind {k.name!r} {role}": c for role, c in (("value", k.column), ("multiplier", k.multiply),
                                                                      ("filter", k.where[0] if k.where else None))})
    check_columns(src.asset, cols, needed)


def read_rows(store_root: str, day: str, start: str, src: SeriesSource, entities: list | None = None) -> pd.DataFrame:
    """Source rows of the window `[t - window, t)` (only `entities` when given)."""
    check_source(store_root, day, start, src)
    t = cutoff_of(day)
    rows = read_window(store_root, src.asset, _days(day, start, src), src.read_columns(), entity=src.entity,
                       entities=entities, before=t, time_col=src.time)
    if len(rows):
        ts = pd.to_datetime(rows[src.time], utc=True)
        rows = rows[ts >= t - pd.Timedelta(days=src.window_days)]
    return rows


def list_entities(store_root: str, day: str, start: str, src: SeriesSource) -> list:
    """Entities with at least one row in the window before the cutoff."""
    rows = read_window(store_root, src.asset, _days(day, start, src), [src.entity, src.time], before=cutoff_of(day), time_col=src.time)
    if not len(rows):
        return []
    ts = pd.to_datetime(rows[src.time], utc=True)
    rows = rows[ts >= cutoff_of(day) - pd.Timedelta(days=src.window_days)]
    return sorted(rows[src.entity].dropna().unique().tolist())


def series_start(day: str, start: str, src: SeriesSource) -> pd.Timestamp:
    """First instant of the series: `t - window`, but never before the first partition (no data there)."""
    return max(cutoff_of(day) - pd.Timedelta(days=src.window_days), day_start(start))


def build_series(rows: pd.DataFrame, src: SeriesSource, day: str, entities: list, start: str) -> pd.DataFrame:
    """Long frame (id, t, kind, value) of every kind for `entities`, resampled when `frequency` is set."""
    t_end = cutoff_of(day)
    first = series_start(day, start, src)
    ents = pd.Index(sorted(entities))
    ts = pd.to_datetime(rows[src.time], utc=True) if len(rows) else pd.Series(dtype="datetime64[ns, UTC]")
    parts = []
    for k in src.kinds:
        mask = pd.Series(True, index=rows.index)
        if k.where:
            col, op, val = k.where
            mask &= OPS[op](rows[col], val)
        if k.column is None:
            value = pd.Series(1.0, index=rows.index)
        else:
            value = pd.to_numeric(rows[k.column], errors="coerce").astype("float64")
            if k.multiply:
                value = value * pd.to_numeric(rows[k.multiply], errors="coerce").astype("float64")
        mask &= value.notna()
        r = pd.DataFrame({"id": rows.loc[mask, src.entity].to_numpy(), "ts": ts[mask].to_numpy(), "value": value[mask].to_numpy()})
        r = r[r["id"].isin(ents)]
        if src.frequency is None:
            r = r.assign(t=r["ts"].astype("int64"))[["id", "t", "value"]]
        else:
            # Bins are counted back from the cutoff so bin edges stay on the frequency grid.
            n = int((t_end - first) / pd.Timedelta(src.frequency))
            r = r[pd.to_datetime(r["ts"], utc=True) >= t_end - n * pd.Timedelta(src.frequency)]
            # bin k covers [t - (n-k) f, t - (n-k-1) f): k = n - ceil((t - ts) / f)
            back = (t_end - pd.to_datetime(r["ts"], utc=True)).to_numpy().astype("int64")
            f_ns = pd.Timedelta(src.frequency).value
            r["t"] = (n - (-(-back // f_ns))).astype("int64")
            agg = "size" if k.agg == "count" else k.agg
            g = r.groupby(["id", "t"])["value"].agg(agg).astype("float64")
            grid = pd.MultiIndex.from_product([ents, np.arange(n)], names=["id", "t"])
            g = g.reindex(grid)
            if k.agg in FILL_ZERO:
                g = g.fillna(0.0)
            else:
                # carry the last observed value into empty bins; bins before the first value are left out
                g = g.groupby(level="id").ffill().dropna()
            r = g.rename("value").reset_index()
        r["kind"] = k.name
        parts.append(r[["id", "t", "kind", "value"]])
    return pd.concat(parts, ignore_index=True)


def check_lengths(series: pd.DataFrame, src: SeriesSource, where: str) -> tuple[pd.DataFrame, list]:
    """Apply the short-series rule: raise naming entity and kind, or drop those entities and return them."""
    lengths = series.groupby(["id", "kind"]).size()
    short = lengths[lengths < src.min_length]
    if short.empty:
        return series, []
    if src.short_series == "error":
        (ent, kind), n = next(iter(short.items()))
        raise SeriesTooShortError(
            f"{where}: series of entity {ent!r}, kind {kind!r} has {n} point(s), fewer than min_length={src.min_length} "
            f"(variance, trend and autocorrelation calculators are undefined below that); {len(short)} series are short. "
            f"Use a longer window, or short_series='drop' to leave such entities out")
    dropped = sorted(set(short.index.get_level_values("id")))
    return series[~series["id"].isin(dropped)], dropped


def extract(series: pd.DataFrame, kind_params: dict[str, dict], columns: list[str]) -> pd.DataFrame:
    """tsfresh extract_features in this process (n_jobs=0), columns forced to `columns`, index = id."""
    from tsfresh import extract_features

    ids = sorted(series["id"].unique())
    if not ids:
        return pd.DataFrame(columns=columns, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = extract_features(series, column_id="id", column_sort="t", column_kind="kind", column_value="value",
                             kind_to_fc_parameters={k: v for k, v in kind_params.items() if v},
                             n_jobs=0, disable_progressbar=True, impute_function=None)
    # A kind with no point for any entity of the shard yields no columns: keep the schema fixed.
    return x.reindex(index=ids, columns=columns).astype("float64")


# --------------------------------------------------------------------------- manifest, compute


def prepare(store_root: str, asset: str, day: str, start: str, cfg: TsfreshConfig, entities: list | None = None) -> dict:
    """Resolve parameters and expected columns (and fit PCA on a sample); saved as the asset's manifest."""
    t0 = time.perf_counter()
    src = cfg.source
    check_source(store_root, day, start, src)
    kinds = [k.name for k in src.kinds]
    params = resolve_parameters(cfg.parameters, kinds)
    cols = expected_columns(params)
    out = artifact_dir(store_root, asset, cfg.version(asset))
    manifest = {"asset": asset, "version": cfg.version(asset), "config": asdict(cfg), "parameters": cfg.parameters,
                "kind_to_fc_parameters": params, "features": cols, "prepared_on_day": day}
    if cfg.pca_components > 0:
        from .reduction import fit_pca, save_pca

        entities = entities if entities is not None else list_entities(store_root, day, start, src)
        rng = np.random.default_rng(cfg.seed)
        sample = sorted(rng.choice(np.array(entities, dtype=object), size=min(cfg.sample_entities, len(entities)), replace=False).tolist())
        x, _ = compute_features(store_root, asset, day, start, cfg, {**manifest, "pca": None}, sample)
        model = fit_pca(x, cfg.pca_components)
        save_pca(out / "pca.npz", model)
        manifest["pca"] = {"path": str(out / "pca.npz"), "components": int(len(model["explained_variance_ratio"])),
                           "sample_entities": len(sample),
                           "explained_variance_ratio": [round(float(v), 5) for v in model["explained_variance_ratio"]]}
    manifest["prepare_seconds"] = round(time.perf_counter() - t0, 3)
    save_json(out / "manifest.json", manifest)
    return manifest


def load_manifest(store_root: str, asset: str, cfg: TsfreshConfig) -> dict | None:
    """The saved manifest of this configuration, or None."""
    path = artifact_dir(store_root, asset, cfg.version(asset)) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def compute_features(store_root: str, asset: str, day: str, start: str, cfg: TsfreshConfig, manifest: dict,
                     entities: list, rows: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list]:
    """tsfresh features (index = entity) of `entities` at day D's cutoff, and the entities dropped as too short."""
    src = cfg.source
    if not entities:
        raise EmptyShardError(f"{asset} {day}: empty shard (no entities)")
    if rows is None:
        rows = read_rows(store_root, day, start, src, list(entities))
    if not len(rows) or not rows[src.entity].isin(list(entities)).any():
        raise EmptyShardError(f"{asset} {day}: none of the shard's {len(entities)} entities has a row in "
                              f"{src.asset} in the {src.window_days}-day window (first: {entities[0]!r})")
    series = build_series(rows, src, day, entities, start)
    series, dropped = check_lengths(series, src, f"{asset} {day}")
    return extract(series, manifest["kind_to_fc_parameters"], manifest["features"]), dropped


def compute(store_root: str, asset: str, day: str, start: str, cfg: TsfreshConfig, manifest: dict, entities: list,
            rows: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict, list]:
    """Candidate rows (keys, cutoff, features) of `entities`, per-family seconds, dropped entities."""
    t0 = time.perf_counter()
    x, dropped = compute_features(store_root, asset, day, start, cfg, manifest, entities, rows)
    seconds = {FAMILY: time.perf_counter() - t0}
    blocks = [x]
    if manifest.get("pca"):
        from .reduction import apply_pca, load_pca

        t1 = time.perf_counter()
        blocks.append(apply_pca(x, load_pca(artifact_dir(store_root, asset, manifest["version"]) / "pca.npz"), "tsfresh"))
        seconds[PCA_FAMILY] = time.perf_counter() - t1
    keys = pd.DataFrame({cfg.source.entity: x.index.to_numpy()})
    return as_candidates(pd.concat(blocks, axis=1), keys, day), seconds, dropped


def families(manifest: dict) -> dict[str, list[str]]:
    """Feature names per family for the cost file."""
    out = {FAMILY: list(manifest["features"])}
    if manifest.get("pca"):
        out[PCA_FAMILY] = [f"tsfresh_pc{i:02d}" for i in range(manifest["pca"]["components"])]
    return out


def shard_task(store_root: str, asset: str, day: str, start: str, cfg: TsfreshConfig, manifest: dict, entities: list,
               staging: str, index: int, n_shards: int) -> dict:
    """Dask task: extract one entity shard and write its part into the staging folder; small stats back."""
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        df, seconds, dropped = compute(store_root, asset, day, start, cfg, manifest, entities)
        w = write_part(df, Path(staging), index)
    except CandidateError as exc:
        raise type(exc)(f"shard {index + 1}/{n_shards}: {exc}") from exc
    except Exception as exc:
        raise CandidateError(f"{asset} {day} shard {index + 1}/{n_shards} ({len(entities)} entities): {type(exc).__name__}: {exc}") from exc
    return {"day": day, "shard": index, "entities": len(entities), "rows": w["rows"], "bytes": w["bytes"],
            "column_bytes": w["column_bytes"], "seconds": seconds, "task_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.thread_time() - c0, "worker": worker_name(),
            "dropped_short": dropped[:20], "n_dropped_short": len(dropped),
            "null_share": float(df[manifest["features"]].isna().to_numpy().mean()) if len(df) else 0.0}


# --------------------------------------------------------------------------- selection


def asof_labels(features: pd.DataFrame, labels: pd.DataFrame, entity: str) -> pd.DataFrame:
    """Each label row (entity_id, label_ts, label) with the latest candidate row whose cutoff <= label_ts."""
    lab = labels.rename(columns={"entity_id": entity}).copy()
    lab["label_ts"] = pd.to_datetime(lab["label_ts"], utc=True).astype("datetime64[ns, UTC]")
    lab[entity] = lab[entity].astype(features[entity].dtype)
    feats = features.sort_values("cutoff")
    joined = pd.merge_asof(lab.sort_values("label_ts"), feats, left_on="label_ts", right_on="cutoff", by=entity,
                           direction="backward", allow_exact_matches=True)
    return joined.dropna(subset=["cutoff"]).reset_index(drop=True)


def select_from_labels(features: pd.DataFrame, labels: pd.DataFrame, entity: str, fdr_level: float = 0.05) -> dict:
    """tsfresh `select_features` on label rows joined as of their time; returns columns and kind_to_fc_parameters."""
    from tsfresh import select_features
    from tsfresh.feature_extraction.settings import from_columns

    joined = asof_labels(features, labels, entity)
    if joined.empty:
        raise CandidateError("select_from_labels: no label has a candidate row at or before its label_ts")
    cols = [c for c in features.columns if "__" in c and c not in (entity, "cutoff")]
    x = joined[cols]
    x = x.loc[:, x.notna().all() & np.isfinite(x).all() & (x.nunique() > 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen = select_features(x, joined["label"].reset_index(drop=True), fdr_level=fdr_level, n_jobs=0)
    selected = list(chosen.columns)
    return {"columns": selected, "kind_to_fc_parameters": from_columns(selected), "label_rows": int(len(joined)),
            "tested": int(x.shape[1]), "fdr_level": fdr_level}


def save_selection(store_root: str, asset: str, selection: dict) -> Path:
    """Save a selection's kind_to_fc_parameters under the asset's artifacts; pass the path as `parameters`."""
    body = json.dumps(selection["kind_to_fc_parameters"], sort_keys=True, default=str)
    name = f"selection-{config_hash(body)}.json"
    return save_json(Path(store_root) / "_artifacts" / asset / "selections" / name, selection)


def selection_columns(path: str | Path) -> list[str]:
    """The feature columns recorded in a saved selection file."""
    return list(json.loads(Path(path).read_text()).get("columns", []))


def as_json_safe(obj: Any) -> Any:
    """kind_to_fc_parameters made JSON-safe (tuples to lists)."""
    return json.loads(json.dumps(obj, default=str))
