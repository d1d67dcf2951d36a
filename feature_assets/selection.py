"""Dagster wiring of labels, point-in-time training sets, profiles and cost-aware feature selection.

Assets (groups ``training`` and ``selection``; not daily-partitioned: each covers a
configurable range of label days, and a run rebuilds it as a whole):

- ``users_wide``: the optional static attribute table of the landing zone, snapshotted.
- ``labels``: derived from events (``purchase_7d`` by default) or supplied in the
  landing zone; days whose horizon is not in the store yet are reported as pending.
- ``candidate_training_set``: labels as-of-joined with every candidate feature (declared
  groups, ``users``/``users_wide`` attributes, candidate assets present in the store).
- ``<source>_profile``: per-source distributions, missing/zero rates, cardinality, top correlations.
- ``feature_selection``: cost-aware selection validated by time-split CV, publishing
  the versioned feature set ``user_selected``, with the report in its metadata.
- ``training_set``: the training set of any published feature set (default: the latest ``user_selected``).

All heavy work runs as Dask tasks that read and write the store; the assets only turn
small statistics into metadata and plots.
"""


import math
import time
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd

from checks.compat import store_layouts, with_provenance
from featurecore.attributes import has_static_table, ingest_static_table
from featurecore.feature_sets import FeatureSet, demo_feature_set, load as load_feature_set
from featurecore.groups import GROUPS
from featurecore.labels import LabelSpec, build_labels, has_supplied_labels, read_manifest as read_labels_manifest
from featurecore.profiling import profile_source
from featurecore.selection import (
    SelectionConfig, candidate_feature_set, decision_costs, family_of, feature_costs, feature_families, publish,
    run_selection, selected_feature_set,
)
from featurecore.timeutil import shift_day
from featurecore.training import build_training_set, is_static, read_manifest, source_days, source_version, training_dir
from resources import DaskResource, LandingZone, OfflineStore

from . import report
from .ingestion import effective_config

GROUP_TRAINING, GROUP_SELECTION = "training", "selection"
CANDIDATE_SET = "user_candidates"
SELECTED_SET = "user_selected"
ENTITY_KEYS = ("user_id",)
STATIC_SOURCES = ("users", "users_wide")
# The candidate assets of issue 4 (same layout as groups); a name absent from the store is skipped.
CANDIDATE_ASSET_NAMES = ("dfs_candidates", "tsfresh_candidates", "interaction_candidates", "encoded_candidates")
USER_GROUPS = [g.name for g in GROUPS.values() if tuple(g.keys) == ENTITY_KEYS]
PROFILED = [*GROUPS, "users_wide", *CANDIDATE_ASSET_NAMES]
VERSION = "1"


class RangeConfig(dg.Config):
    """A range of label days (inclusive); defaults follow the labels asset."""

    start: Optional[str] = None  # default: partition start + warmup_days (windows full), or the first label day
    end: Optional[str] = None  # default: the last label day written by `labels`
    warmup_days: int = 14  # label days this close to the partition start are skipped (windows still filling)


class LabelsConfig(dg.Config):
    """Which label to build and for which label days."""

    source: str = "auto"  # auto (supplied when <landing>/labels has files, else derived) | derived | supplied
    start: Optional[str] = None  # default: partition start
    end: Optional[str] = None  # default: the last raw_events partition in the store
    event_type: str = "purchase"
    horizon_days: int = 7
    lookback_days: int = 30
    supplied_delay_days: int = 0  # supplied labels: days after label_ts at which a label is known


class SelectionRunConfig(dg.Config):
    """Selection knobs (defaults: featurecore.selection.SelectionConfig) and the published set's name.

    The label days are those of `candidate_training_set` (its own range config).
    """

    name: str = SELECTED_SET
    seed: int = SelectionConfig.seed
    fdr_level: float = SelectionConfig.fdr_level
    min_importance: float = SelectionConfig.min_importance
    cost_weight: float = SelectionConfig.cost_weight
    family_cost_weight: float = SelectionConfig.family_cost_weight
    corr_threshold: float = SelectionConfig.corr_threshold
    n_folds: int = SelectionConfig.n_folds
    max_rows: int = SelectionConfig.max_rows
    remeasure_costs: bool = False  # record this run's timings as the cost basis (decisions otherwise reuse the recorded one)

    def selection_config(self) -> SelectionConfig:
        """The pure-code configuration."""
        return SelectionConfig(seed=self.seed, fdr_level=self.fdr_level, min_importance=self.min_importance,
                               cost_weight=self.cost_weight, family_cost_weight=self.family_cost_weight,
                               corr_threshold=self.corr_threshold, n_folds=self.n_folds, max_rows=self.max_rows)


