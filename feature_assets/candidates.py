"""Candidate-feature assets (group ``candidates``): DFS, tsfresh, interactions, encodings.

Each asset is daily-partitioned with a single-run backfill policy and a *cadence*
(run config): DFS and tsfresh are costly, so by default they compute only Sunday
partitions; interactions and encodings are cheap and compute every day. A partition off
the cadence is materialized with ``skipped: true`` and a note and writes nothing — the
training-set builder's as-of join (with a TTL) serves the last computed cutoff.

All heavy work is submitted to the Dask cluster by ``featurecore.candidates.runner``;
shards write their own Parquet parts and this process only sees small statistics.
``build_tsfresh_asset`` makes a tsfresh asset for any entity–timestamp table (e.g. a
sensor-readings asset).
"""


import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from featurecore.candidates import dfs, encodings, interactions, runner
from featurecore.candidates import tsfresh_features as tsf
from featurecore.candidates.common import Cadence
from featurecore.store import partition_dir
from resources import DaskResource, LandingZone, OfflineStore

from .ingestion import effective_config
from .partitions import daily_partitions

GROUP = "candidates"
SKIP_NOTE = ("{n} partition(s) not on the cadence ({cadence}) were skipped: nothing was written for them. "
             "The training-set builder's as-of join serves the previous computed cutoff within the TTL.")


# --------------------------------------------------------------------------- run config


class CadenceConfig(dg.Config):
    """Which partitions compute; the rest are skipped with a note."""

    cadence: str = "weekly"


class DFSRunConfig(dg.Config):
    """Deep Feature Synthesis settings (defaults: see featurecore.candidates.dfs.DFSConfig)."""

    cadence: str = "weekly"
    agg_primitives: list[str] = list(dfs.DFSConfig.agg_primitives)
    trans_primitives: list[str] = list(dfs.DFSConfig.trans_primitives)
    where_primitives: list[str] = list(dfs.DFSConfig.where_primitives)
    max_depth: int = dfs.DFSConfig.max_depth
    training_window_days: int | None = dfs.DFSConfig.training_window_days
    sample_entities: int = dfs.DFSConfig.sample_entities
    max_features: int = dfs.DFSConfig.max_features
    entities: str = dfs.DFSConfig.entities
    sessions: bool = dfs.DFSConfig.sessions
    pca_components: int = dfs.DFSConfig.pca_components
    rediscover: bool = False
    shards_per_worker: int = 1  # more shards balance finer, but each pays Featuretools' fixed cost per cutoff
    min_shard_entities: int = runner.DFS_MIN_SHARD
    days_per_task: int = runner.DFS_DAYS_PER_TASK  # cutoffs one shard computes from one EntitySet

    def dfs_config(self) -> dfs.DFSConfig:
        """The pure-computation config."""
        return dfs.DFSConfig(
            agg_primitives=tuple(self.agg_primitives), trans_primitives=tuple(self.trans_primitives),
            where_primitives=tuple(self.where_primitives), max_depth=self.max_depth,
            training_window_days=self.training_window_days, sample_entities=self.sample_entities,
            max_features=self.max_features, entities=self.entities, sessions=self.sessions,
            pca_components=self.pca_components,
        )


class TsfreshRunConfig(dg.Config):
    """tsfresh settings; the series kinds are fixed by the asset's SeriesSource."""

    cadence: str = "weekly"
    parameters: str = "efficient"  # minimal | efficient | comprehensive | efficient-no-cq | path to a saved selection
    window_days: int | None = None  # None: the source's default
    frequency: str | None = "source"  # "source": the source's default; None: raw points
    min_length: int | None = None
    short_series: str | None = None  # error | drop
    pca_components: int = 0
    reprepare: bool = False
    shards_per_worker: int = 3
    min_shard_entities: int = runner.TSFRESH_MIN_SHARD


class InteractionRunConfig(dg.Config):
    """Interaction settings (defaults: featurecore.candidates.interactions.InteractionConfig)."""

    cadence: str = "daily"
    sources: list[str] = list(interactions.InteractionConfig.sources)
    top_k: int = interactions.InteractionConfig.top_k
    max_features: int = interactions.InteractionConfig.max_features
    max_corr: float = interactions.InteractionConfig.max_corr
    labels_path: str | None = None
    replan: bool = False


class EncodingRunConfig(dg.Config):
    """Encoding settings (defaults: featurecore.candidates.encodings.EncodingConfig)."""

    cadence: str = "daily"
    one_hot_max: int = encodings.EncodingConfig.one_hot_max
    hash_features: int = encodings.EncodingConfig.hash_features
    hash_window_days: int = encodings.EncodingConfig.hash_window_days
    replan: bool = False


