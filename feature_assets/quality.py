"""Quality gates and monitoring: asset checks on every feature asset, a freshness sensor, and
the daily `feature_monitoring` asset.

For every quality source (the declared groups; candidate assets are added to `SOURCES`
with `QualitySource.candidate`) this module defines, on the source asset itself:

- `stats`, `relations`, `drift` (partitioned, one evaluation per partition): computed on
  Dask from per-partition profiles (`checks/quality.py`). Step 1 profiles the run's
  partitions (each read once) and makes sure the reference days have current profiles;
  step 2 evaluates each day from profiles only. `relations` is blocking (its laws are
  broken data); `stats` and `drift` are alerts (ERROR or WARN, not blocking);
- `schema` for candidate sources whose writer does not validate (the groups' `schema`
  is emitted by the group factory while writing);
- `freshness` (unpartitioned): late or stale partitions against the landing zone,
  re-evaluated by `feature_freshness_sensor` when it can next change;
- `feature_set_compat` (unpartitioned): published feature-set versions are still producible.

`feature_monitoring` (daily, group `monitoring`) stores per day and feature the missing,
zero and outlier rates and the drift statistics, recomputes the importances of each
published feature set on recent data, and shows trends, the importance comparison and a
short list of features that need attention.
"""


import time
from pathlib import Path

import dagster as dg
import pandas as pd

from checks.compat import compat_findings, summarize
from checks.drift import DriftRules
from checks.freshness import data_arrivals, evaluate_freshness, partition_writes, utc_now
from checks.importance import importance_drift
from checks.layout import FeatureInfo, FeatureLayout
from checks.monitoring import attention, drift_heatmap, importance_bars, png_markdown, rate_lines
from checks.profiles import read_profile, stored_columns
from checks.quality import QualitySettings, QualitySource, Reference, evaluate_day, group_sources, profile_day, reference_days_needed
from checks.stats import StatRules
from featurecore import feature_sets
from featurecore.store import partition_exists, read_partition, write_partition
from featurecore.timeutil import day_range, shift_day
from resources import DaskResource, LandingZone, OfflineStore

from .check_results import Verdict, emit, from_status, md_table
from .ingestion import effective_config
from .partitions import daily_partitions

# Candidate assets have the same layout (user_id, cutoff, features); their features are
# discovered at run time, so their layout is inferred from each partition.
CANDIDATE_SOURCES = [QualitySource.candidate(name, ("user_id",)) for name in
                     ("dfs_candidates", "tsfresh_candidates", "interaction_candidates", "encoded_candidates")]
GROUP_SOURCES = group_sources()
SOURCES: list[QualitySource] = GROUP_SOURCES + CANDIDATE_SOURCES
PROFILED_CHECKS = ("stats", "relations", "drift")
MONITORING_ASSET = "feature_monitoring"
QUALITY_VERSION = "1"


class QualityConfig(dg.ConfigurableResource):
    """Reference window and thresholds of the quality checks and the monitoring asset."""

    trailing_days: int = 28
    same_weekday: bool = True
    pinned_start: str | None = None  # with pinned_end: compare with this fixed window instead
    pinned_end: str | None = None
    min_reference_days: int = 3
    psi_warn: float = 0.1
    psi_error: float = 0.25
    ks_warn: float = 0.1
    ks_error: float = 0.2
    alpha: float = 0.001
    max_row_change: float = 0.10
    stats_days: int = 14
    monitoring_days: int = 28  # days shown in the monitoring plots
    feature_sets: list[str] = []  # feature sets to watch for importance drift (empty: every published one)

    def settings(self) -> QualitySettings:
        """The pure settings object the Dask tasks take."""
        pinned = (self.pinned_start, self.pinned_end) if self.pinned_start and self.pinned_end else None
        return QualitySettings(
            reference=Reference(self.trailing_days, pinned, self.same_weekday, self.min_reference_days),
            drift=DriftRules(self.psi_warn, self.psi_error, self.ks_warn, self.ks_error, self.alpha,
                             max_row_change=self.max_row_change),
            stats=StatRules(),
            stats_days=self.stats_days,
        )