class TrainingSetConfig(RangeConfig):
    """Which published feature set to build a training set for."""

    feature_set: str = SELECTED_SET
    version: Optional[str] = None  # default: the latest published version
    name: Optional[str] = None  # default: <feature_set>_v<version>


def resolve_range(config: RangeConfig, store_root: str, partition_start: str) -> tuple[str, str]:
    """The label days a run covers: the config's range clipped to the label days that exist."""
    man = read_labels_manifest(store_root)
    days = [d for d in man["days"] if man["rows_per_day"].get(d, 0) > 0]
    if not days:
        raise dg.Failure(f"the labels asset holds no label rows (pending days: {man['pending_days'][:5]}…)")
    start = config.start or max(shift_day(partition_start, config.warmup_days), days[0])
    end = config.end or days[-1]
    if start > end:
        start = days[0]  # a short history: use what exists rather than nothing
    return start, end


def _md_table(rows: list[dict]) -> dg.MetadataValue:
    return dg.MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False) if rows else "_none_")


# --------------------------------------------------------------------------- users_wide


@dg.asset(
    name="users_wide",
    group_name=GROUP_TRAINING,
    kinds={"dask", "parquet"},
    code_version=VERSION,
    description="Static user attribute table `<landing>/users_wide/` (user_id plus any columns), snapshotted to "
                "`<store>/users_wide/snapshot.parquet`. Joined on user_id and assumed time-invariant. Optional: "
                "without landing files the snapshot is removed and nothing joins it.",
)
def users_wide(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone, store: OfflineStore):
    """Snapshot the wide static user table from the landing zone (on Dask)."""
    cfg = effective_config(landing, store)
    if not has_static_table(cfg, "users_wide"):
        snap = Path(cfg.store_root) / "users_wide" / "snapshot.parquet"
        snap.unlink(missing_ok=True)
        return dg.MaterializeResult(metadata={"present": False, "dagster/row_count": 0})
    s = dask.run_all(ingest_static_table, [cfg], "users_wide")[0]
    return dg.MaterializeResult(metadata={
        "present": True, "dagster/row_count": s["rows"], "columns": s["columns"], "numeric_columns": s["kinds"]["numeric"],
        "other_columns": s["kinds"]["other"], "quarantined": s["quarantined"], "bytes": s["bytes"],
        "compute_seconds": round(s["seconds"], 3),
        "path": dg.MetadataValue.path(str(Path(cfg.store_root) / "users_wide" / "snapshot.parquet")),
    })


# --------------------------------------------------------------------------- labels


@dg.asset(
    name="labels",
    deps=["raw_events"],
    group_name=GROUP_TRAINING,
    kinds={"dask", "parquet"},
    code_version=VERSION,
    description="Label rows (entity_id, label_ts, label) per label day in `<store>/labels/date=L/`. Derived by default: "
                "1 if the user purchases in the 7 days from label_ts = L 00:00 UTC (events L..L+6), population = users "
                "with an event in the 30 days before; a day is written only once its horizon partitions exist. Or a "
                "supplied table `<landing>/labels/*` (config `source`).",
)
def labels(context: dg.AssetExecutionContext, config: LabelsConfig, dask: DaskResource, landing: LandingZone, store: OfflineStore):
    """Rebuild the labels for the configured range on Dask (derived or supplied)."""
    cfg = effective_config(landing, store)
    kind = config.source
    if kind == "auto":
        kind = "supplied" if has_supplied_labels(cfg) else "derived"
    spec = LabelSpec(kind=kind, event_type=config.event_type, horizon_days=config.horizon_days,
                     lookback_days=config.lookback_days, supplied_delay_days=config.supplied_delay_days)
    events = sorted(p.name[5:] for p in (Path(cfg.store_root) / "raw_events").glob("date=*"))
    start = config.start or cfg.partition_start
    end = config.end or (events[-1] if events else cfg.partition_start)
    t0 = time.perf_counter()
    man = build_labels(dask.client, cfg, spec, start, end)
    if kind == "derived" and man["pending_days"]:
        context.log.info(f"{len(man['pending_days'])} label day(s) pending until their {spec.horizon_days}-day horizon "
                         f"is in the store: {man['pending_days'][0]} .. {man['pending_days'][-1]}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": man["rows"],
        "kind": kind, "label": spec.describe(),
        "days_written": len(man["days"]), "first_day": man["days"][0] if man["days"] else "-",
        "last_day": man["days"][-1] if man["days"] else "-",
        "pending_days": ", ".join(man["pending_days"]) or "none",
        "positive_rate": round(man["positive_rate"], 4) if man["positive_rate"] is not None else None,
        "quarantined": man.get("quarantined", 0),
        "label_delay_days": man["delay_seconds"] / 86_400,
        "per_day": dg.MetadataValue.md(report.labels_plot(man)),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "path": dg.MetadataValue.path(str(Path(cfg.store_root) / "labels")),
    })


