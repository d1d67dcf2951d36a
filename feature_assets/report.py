"""Plots and tables for the UI from small result dicts (labels, profiles, selection); PNGs embedded in markdown."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display in the Dagster process or on CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

KEPT, DROPPED = "#2b8cbe", "#bdbdbd"


def png_md(fig, alt: str) -> str:
    """A figure as a markdown image with an inline base64 PNG (closes the figure)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def short(col: str, width: int = 48) -> str:
    """A qualified column name shortened for axis labels."""
    return col if len(col) <= width else col[: width - 1] + "…"


def labels_plot(manifest: dict) -> str:
    """Rows and positive rate per label day."""
    per = manifest.get("rows_per_day") or {}
    if not per:
        return "_no label days_"
    days = sorted(per)
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.bar(range(len(days)), [per[d] for d in days], color=KEPT)
    ax.set_ylabel("label rows")
    ax.set_xticks(range(0, len(days), max(1, len(days) // 8)), [days[i] for i in range(0, len(days), max(1, len(days) // 8))],
                  rotation=30, fontsize=7)
    ax.set_title(f"{manifest.get('description', '')[:90]}", fontsize=8)
    return png_md(fig, "labels per day")


def profile_table(profile: dict, limit: int = 400) -> str:
    """One line per feature: kind, missing and zero rates, cardinality, mean and quantiles."""
    rows = []
    for name, p in list(profile["features"].items())[:limit]:
        q = p.get("quantiles") or {}
        rows.append({"feature": name, "kind": p["kind"], "missing": round(p["missing_rate"], 3),
                     "zero": None if p.get("zero_rate") is None else round(p["zero_rate"], 3),
                     "cardinality": p["cardinality"],
                     "mean": None if p.get("mean") is None else round(p["mean"], 4),
                     "p01": q.get("p1"), "p50": q.get("p50"), "p99": q.get("p99"),
                     "top": ", ".join(f"{k}:{v}" for k, v in list((p.get("top_values") or {}).items())[:4]) or None})
    df = pd.DataFrame(rows)
    for c in ("p01", "p50", "p99"):
        df[c] = df[c].map(lambda v: None if v is None or v != v else float(f"{v:.4g}"))
    return df.to_markdown(index=False)


def profile_histograms(profile: dict, max_features: int = 16) -> str:
    """A grid of histograms of the numeric features (clipped at the 0.5% and 99.5% quantiles)."""
    items = [(n, p) for n, p in profile["features"].items() if p["kind"] == "numeric" and p.get("histogram")]
    if not items:
        return "_no numeric features_"
    # the most variable-looking first: many distinct values, few missing
    items = sorted(items, key=lambda kv: (-min(kv[1]["cardinality"], 50), kv[1]["missing_rate"]))[:max_features]
    cols = 4
    rows = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.2 * rows), squeeze=False)
    for ax, (name, p) in zip(axes.ravel(), items):
        h = p["histogram"]
        edges = np.array(h["edges"])
        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color=KEPT)
        ax.set_title(short(name, 34), fontsize=8)
        ax.tick_params(labelsize=6)
        ax.text(0.98, 0.95, f"miss {p['missing_rate']:.0%}\nzero {p['zero_rate']:.0%}", transform=ax.transAxes,
                ha="right", va="top", fontsize=6)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    fig.tight_layout()
    return png_md(fig, f"histograms of {profile['source']}")


def rates_plot(profile: dict, max_features: int = 60) -> str:
    """Missing and zero rates per feature (the highest first)."""
    items = sorted(profile["features"].items(), key=lambda kv: -(kv[1]["missing_rate"] + (kv[1].get("zero_rate") or 0)))[:max_features]
    if not items:
        return "_no features_"
    names = [short(n, 40) for n, _ in items][::-1]
    miss = [p["missing_rate"] for _, p in items][::-1]
    zero = [p.get("zero_rate") or 0 for _, p in items][::-1]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.18 * len(items))))
    y = np.arange(len(items))
    ax.barh(y - 0.2, miss, height=0.4, label="missing", color="#e34a33")
    ax.barh(y + 0.2, zero, height=0.4, label="zero", color=DROPPED)
    ax.set_yticks(y, names, fontsize=6)
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7)
    return png_md(fig, "missing and zero rates")


def pairs_table(profile: dict) -> str:
    """The most correlated feature pairs (Spearman)."""
    if not profile["top_pairs"]:
        return "_fewer than two varying numeric features_"
    return pd.DataFrame(profile["top_pairs"], columns=["feature a", "feature b", "spearman rho"]).round(4).to_markdown(index=False)