# --------------------------------------------------------------------------- metadata


def _families_md(report: runner.RunReport) -> str:
    rows = {}
    for d in report.days:
        for fam, c in d.get("families", {}).items():
            r = rows.setdefault(fam, {"family": fam, "features": c["n_features"], "compute_seconds": 0.0, "bytes": 0})
            r["compute_seconds"] += c["seconds"]
            r["bytes"] += c["bytes"]
    df = pd.DataFrame(list(rows.values()))
    return df.round(3).to_markdown(index=False) if len(df) else "_none_"


def _preview(store_root: str, asset: str, day: str, max_cols: int = 10) -> tuple[dg.MetadataValue, dg.TableSchema]:
    """First rows and first columns of one part, plus a (possibly truncated) column schema; reads one row group."""
    files = sorted(partition_dir(store_root, asset, day).glob("*.parquet"))
    if not files:
        return dg.MetadataValue.md("_empty_"), dg.TableSchema(columns=[])
    pf = pq.ParquetFile(files[0])
    names = pf.schema_arrow.names
    head = pf.read_row_group(0, columns=names[:max_cols]).slice(0, 5).to_pandas() if pf.metadata.num_row_groups else pd.DataFrame(columns=names[:max_cols])
    schema_cols = [dg.TableColumn(f.name, str(f.type)) for f in list(pf.schema_arrow)[:60]]
    if len(names) > 60:
        schema_cols.append(dg.TableColumn(f"… {len(names) - 60} more columns", "float64"))
    return dg.MetadataValue.md(head.to_markdown(index=False) if len(head) else "_empty_"), dg.TableSchema(columns=schema_cols)


def _result(report: runner.RunReport, store_root: str, skipped: list[str], cadence: Cadence, extra: dict) -> dg.MaterializeResult:
    """MaterializeResult metadata shared by the candidate assets."""
    report.raise_errors()
    meta: dict = {
        "days_computed": len(report.days),
        "days_skipped": len(skipped),
        "cadence": cadence.describe(),
    }
    if skipped:
        meta["skip_note"] = SKIP_NOTE.format(n=len(skipped), cadence=cadence.describe())
    if not report.days:
        meta["skipped"] = True
        return dg.MaterializeResult(metadata=meta)
    last = report.days[-1]
    rows = sum(d["rows"] for d in report.days)
    preview_md, schema = _preview(store_root, report.asset, last["day"])
    meta.update({
        # a range run records the same metadata on every partition of the range, so a total is not a row count
        ("dagster/row_count" if len(report.days) + len(skipped) == 1 else "rows_in_run"): rows,
        "entities_last_day": last["entities"],
        "shards_last_day": last["shards"],
        "bytes": sum(d["bytes"] for d in report.days),
        "compute_seconds": round(sum(d["compute_seconds"] for d in report.days), 3),
        "wall_seconds": round(report.wall_seconds, 3),
        "prepare_seconds": round(report.prepare_seconds, 3),
        "throughput_entities_per_s": round(report.throughput, 1),
        "null_share_last_day": last["null_share"],
        "cost_by_family": dg.MetadataValue.md(_families_md(report)),
        "per_day": dg.MetadataValue.md(pd.DataFrame([{k: d.get(k) for k in ("day", "entities", "rows", "shards", "bytes", "compute_seconds", "wall_seconds", "null_share")} for d in report.days]).to_markdown(index=False)),
        "preview": preview_md,
        "dagster/column_schema": schema,
        "path": dg.MetadataValue.path(str(partition_dir(store_root, report.asset, last["day"]).parent)),
        **extra,
    })
    notes = [f"{d['day']}: {d['note']}" for d in report.days if d.get("note")]
    notes += [f"{d['day']}: {d['dropped_short']} entities dropped (series too short), e.g. {d['dropped_short_examples'][:3]}" for d in report.days if d.get("dropped_short")]
    if notes:
        meta["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in notes))
    return dg.MaterializeResult(metadata=meta)


def _split(days: list[str], cadence: Cadence, start: str) -> tuple[list[str], list[str]]:
    on = [d for d in days if cadence.includes(d, start)]
    return on, [d for d in days if d not in on]


def _pca_meta(manifest: dict) -> dict:
    if not manifest.get("pca"):
        return {}
    evr = manifest["pca"]["explained_variance_ratio"]
    return {"pca_components": len(evr), "pca_explained_variance_ratio": dg.MetadataValue.json(evr),
            "pca_explained_variance_total": round(float(sum(evr)), 4)}


# --------------------------------------------------------------------------- DFS


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[dg.AssetDep("raw_events", partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-29, end_offset=0)), "users", "products"],
    group_name=GROUP,
    kinds={"dask", "parquet", "featuretools"},
    code_version="dfs-2",
    description=(
        "Featuretools Deep Feature Synthesis over users <- sessions <- events -> products, as of the cutoff D+1 00:00 UTC "
        "(include_cutoff_time=False, training window 30 days by default). Definitions are discovered on a sample of entities, "
        "pruned, and saved with ft.save_features as a versioned artifact; all entities are then computed by submitting "
        "calculate_feature_matrix per entity shard to Dask. COUNT/NUM_UNIQUE/NUM_TRUE of an empty set are 0; other aggregates NaN. "
        "Default cadence: Sundays."
    ),
    metadata={"keys": ["user_id"], "cutoff": "D+1 00:00 UTC", "families": ["dfs", "dfs_pca (option)"]},
)
def dfs_candidates(context: dg.AssetExecutionContext, config: DFSRunConfig, dask: DaskResource, landing: LandingZone,
                   store: OfflineStore) -> dg.MaterializeResult:
    """DFS candidates for the selected partitions on the cadence, sharded over entities on Dask."""
    src = effective_config(landing, store)
    cadence = Cadence(config.cadence)
    days, skipped = _split(list(context.partition_keys), cadence, src.partition_start)
    report = runner.RunReport(dfs.ASSET)
    if days:
        report = runner.run_dfs(dask.client, src.store_root, days, src.partition_start, config.dfs_config(),
                                shards_per_worker=config.shards_per_worker, min_shard_entities=config.min_shard_entities,
                                days_per_task=config.days_per_task, rediscover=config.rediscover)
    m = report.manifest
    extra = {}
    if m:
        extra = {
            "features": len(m["features"]),
            "definitions": dg.MetadataValue.path(m["definitions"]),
            "definitions_version": m["version"],
            "definitions_sha": m["definitions_sha"],
            "discovered_on_day": m["discovered_on_day"],
            "discovery": dg.MetadataValue.json({k: m[k] for k in ("sample_entities", "generated", "numeric", "pruned_on_sample", "capped")}),
            "feature_list": dg.MetadataValue.md("\n".join(f"- `{f}`" for f in m["features"])),
            **_pca_meta(m),
        }
    return _result(report, src.store_root, skipped, cadence, extra)