# --------------------------------------------------------------------------- training sets


def _manifest_metadata(man: dict) -> dict:
    rows = [{"source": s, "version": v["version"], "static": v["static"],
             "ttl_days": None if v["ttl_seconds"] is None else v["ttl_seconds"] / 86_400, "features": v["features"],
             "matched": v.get("matched"), "null (no row within TTL)": (v.get("expired", 0) + v.get("missing", 0))}
            for s, v in man["sources"].items()]
    return {
        "dagster/row_count": man["rows"], "label_days": len(man["days"]), "start": man["start"], "end": man["end"],
        "features": len(man["columns"]["features"]), "label_mean": round(man["label_mean"], 4) if man["label_mean"] is not None else None,
        "feature_set": f"{man['feature_set']['name']} v{man['feature_set']['version']}",
        "sources": _md_table(rows), "bytes": man["bytes"], "dask_tasks": man["chunks"],
        "task_seconds": man["task_seconds"], "wall_seconds": man["wall_seconds"],
        "manifest": dg.MetadataValue.path(str(Path(man["path"]) / "manifest.json")),
    }


@dg.asset(
    name="candidate_training_set",
    deps=["labels", "users", "users_wide", *USER_GROUPS, *CANDIDATE_ASSET_NAMES],
    group_name=GROUP_TRAINING,
    kinds={"dask", "parquet"},
    code_version=VERSION,
    description="Point-in-time training set over every candidate feature (user-keyed declared groups, users/users_wide "
                "attributes, candidate assets present in the store): per label row and source, the latest feature row "
                "with cutoff <= label_ts, null when older than the source's TTL (the row is kept). "
                "`<store>/training_sets/user_candidates/`.",
)
def candidate_training_set(context: dg.AssetExecutionContext, config: RangeConfig, dask: DaskResource, landing: LandingZone,
                           store: OfflineStore):
    """As-of join of the labels with every candidate feature, one Dask task per chunk of label days."""
    cfg = effective_config(landing, store)
    root = cfg.store_root
    start, end = resolve_range(config, root, cfg.partition_start)
    fs = candidate_feature_set(root, CANDIDATE_SET, ENTITY_KEYS, STATIC_SOURCES)
    man = build_training_set(dask.client, root, fs, start, end, name=CANDIDATE_SET)
    # The candidate set is not published (the online store serves published sets); it lives with its training set.
    (training_dir(root, CANDIDATE_SET) / "feature_set.json").write_text(fs.to_json())
    return dg.MaterializeResult(metadata=_manifest_metadata(man))


@dg.asset(
    name="training_set",
    deps=["feature_selection", "labels"],
    group_name=GROUP_TRAINING,
    kinds={"dask", "parquet"},
    code_version=VERSION,
    description="Point-in-time training set of a published feature set (config `feature_set`, default the latest "
                "`user_selected`) over a range of label days, with a manifest of feature and source versions, the "
                "label spec, the date range and row counts. `<store>/training_sets/<name>/`.",
)
def training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig, dask: DaskResource, landing: LandingZone,
                 store: OfflineStore):
    """Build the training set of the configured feature set on Dask."""
    cfg = effective_config(landing, store)
    root = cfg.store_root
    try:
        fs = load_feature_set(root, config.feature_set, config.version)
    except KeyError:
        if config.feature_set != demo_feature_set().name:
            raise
        fs = demo_feature_set()
    start, end = resolve_range(config, root, cfg.partition_start)
    man = build_training_set(dask.client, root, fs, start, end, name=config.name or f"{fs.name}_v{fs.version}")
    return dg.MaterializeResult(metadata={**_manifest_metadata(man), "name": man["name"]})


# --------------------------------------------------------------------------- profiles


def _profile_spec(source: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        f"{source}_profile", deps=[source], group_name=GROUP_SELECTION, kinds={"dask", "pandas"}, code_version=VERSION,
        skippable=True,
        description=f"Profile of `{source}` over the selection range from a bounded sample: quantiles and histograms, "
                    "missing and zero rates, cardinality, top correlated pairs (Spearman).",
    )