def importance_plot(result: dict, top: int = 30) -> str:
    """Permutation importance of the top features: kept in blue, dropped in grey."""
    imp = result["importance"]["permutation"]
    items = sorted(imp.items(), key=lambda kv: -kv[1])[:top][::-1]
    if not items:
        return "_no importances_"
    kept = set(result["selected"])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.24 * len(items))))
    ax.barh(range(len(items)), [v for _, v in items], color=[KEPT if c in kept else DROPPED for c, _ in items])
    ax.set_yticks(range(len(items)), [short(c) for c, _ in items], fontsize=7)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel(f"permutation importance ({result['metric_name']} drop, mean over entity folds)")
    ax.set_title("blue: selected, grey: dropped", fontsize=8)
    return png_md(fig, "permutation importance")


def ablation_plot(result: dict) -> str:
    """CV metric (mean over time folds) of the baseline, the selected set and each ablation."""
    cv = result["cv"]
    names = ["baseline", "selected"] + sorted(n for n in cv if n not in ("baseline", "selected"))
    vals = [cv[n]["mean"] for n in names]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(names))))
    colors = ["#636363" if n == "baseline" else KEPT if n == "selected" else "#9ecae1" for n in names]
    ax.barh(range(len(names)), vals, color=colors)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    lo = min(v for v in vals if v == v) if any(v == v for v in vals) else 0
    hi = max(v for v in vals if v == v) if any(v == v for v in vals) else 1
    ax.set_xlim(lo - (hi - lo) * 0.5 - 1e-3, hi + (hi - lo) * 0.2 + 1e-3)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.4f}", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"time-split CV {result['metric_name']} on held-out entities")
    return png_md(fig, "ablation")


def cost_value_plot(result: dict, costs: dict[str, dict]) -> str:
    """Compute cost per day against permutation importance, per evaluated feature."""
    imp = result["importance"]["permutation"]
    if not imp:
        return "_no importances_"
    kept = set(result["selected"])
    x = np.array([max(costs.get(c, {}).get("seconds_per_day", 0.0), 1e-4) for c in imp])
    y = np.array(list(imp.values()))
    col = [KEPT if c in kept else DROPPED for c in imp]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(x, y, c=col, s=18, edgecolors="none")
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("compute seconds per day (static attributes at 1e-4)")
    ax.set_ylabel(f"permutation importance ({result['metric_name']} drop)")
    ax.set_title("cost vs value (blue: selected)", fontsize=9)
    return png_md(fig, "cost vs value")


def dropped_table(result: dict, families: dict[str, str], limit: int = 400) -> str:
    """Every dropped feature with its family and reason (grouped by reason kind)."""
    rows = [{"feature": c, "family": families.get(c, c.split(".", 1)[0]), "reason": r} for c, r in result["dropped"].items()]
    if not rows:
        return "_nothing dropped_"
    df = pd.DataFrame(rows)
    df["kind"] = df["reason"].str.extract(
        r"^(constant|all values missing|not relevant|no model importance|no stable importance|too costly for its value|redundant|family \S+ dropped)",
        expand=False).fillna("other")
    df = df.sort_values(["kind", "family", "feature"])
    head = df.groupby("kind").size().rename("features").to_frame().to_markdown()
    more = f"\n\n_{len(df) - limit} more not shown_" if len(df) > limit else ""
    return head + "\n\n" + df.head(limit)[["feature", "family", "reason"]].to_markdown(index=False) + more


def family_table(result: dict, fam_costs: dict[str, dict]) -> str:
    """Per family: features kept, joint permutation value, leave-one-out CV gain, measured and decision cost."""
    fams = sorted(set(fam_costs) | set(result["family_value"]))
    kept: dict[str, int] = {}
    for c, f in result.get("families_of_selected", {}).items():
        kept[f] = kept.get(f, 0) + 1
    rows = [{"family": f, "candidates": fam_costs.get(f, {}).get("features"), "kept": kept.get(f, 0),
             "joint permutation value": round(result["family_value"].get(f, float("nan")), 4),
             "CV gain (selected minus family)": round(result["family_gain"].get(f, float("nan")), 4),
             "compute s/day": round(fam_costs.get(f, {}).get("seconds_per_day", 0.0), 3),
             "decision s/day (recorded)": round(result.get("family_costs_used", {}).get(f, 0.0), 3),
             "MiB/day": round(fam_costs.get(f, {}).get("bytes_per_day", 0.0) / 2**20, 3),
             "decision": result["dropped_families"].get(f, "kept" if kept.get(f) else "-")} for f in fams]
    return pd.DataFrame(rows).to_markdown(index=False)