# --------------------------------------------------------------------------- tsfresh


def _tsfresh_config(source: tsf.SeriesSource, config: TsfreshRunConfig) -> tsf.TsfreshConfig:
    from dataclasses import replace

    changes = {}
    if config.window_days is not None:
        changes["window_days"] = config.window_days
    if config.frequency != "source":
        changes["frequency"] = config.frequency
    if config.min_length is not None:
        changes["min_length"] = config.min_length
    if config.short_series is not None:
        changes["short_series"] = config.short_series
    return tsf.TsfreshConfig(source=replace(source, **changes), parameters=config.parameters, pca_components=config.pca_components)


def build_tsfresh_asset(name: str = "tsfresh_candidates", source: tsf.SeriesSource | None = None, deps: list | None = None,
                        description: str | None = None) -> dg.AssetsDefinition:
    """A tsfresh candidate asset for an entity–timestamp store asset (default: per-user daily series of raw_events)."""
    source = source or tsf.SeriesSource()
    if deps is None:
        deps = [dg.AssetDep(source.asset, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-(source.window_days - 1), end_offset=0))]
    kinds_md = ", ".join(f"`{k.name}`" for k in source.kinds)
    desc = description or (
        f"tsfresh features of per-{source.entity} series ({kinds_md}) of `{source.asset}` over the {source.window_days} days "
        f"before the cutoff D+1 00:00 UTC" + (f", resampled to {source.frequency}" if source.frequency else "") +
        ". EfficientFCParameters by default (or a saved selection via from_columns); each Dask task extracts a shard of "
        "entities with n_jobs=0 and writes its own part. Default cadence: Sundays."
    )

    @dg.asset(
        name=name,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=deps,
        group_name=GROUP,
        kinds={"dask", "parquet", "tsfresh"},
        code_version="tsfresh-1",
        description=desc,
        metadata={"keys": [source.entity], "source": source.asset, "series_kinds": [k.name for k in source.kinds],
                  "window_days": source.window_days, "frequency": source.frequency or "raw points"},
    )
    def _tsfresh(context: dg.AssetExecutionContext, config: TsfreshRunConfig, dask: DaskResource, landing: LandingZone,
                 store: OfflineStore) -> dg.MaterializeResult:
        src = effective_config(landing, store)
        cadence = Cadence(config.cadence)
        days, skipped = _split(list(context.partition_keys), cadence, src.partition_start)
        report = runner.RunReport(name)
        if days:
            report = runner.run_tsfresh(dask.client, src.store_root, name, days, src.partition_start, _tsfresh_config(source, config),
                                        shards_per_worker=config.shards_per_worker, min_shard_entities=config.min_shard_entities,
                                        reprepare=config.reprepare)
        m = report.manifest
        extra = {}
        if m:
            extra = {"features": len(m["features"]), "parameters": m["parameters"], "artifact_version": m["version"],
                     "calculators": dg.MetadataValue.json({k: sorted(v) for k, v in m["kind_to_fc_parameters"].items()}),
                     **_pca_meta(m)}
        return _result(report, src.store_root, skipped, cadence, extra)

    _tsfresh.__doc__ = f"tsfresh candidates of `{source.asset}` per {source.entity}, one Dask task per entity shard."
    return _tsfresh