def profile_with_plots(store_root: str, source: str, start, end, keys: tuple[str, ...]) -> dict:
    """Dask task: a source's profile plus its rendered plots (matplotlib runs on the worker, in parallel)."""
    prof = profile_source(store_root, source, start, end, keys=keys)
    prof["md"] = {"histograms": report.profile_histograms(prof), "missing_and_zero_rates": report.rates_plot(prof),
                  "top_correlated_pairs": report.pairs_table(prof), "statistics": report.profile_table(prof)}
    return prof


@dg.multi_asset(name="feature_profiles", specs=[_profile_spec(s) for s in PROFILED], can_subset=True)
def feature_profiles(context: dg.AssetExecutionContext, config: RangeConfig, dask: DaskResource, landing: LandingZone,
                     store: OfflineStore):
    """Profile every selected source that exists in the store, one Dask task each."""
    cfg = effective_config(landing, store)
    root = cfg.store_root
    try:
        start, end = resolve_range(config, root, cfg.partition_start)
    except (FileNotFoundError, dg.Failure):
        start, end = config.start, config.end  # profiles do not need labels
    wanted = [s for s in PROFILED if dg.AssetKey(f"{s}_profile") in context.selected_asset_keys]
    present = [s for s in wanted if source_days(root, s) or (Path(root) / s / "snapshot.parquet").is_file()]
    for s in sorted(set(wanted) - set(present)):
        context.log.info(f"{s}: no data in the store, profile skipped")
    keys = {s: tuple(GROUPS[s].keys) if s in GROUPS else ENTITY_KEYS for s in present}
    futs = [dask.client.submit(profile_with_plots, root, s, start, end, keys[s], pure=False) for s in present]
    for s, prof in zip(present, dask.client.gather(futs)):
        yield dg.MaterializeResult(asset_key=f"{s}_profile", metadata={
            "rows_sampled": prof["rows_sampled"], "days_sampled": ", ".join(prof["days_sampled"]) or "static snapshot",
            "features": len(prof["features"]),
            **{k: dg.MetadataValue.md(v) for k, v in prof["md"].items()},
            "compute_seconds": round(prof["seconds"], 3),
        })


# --------------------------------------------------------------------------- selection


def group_seconds_per_day(instance: dg.DagsterInstance, groups: list[str]) -> dict[str, float]:
    """Compute seconds per day of each group (tiles + features) from its latest materialization's metadata."""
    out = {}
    for g in groups:
        total = 0.0
        for key in (g, f"{g}_tiles"):
            recs = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(key)), limit=1).records
            meta = recs[0].asset_materialization.metadata if recs and recs[0].asset_materialization else {}
            if "compute_seconds" in meta and "days" in meta and meta["days"].value:
                total += float(meta["compute_seconds"].value) / float(meta["days"].value)
        out[g] = total
    return out