CHECK_DESCRIPTIONS = {
    "stats": "Statistical validation from profiles: row count vs the trailing mean, per feature missing, zero and "
             "outlier (robust z) rates within bounds learnt from the trailing partitions; names the offending values.",
    "relations": "Declared and implied relations per partition: laws (window nesting, ordered quantiles, shares sum "
                 "to 1, funnel laws) and tendencies (funnel with a tolerated violation share, minimum correlations).",
    "drift": "PSI and KS per feature (PSI + chi-square for categories) vs the reference profiles (default: the same "
             "weekday of the trailing 28 days); WARN at PSI 0.1 / KS 0.1, ERROR at 0.25 / 0.2, above the noise floor.",
    "schema": "Pandera schema from the asset's layout: columns, types, keys, cutoff, value ranges, laws.",
}


def _spec(source: QualitySource, name: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=source.name, partitions_def=daily_partitions,
                             blocking=name in ("relations", "schema"), description=CHECK_DESCRIPTIONS[name],
                             metadata={"quality_version": QUALITY_VERSION})


def _check_names(source: QualitySource) -> tuple[str, ...]:
    return PROFILED_CHECKS + (("schema",) if source.validate_on_profile else ())


def _run_days(context) -> list[str]:
    op = getattr(context, "op_execution_context", context)
    if op.has_partition_key or op.has_partition_key_range:
        return list(op.partition_keys)
    raise dg.Failure("quality checks are partitioned: run them for a partition or a partition range")


def evaluate_on_dask(client, root: str, sources: list[QualitySource], days: list[str], settings: QualitySettings,
                     start: str) -> dict[tuple[str, str], dict]:
    """Profile what is needed, then evaluate every (source, day) on the cluster; small dicts back."""
    need = [d for d in reference_days_needed(days, settings) if d >= start]
    client.gather([client.submit(profile_day, root, s, d, pure=False) for s in sources for d in need])
    futs = {(s.name, d): client.submit(evaluate_day, root, s, d, settings, start, pure=False) for s in sources for d in days}
    return dict(zip(futs, client.gather(list(futs.values()))))


def _verdict(check: str, source: str, r: dict) -> Verdict:
    v = r[check]
    if r.get("missing"):  # e.g. a candidate asset off its cadence wrote nothing that day
        return Verdict(True, v.get("note", "no partition: nothing to check"))
    findings = v.get("findings", [])
    # tables only when there is something to show: one event per partition and check adds up in the event log
    if check == "drift":
        meta = {"features_compared": v.get("compared", 0), "features_skipped": v.get("skipped", 0),
                "reference": v.get("reference", ""), "reference_partitions": v.get("reference_days", 0)}
        if findings:
            meta["drifted"] = md_table(findings, ["item", "status", "psi", "ks", "message"])
        text = (f"{len(findings)} drifted feature(s); worst: {findings[0]['message']}" if findings else
                f"no drift in {v.get('compared', 0)} compared feature(s) vs {v.get('reference', '')}"
                + (f" ({v.get('skipped', 0)} not comparable yet or cumulative)" if v.get("skipped") else ""))
    elif check == "stats":
        meta = {"rows": v.get("rows", 0), "features_judged": v.get("features_judged", 0)}
        if v.get("rows_ratio") is not None:
            meta["rows_vs_reference"] = v["rows_ratio"]
        if findings:
            meta["findings"] = md_table(findings, ["item", "rule", "status", "message"])
        text = (f"{len(findings)} finding(s); first: {findings[0]['message']}" if findings else
                (v.get("note") or f"rates and row count within bounds ({v.get('features_judged', 0)} features judged)"))
    elif check == "relations":
        meta = {"relations_evaluated": v.get("evaluated", 0)}
        if findings:
            meta["broken"] = md_table([t for t in v.get("table", []) if t["status"] != "ok"],
                                      ["relation", "status", "rows", "violations", "statistic"])
        text = (f"{len(findings)} relation(s) broken; first: {findings[0]['message']}" if findings else
                f"all {v.get('evaluated', 0)} relations hold")
    else:
        meta = {"failures": md_table(findings, ["message"])} if findings else {}
        text = f"{len(findings)} schema failure(s); first: {findings[0]['message']}" if findings else "schema ok"
    return from_status(v["status"], text[:2000], meta)


