"""The demo's selection step: run `train_and_select`, then print what selection kept and how it validated."""

import time
from pathlib import Path

import dagster as dg

from featurecore import demo_data
from featurecore.feature_sets import load
from featurecore.labels import read_manifest as labels_manifest

from .selection import SELECTED_SET


def ensure_wide_table(landing: Path, cfg: demo_data.DemoConfig) -> bool:
    """Write the demo's users_wide table when the landing zone lacks it or holds an older generator's (True when written)."""
    import pandas as pd

    path = landing / "users_wide" / "users_wide.parquet"
    if cfg.wide_columns <= 0:
        return False
    want = demo_data.build_users_wide(cfg)
    # The table is cheap to build; comparing it keeps a reused landing zone in step with the generator.
    if path.exists() and pd.read_parquet(path).equals(want):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    want.to_parquet(path, index=False)
    return True


def run_selection_step(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict) -> dict:
    """Materialize labels, training sets, profiles and selection in one run; return the numbers to print."""
    t0 = time.perf_counter()
    res = defs.resolve_job_def("train_and_select").execute_in_process(instance=instance, run_config=run_config,
                                                                      raise_on_error=False)
    out = {"success": res.success, "run_id": res.run_id, "seconds": time.perf_counter() - t0}
    if not res.success:
        return out
    meta = {ev.event_specific_data.materialization.asset_key.to_user_string(): ev.event_specific_data.materialization.metadata
            for ev in res.get_asset_materialization_events()}
    store_root = str(Path(meta["labels"]["path"].value).parent)
    fs = load(store_root, SELECTED_SET)
    out.update(store_root=store_root, feature_set=fs, labels=labels_manifest(store_root),
               candidates=meta["candidate_training_set"], selection=meta["feature_selection"],
               training_set=meta["training_set"])
    return out


def planted_check(fs, wide_columns: int) -> dict:
    """Which of the generator's planted informative and pure-noise wide columns the feature set kept."""
    planted = demo_data.planted_signal(wide_columns)["wide"]
    kept = {f.feature for f in fs.features if f.source == "users_wide"}
    return {"informative": [c for c in planted["informative"] if c in kept], "n_informative": len(planted["informative"]),
            "noise": sorted(kept & set(planted["noise"]) | kept & set(planted["constant"])),
            "n_noise": len(planted["noise"]) + len(planted["constant"])}


def print_selection(step: dict, wide_columns: int) -> None:
    """Print the selection numbers of the demo (all reproducible with the fixed seed)."""
    if not step.get("success"):
        print(f"  train_and_select run {step.get('run_id')} FAILED")
        return
    fs, lab, s, ts = step["feature_set"], step["labels"], step["selection"], step["training_set"]
    m = fs.info["metrics"]
    print()
    print(f"Labels, training sets, selection (run {step['run_id']}, {step['seconds']:.1f}s)")
    print(f"  labels: {lab['description']}")
    print(f"    {lab['rows']:,} rows over {len(lab['days'])} label days, positive rate {lab['positive_rate']:.3f}; "
          f"{len(lab['pending_days'])} day(s) pending their horizon")
    print(f"  candidate training set: {step['candidates']['dagster/row_count'].value:,} rows x "
          f"{step['candidates']['features'].value} features, label days {step['candidates']['start'].value} .. "
          f"{step['candidates']['end'].value} (as-of join on Dask, {step['candidates']['wall_seconds'].value:.1f}s)")
    print(f"  selection: kept {len(fs.features)} of {s['candidates'].value} features -> {fs.name} v{fs.version} "
          f"(seed {fs.info['selection_config']['seed']})")
    folds = m["cv_folds"]
    print(f"  time-split CV {fs.info['metric']} on held-out users ({len(folds['selected'])} folds, gap = label horizon):")
    print(f"    declared groups baseline {m['cv_baseline']:.4f}  {[round(x, 4) for x in folds['baseline']]}")
    print(f"    selected set             {m['cv_selected']:.4f}  {[round(x, 4) for x in folds['selected']]}  "
          f"gain {m['cv_gain']:+.4f}")
    abl = {k: v for k, v in sorted(m["ablation"].items()) if k.startswith(("selected - ", "baseline + "))}
    width = max(map(len, abl), default=0)
    for name, v in abl.items():
        delta = v - (m["cv_baseline"] if name.startswith("baseline") else m["cv_selected"])
        print(f"    {name:<{width}} {v:.4f} ({delta:+.4f})")
    chk = planted_check(fs, wide_columns)
    print(f"  planted signal kept: {len(chk['informative'])}/{chk['n_informative']} informative wide columns "
          f"{chk['informative']}; pure-noise/constant wide columns kept: {len(chk['noise'])}/{chk['n_noise']}")
    fams = {}
    for f in fs.features:
        fams[f.source] = fams.get(f.source, 0) + 1
    print(f"  selected per source: {fams}")
    # recorded-basis costs decide (identical on every run); measured ones follow the machine's load
    print(f"  compute by the recorded cost basis {s['selected_decision_seconds_per_day'].value:.2f} s/day (baseline "
          f"{s['baseline_decision_seconds_per_day'].value:.2f}); measured this run {fs.info['cost']['seconds_per_day']:.2f} "
          f"s/day (baseline {s['baseline_cost_seconds_per_day'].value:.2f})")
    for src in fs.sources:
        if not src.endswith("_candidates"):
            print(f"    {src}: {', '.join(fs.features_of(src))}")
    print(f"  training set {ts['name'].value}: {ts['dagster/row_count'].value:,} rows, {ts['features'].value} features")