@dg.asset(
    name="feature_selection",
    deps=["candidate_training_set"],
    group_name=GROUP_SELECTION,
    kinds={"dask", "lightgbm", "scikitlearn"},
    code_version=VERSION,
    description="Cost-aware feature selection on the candidate training set: per-entity univariate tests with BH FDR "
                "control, LightGBM permutation importance on a time split with held-out entities, redundancy pruning, "
                "compute cost from the groups' and candidates' accounting; validated by time-split CV against the "
                "declared-groups baseline with per-family ablation. Publishes the versioned feature set `user_selected`.",
)
def feature_selection(context: dg.AssetExecutionContext, config: SelectionRunConfig, dask: DaskResource,
                      landing: LandingZone, store: OfflineStore):
    """Select features on Dask, publish the versioned feature set, and report why."""
    cfg = effective_config(landing, store)
    root = cfg.store_root
    man = read_manifest(root, CANDIDATE_SET)
    cand = FeatureSet.from_json((training_dir(root, CANDIDATE_SET) / "feature_set.json").read_text())
    start, end = man["start"], man["end"]
    baseline = [f.qualified for f in cand.features if f.source in GROUPS]
    families = feature_families(root, cand)
    # Measured costs are reported; decisions use the recorded cost basis, so this run's timings cannot change them.
    costs, fam_costs = feature_costs(root, cand, start, end, group_seconds_per_day(context.instance, cand.sources))
    versions = {s: "static" if is_static(root, s) else source_version(root, s) for s in cand.sources}
    decision = decision_costs(root, {q: c["seconds_per_day"] for q, c in costs.items()}, families, versions,
                              remeasure=config.remeasure_costs)
    if decision["recorded"]:
        context.log.info(f"cost basis recorded for {len(decision['recorded'])} famil(ies): {', '.join(decision['recorded'])}")
    delay_days = math.ceil((man["labels"].get("delay_seconds") or 0) / 86_400)
    t0 = time.perf_counter()
    result = run_selection(
        dask.client, root, CANDIDATE_SET, man["columns"]["features"], baseline, ENTITY_KEYS[0], delay_days,
        costs=decision["features"], families=families, family_costs=decision["families"], cfg=config.selection_config())
    result["families_of_selected"] = {c: family_of(c, families) for c in result["selected"]}
    fs = selected_feature_set(cand, result, costs, families, name=config.name, extra_info={
        "label": man["labels"], "training_set": man["name"], "date_range": [start, end],
        "source_details": {s: source_version(root, s) for s in cand.sources},
        "cost_basis": decision["basis"],
        "decision_costs": {"families": decision["families"],
                           "features": {c: decision["features"].get(c, 0.0) for c in result["selected"]}},
    })
    # Fingerprints of every source's definitions, so later consumers detect incompatible upstream changes.
    fs = publish(with_provenance(fs, store_layouts(root, fs.sources, fs.entity_keys)), root)
    cv = result["cv"]
    gain = cv["selected"]["mean"] - cv["baseline"]["mean"]
    context.log.info(f"published {fs.name} v{fs.version}: {len(fs.features)} of {len(cand.features)} features, "
                     f"CV {result['metric_name']} {cv['selected']['mean']:.4f} vs baseline {cv['baseline']['mean']:.4f}")
    imp = result["importance"]
    sel_rows = [{"feature": c, "family": families.get(c), "importance": round(imp["permutation"].get(c, 0.0), 5),
                 "q-value": f"{result['screen']['qvalue'].get(c, float('nan')):.2g}",
                 "s/day": round(costs.get(c, {}).get("seconds_per_day", 0.0), 4),
                 "decision s/day": round(decision["features"].get(c, 0.0), 4),
                 "description": next((f.description for f in fs.features if f.qualified == c), "")} for c in result["selected"]]
    fold_rows = [{"config": k, "features": v["features"], **{f"fold {i + 1}": round(x, 4) for i, x in enumerate(v["folds"])},
                  "mean": round(v["mean"], 4)} for k, v in cv.items()]
    return dg.MaterializeResult(metadata={
        "feature_set": f"{fs.name} v{fs.version}",
        "path": dg.MetadataValue.path(str(Path(root) / "feature_sets" / fs.name / f"v{fs.version}.json")),
        "candidates": len(cand.features), "selected": len(fs.features),
        "metric": result["metric_name"],
        "cv_baseline": round(cv["baseline"]["mean"], 4), "cv_selected": round(cv["selected"]["mean"], 4),
        "cv_gain": round(gain, 4),
        "selected_cost_seconds_per_day": round(fs.info["cost"]["seconds_per_day"], 3),
        "baseline_cost_seconds_per_day": round(sum(costs.get(c, {}).get("seconds_per_day", 0.0) for c in baseline), 3),
        # the same totals by the recorded cost basis: what decided, and the same on every run
        "selected_decision_seconds_per_day": round(sum(decision["features"].get(c, 0.0) for c in result["selected"]), 3),
        "baseline_decision_seconds_per_day": round(sum(decision["features"].get(c, 0.0) for c in baseline), 3),
        "importance_plot": dg.MetadataValue.md(report.importance_plot(result)),
        "metric_with_and_without_each_family": dg.MetadataValue.md(report.ablation_plot(result)),
        "cv_folds": _md_table(fold_rows),
        "families": dg.MetadataValue.md(report.family_table(result, fam_costs)),
        "cost_vs_value": dg.MetadataValue.md(report.cost_value_plot(result, costs)),
        "selected_features": _md_table(sel_rows),
        "dropped_features": dg.MetadataValue.md(report.dropped_table(result, families)),
        "label_days": f"{start} .. {end}", "rows": result["frame"]["rows"],
        "selection_seconds": round(time.perf_counter() - t0, 2),
        "selection_timings": dg.MetadataValue.json(result["timings"]),
        "cost_basis_recorded": ", ".join(decision["recorded"]) or "none (reused the recorded basis)",
    })


selection_job = dg.define_asset_job(
    "train_and_select",
    selection=dg.AssetSelection.groups(GROUP_TRAINING, GROUP_SELECTION),
    description="Labels, the candidate training set, profiles, cost-aware selection (publishes user_selected) and the "
                "selected set's training set, over a range of label days.",
)
SELECTION_ASSETS = [users_wide, labels, candidate_training_set, feature_profiles, feature_selection, training_set]