def build_quality_checks(sources: list[QualitySource], name: str) -> dg.AssetChecksDefinition:
    """The partitioned stats / relations / drift (and schema) checks of `sources`, in one op, run on Dask.

    The groups share one op (one materialization step writes them all, and their Dask
    tasks run side by side); each candidate asset gets its own, so a failing candidate
    never skips the checks of the others.
    """

    @dg.multi_asset_check(
        name=name,
        specs=[_spec(s, n) for s in sources for n in _check_names(s)],
        description=f"Profile-based quality checks (stats, relations, drift) of {', '.join(s.name for s in sources)}, on Dask.",
        can_subset=True,
    )
    def _quality_checks(context: dg.AssetCheckExecutionContext, dask: DaskResource, landing: LandingZone,
                        store: OfflineStore, quality: QualityConfig):
        """Profile the run's partitions, evaluate them against their reference profiles, emit per-partition results."""
        cfg = effective_config(landing, store)
        days = _run_days(context)
        selected = context.selected_asset_check_keys
        srcs = [s for s in sources if any(k.asset_key == dg.AssetKey(s.name) for k in selected)]
        t0 = time.perf_counter()
        results = evaluate_on_dask(dask.client, cfg.store_root, srcs, days, quality.settings(), cfg.partition_start)
        context.log.info(f"quality of {len(srcs)} asset(s) x {len(days)} partition(s) evaluated in {time.perf_counter() - t0:.1f}s")
        for s in srcs:
            for check in _check_names(s):
                if dg.AssetCheckKey(dg.AssetKey(s.name), check) not in selected:
                    continue
                per_day = {d: _verdict(check, s.name, results[(s.name, d)]) for d in days}
                yield from emit(context, s.name, check, per_day, blocking=check in ("relations", "schema"))

    return _quality_checks


def build_freshness_checks(sources: list[QualitySource]) -> dg.AssetChecksDefinition:
    """The unpartitioned `freshness` check of every source (late and stale partitions vs landed data)."""

    @dg.multi_asset_check(
        name="feature_freshness_checks",
        specs=[dg.AssetCheckSpec("freshness", asset=s.name, description=(
            f"Every partition whose data landed is written within {s.freshness.deadline} after its cutoff and the "
            "arrival of its data, and none is older than data it depends on (late rows, rewritten landing files)."))
            for s in sources if s.freshness is not None],
        can_subset=True,
    )
    def feature_freshness_checks(context: dg.AssetCheckExecutionContext, landing: LandingZone, store: OfflineStore):
        """Late / stale partitions of each selected feature asset, judged from landing and store file times."""
        cfg = effective_config(landing, store)
        arrivals = data_arrivals(cfg.landing_root, cfg.store_root)
        now = utc_now()
        for s in sources:
            key = dg.AssetCheckKey(dg.AssetKey(s.name), "freshness")
            if s.freshness is None or key not in context.selected_asset_check_keys:
                continue
            v = evaluate_freshness(s.name, partition_writes(cfg.store_root, s.name), arrivals,
                                   window_days=s.window_days, rule=s.freshness, now=now, start=cfg.partition_start)
            meta = {
                "latest_partition": v["latest_partition"] or "none",
                "data_age_hours": v["data_age_hours"],
                "deadline_hours": v["deadline_hours"],
                "late_partitions": dg.MetadataValue.json(v["late"]),
                "stale_partitions": dg.MetadataValue.json(v["stale"]),
            }
            if v["fresh_until"] is not None:
                meta["dagster/fresh_until_timestamp"] = dg.MetadataValue.timestamp(v["fresh_until"].timestamp())
            yield dg.AssetCheckResult(asset_key=s.name, check_name="freshness", passed=v["passed"],
                                      severity=dg.AssetCheckSeverity.ERROR, description=v["description"][:2000],
                                      metadata=meta)

    return feature_freshness_checks


def current_layouts(store_root: str, sources: list[QualitySource]) -> dict[str, FeatureLayout]:
    """Each source's current layout: declared, or names and dtypes from its newest profile."""
    out = {}
    for s in sources:
        if s.layout is not None:
            out[s.name] = s.layout
            continue
        folder = Path(store_root) / (s.name + "__profile")
        days = sorted(p.name.removeprefix("date=") for p in folder.glob("date=*")) if folder.is_dir() else []
        prof = read_profile(store_root, s.name, days[-1]) if days else None
        cols = stored_columns(prof) if prof is not None else {}
        feats = tuple(FeatureInfo(c, "object" if t == "object" else t, fingerprint=t)
                      for c, t in cols.items() if c not in s.keys and c != "cutoff")
        out[s.name] = FeatureLayout(s.name, s.keys, feats, "1")
    return out


def published_sets(store_root: str) -> list[tuple[feature_sets.FeatureSet, bool]]:
    """Every published feature-set version, with True for the newest version of its name."""
    root = Path(store_root) / "feature_sets"
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        versions = sorted((p.stem[1:] for p in folder.glob("v*.json")),
                          key=lambda v: tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in v.split(".")))
        for v in versions:
            out.append((feature_sets.load(store_root, folder.name, v), v == versions[-1]))
    return out