tsfresh_candidates = build_tsfresh_asset()


# --------------------------------------------------------------------------- interactions, encodings


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=list(interactions.InteractionConfig.sources) + ["users"],
    group_name=GROUP,
    kinds={"dask", "parquet", "pandas"},
    code_version="interactions-1",
    description=(
        "AutoFeat-style candidates over the user feature groups: unary log1p/sqrt/square/reciprocal (where defined) and "
        "pairwise products, ratios and differences of the top-k numeric features (cheap relevance score, decorrelated), "
        "plus crosses of low-cardinality user categoricals with their frequency; hard cap 150. The plan is made once on a "
        "sample and saved. Cutoff D+1 00:00 UTC like its inputs. Default cadence: daily."
    ),
    metadata={"keys": ["user_id"], "families": ["unary", "pairwise", "crosses"]},
)
def interaction_candidates(context: dg.AssetExecutionContext, config: InteractionRunConfig, dask: DaskResource,
                           landing: LandingZone, store: OfflineStore) -> dg.MaterializeResult:
    """Interaction and transform candidates, one Dask task per day."""
    src = effective_config(landing, store)
    cadence = Cadence(config.cadence)
    days, skipped = _split(list(context.partition_keys), cadence, src.partition_start)
    cfg = interactions.InteractionConfig(sources=tuple(config.sources), top_k=config.top_k, max_features=config.max_features,
                                         max_corr=config.max_corr, labels_path=config.labels_path)
    report = runner.run_interactions(dask.client, src.store_root, days, cfg, replan=config.replan) if days else runner.RunReport(interactions.ASSET)
    p = report.manifest
    extra = {}
    if p:
        extra = {"base_features": dg.MetadataValue.json(p["scores"]), "scoring": p["scoring"],
                 "features": sum(len(v) for v in interactions.families(p).values()),
                 "dropped_by_cap": p["dropped_by_cap"], "plan_version": p["version"], "planned_on_day": p["planned_on_day"]}
    return _result(report, src.store_root, skipped, cadence, extra)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[dg.AssetDep("raw_events", partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-29, end_offset=0)), "users", "products"],
    group_name=GROUP,
    kinds={"dask", "parquet", "scikitlearn"},
    code_version="encodings-1",
    description=(
        "Label-free encodings of user categoricals (count, frequency, one-hot for <= 12 levels; mapping fitted once and saved) "
        "and feature hashing (32 columns each) of the products and brands a user interacted with in the 30 days before the "
        "cutoff. Target encoding needs labels and is built with selection. Default cadence: daily."
    ),
    metadata={"keys": ["user_id"], "families": ["count_encoding", "frequency_encoding", "one_hot", "hashing"]},
)
def encoded_candidates(context: dg.AssetExecutionContext, config: EncodingRunConfig, dask: DaskResource,
                       landing: LandingZone, store: OfflineStore) -> dg.MaterializeResult:
    """Count/frequency/one-hot encodings and hashed histories, one Dask task per day."""
    src = effective_config(landing, store)
    cadence = Cadence(config.cadence)
    days, skipped = _split(list(context.partition_keys), cadence, src.partition_start)
    cfg = encodings.EncodingConfig(one_hot_max=config.one_hot_max, hash_features=config.hash_features,
                                   hash_window_days=config.hash_window_days)
    report = runner.run_encodings(dask.client, src.store_root, days, src.partition_start, cfg, replan=config.replan) if days else runner.RunReport(encodings.ASSET)
    p = report.manifest
    extra = {}
    if p:
        extra = {"features": sum(len(v) for v in encodings.families(p, cfg).values()), "plan_version": p["version"],
                 "encoded_columns": dg.MetadataValue.json({c: {"levels": len(v["counts"]), "one_hot": bool(v["one_hot"])} for c, v in p["columns"].items()})}
    return _result(report, src.store_root, skipped, cadence, extra)


CANDIDATE_ASSETS = [dfs_candidates, tsfresh_candidates, interaction_candidates, encoded_candidates]