def build_compat_checks(sources: list[QualitySource]) -> dg.AssetChecksDefinition:
    """The unpartitioned `feature_set_compat` check of every source."""

    @dg.multi_asset_check(
        name="feature_set_compat_checks",
        specs=[dg.AssetCheckSpec("feature_set_compat", asset=s.name, description=(
            "Every published feature-set version that uses this asset can still be produced: same features, "
            "compatible types, keys, and no definition change under the same version.")) for s in sources],
        can_subset=True,
    )
    def feature_set_compat_checks(context: dg.AssetCheckExecutionContext, landing: LandingZone, store: OfflineStore):
        """Compare published feature sets with the current declarations, per source asset."""
        cfg = effective_config(landing, store)
        layouts = current_layouts(cfg.store_root, sources)
        sets = published_sets(cfg.store_root)
        for s in sources:
            if dg.AssetCheckKey(dg.AssetKey(s.name), "feature_set_compat") not in context.selected_asset_check_keys:
                continue
            rows, severe = [], False
            users = [(fs, latest) for fs, latest in sets if s.name in fs.sources]
            for fs, latest in users:
                for f in compat_findings(fs, layouts, [s.name]):
                    rows.append({**f, "feature_set": f"{fs.name} v{fs.version}", "latest": latest})
                    severe |= latest
            desc = summarize(rows) if users else "no published feature set uses this asset"
            yield dg.AssetCheckResult(
                asset_key=s.name, check_name="feature_set_compat", passed=not rows,
                severity=dg.AssetCheckSeverity.ERROR if severe else dg.AssetCheckSeverity.WARN,
                description=desc[:2000],
                metadata={"feature_sets_checked": dg.MetadataValue.json([f"{fs.name} v{fs.version}" for fs, _ in users]),
                          "problems": md_table(rows, ["feature_set", "feature", "problem", "message"])},
            )

    return feature_set_compat_checks


# --------------------------------------------------------------------------- monitoring asset


def _series(root: str, day: str, n: int) -> pd.DataFrame:
    parts = [read_partition(root, MONITORING_ASSET, d) for d in day_range(shift_day(day, -(n - 1)), shift_day(day, -1))
             if partition_exists(root, MONITORING_ASSET, d)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def build_monitoring_asset(sources: list[QualitySource]) -> dg.AssetsDefinition:
    """The daily `feature_monitoring` asset over `sources`."""

    @dg.asset(
        name=MONITORING_ASSET,
        deps=[s.name for s in sources],
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="monitoring",
        kinds={"dask", "parquet", "matplotlib"},
        code_version=QUALITY_VERSION,
        description="Daily time series per feature of missing, zero and outlier rates and drift (PSI, KS) vs the "
                    "reference, importance drift of published feature sets, plots and the features that need attention.",
    )
    def feature_monitoring(context: dg.AssetExecutionContext, dask: DaskResource, landing: LandingZone,
                           store: OfflineStore, quality: QualityConfig) -> dg.MaterializeResult:
        """One row per (source, feature) per day in the store; trend plots and an attention list in the UI."""
        cfg = effective_config(landing, store)
        root, days = cfg.store_root, list(context.partition_keys)
        settings = quality.settings()
        t0 = time.perf_counter()
        present = [s for s in sources if any(partition_exists(root, s.name, d) for d in days)]
        results = evaluate_on_dask(dask.client, root, present, days, settings, cfg.partition_start)
        last = days[-1]
        sets = [fs for fs, latest in published_sets(root) if latest and fs.info.get("importances")
                and (not quality.feature_sets or fs.name in quality.feature_sets)]
        imp = dask.client.gather([dask.client.submit(importance_drift, root, fs, last, pure=False) for fs in sets])
        rows_written = 0
        for d in days:
            table = pd.DataFrame([f for s in present for f in results[(s.name, d)]["features"]])
            for r in imp if d == last else []:
                for f in r.get("features", []):
                    src, feat = f["feature"].split(".", 1)
                    hit = (table["source"] == src) & (table["feature"] == feat) if len(table) else []
                    if len(table) and hit.any():
                        table.loc[hit, "importance_share_at_selection"] = f["share_at_selection"]
                        table.loc[hit, "importance_share_now"] = f["share_now"]
            for col in ("psi", "ks", "importance_share_at_selection", "importance_share_now"):
                if col not in table:
                    table[col] = float("nan")
                table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
            write_partition(table, root, MONITORING_ASSET, d)
            rows_written += len(table)

        today = pd.DataFrame([f for s in present for f in results[(s.name, last)]["features"]])
        series = pd.concat([_series(root, last, quality.monitoring_days), read_partition(root, MONITORING_ASSET, last)],
                           ignore_index=True)
        stats_f = [{**f, "source": s.name} for s in present for f in results[(s.name, last)]["stats"]["findings"]]
        rel_f = [{**f, "source": s.name} for s in present for f in results[(s.name, last)]["relations"]["findings"]]
        att = attention(today, stats_f, rel_f, imp)
        names = {s.name for s in present}
        att_names = [f"{r.source}.{r.feature}" for r in att.itertuples() if r.source in names][:8]
        meta = {
            "days": len(days),
            "sources": len(present),
            "features_monitored": int(len(today)),
            "features_drifting": int(today["drift"].isin(["warn", "error"]).sum()) if len(today) else 0,
            "features_compared_for_drift": int((today["drift"] != "skipped").sum()) if len(today) else 0,
            "needs_attention": dg.MetadataValue.md(att.to_markdown(index=False) if len(att) else "_nothing today_"),
            "reference": settings.reference.describe(),
            "rows_in_run": rows_written,
            "wall_seconds": round(time.perf_counter() - t0, 2),
        }
        plots = []
        if len(series) and "psi" in series:
            heat = drift_heatmap(series)
            if heat:
                plots.append(png_markdown(heat, "drift heatmap"))
            watch = att_names or (series.sort_values("psi", ascending=False)
                                  .assign(n=lambda x: x["source"] + "." + x["feature"])["n"].drop_duplicates().head(5).tolist())
            for metric in ("missing_rate", "outlier_rate"):
                png = rate_lines(series, watch, metric)
                if png:
                    plots.append(png_markdown(png, metric))
        meta["trends"] = dg.MetadataValue.md("\n\n".join(plots) if plots else "_no history yet_")
        if imp:
            meta["importance_drift"] = dg.MetadataValue.md("\n\n".join(
                (png_markdown(p, "importance") if (p := importance_bars(r)) else "")
                + f"\n\n**{r['feature_set']} v{r['version']}**: {r['status']}"
                + (f", Spearman {r.get('spearman')}, {len(r.get('flagged', []))} feature(s) flagged" if r["status"] != "skipped"
                   else f" ({r.get('note')})") for r in imp))
            meta["importance_summary"] = dg.MetadataValue.json(
                [{k: r.get(k) for k in ("feature_set", "version", "status", "spearman", "total_variation", "compared_with",
                                        "label_days", "note", "method", "rows")} for r in imp])
        else:
            meta["importance_drift"] = dg.MetadataValue.md("_no published feature set with stored importances_")
        return dg.MaterializeResult(metadata=meta)

    return feature_monitoring


quality_checks = [build_quality_checks(GROUP_SOURCES, "feature_group_quality_checks")] + [
    build_quality_checks([s], f"{s.name}_quality_checks") for s in CANDIDATE_SOURCES]
freshness_checks = build_freshness_checks(SOURCES)
compat_checks = build_compat_checks(SOURCES)
feature_monitoring = build_monitoring_asset(SOURCES)


@dg.sensor(
    name="feature_freshness_sensor",
    asset_selection=dg.AssetSelection.checks(freshness_checks),
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-runs the freshness checks when their verdict can have changed: never evaluated, past the "
                "`dagster/fresh_until_timestamp` of a passing result, or an hour after a failing one.",
)
def freshness_sensor(context: dg.SensorEvaluationContext):
    """Request the freshness checks that are due for another look (materialization runs run them too)."""
    now = time.time()
    keys = list(freshness_checks.check_keys)
    records = context.instance.event_log_storage.get_asset_check_summary_records(keys)
    due = []
    for key in keys:
        last = records[key].last_completed_check_execution_record if key in records else None
        ev = last.event.asset_check_evaluation if last is not None and last.event is not None else None
        if ev is None:
            due.append(key)
        elif ev.passed:
            until = ev.metadata.get("dagster/fresh_until_timestamp")
            if until is None or until.value <= now:
                due.append(key)
        elif now - last.event.timestamp >= 3600:  # a fix without a new write (e.g. files restored) turns green
            due.append(key)
    if not due:
        return dg.SkipReason("no freshness verdict can have changed since the last evaluation")
    return dg.RunRequest(asset_check_keys=due)

