"""Monitoring views over the daily per-feature quality tables: attention list and plots (no Dagster).

The monitoring asset stores, per day, one row per (source, feature): missing, zero and
outlier rates, drift (PSI, KS, severity) and the latest importance drift. These helpers
turn the trailing days of that table into what a person looks at: the short list of
features that need attention today, and PNG plots (drift heatmap, rate trends,
importance at selection vs now) to embed in markdown.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd

SEVERITY_RANK = {"error": 2, "warn": 1}


def attention(today: pd.DataFrame, stats_findings: list[dict], relation_findings: list[dict],
              importance: list[dict], limit: int = 15) -> pd.DataFrame:
    """Features that need attention today, most severe first: drift, rate anomalies, relations, importance."""
    rows = []
    for _, r in today.iterrows():
        if r.get("drift") in SEVERITY_RANK:
            rows.append({"severity": r["drift"], "source": r["source"], "feature": r["feature"],
                         "reason": f"drift: PSI {r['psi']:.3f}" + (f", KS {r['ks']:.3f}" if pd.notna(r.get("ks")) else "")})
    for f in stats_findings:
        rows.append({"severity": f["status"], "source": f["source"], "feature": f["item"],
                     "reason": f"{f['rule']} {f['value']:.1%} (trailing {f['expected']:.1%})" if f["item"] != "__rows__"
                     else f["message"].split(": ", 1)[-1]})
    for f in relation_findings:
        rows.append({"severity": f["status"], "source": f["source"], "feature": f["item"], "reason": f["message"]})
    for imp in importance:
        for f in imp.get("flagged", []):
            rows.append({"severity": "warn", "source": f"feature set {imp['feature_set']} v{imp['version']}",
                         "feature": f["feature"], "reason": f["attention"]})
        if imp.get("status") == "error":
            rows.append({"severity": "error", "source": f"feature set {imp['feature_set']} v{imp['version']}",
                         "feature": "(all)", "reason": f"most features that mattered at selection lost their importance "
                                                       f"(Spearman {imp.get('spearman')})"})
    out = pd.DataFrame(rows, columns=["severity", "source", "feature", "reason"])
    if out.empty:
        return out
    out["_rank"] = out["severity"].map(SEVERITY_RANK).fillna(0)
    out = out.sort_values(["_rank", "source", "feature"], ascending=[False, True, True]).drop(columns="_rank")
    return out.drop_duplicates(["source", "feature", "reason"]).head(limit).reset_index(drop=True)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that embeds a PNG (the Dagster UI renders data URLs in markdown metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _fig_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def drift_heatmap(series: pd.DataFrame, top: int = 20) -> bytes | None:
    """PSI per day for the features with the highest PSI over the period (rows) as a heatmap PNG."""
    s = series[series["psi"].notna()].copy()
    if s.empty:
        return None
    s["name"] = s["source"] + "." + s["feature"]
    worst_names = s.groupby("name")["psi"].max().sort_values(ascending=False).head(top).index
    grid = s[s["name"].isin(worst_names)].pivot_table(index="name", columns="day", values="psi", aggfunc="max")
    grid = grid.loc[worst_names]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(3 + 0.28 * grid.shape[1], 16), 1 + 0.32 * len(grid)))
    im = ax.imshow(np.clip(grid.to_numpy(dtype=float), 0, 0.5), aspect="auto", cmap="magma_r", vmin=0, vmax=0.5)
    ax.set_yticks(range(len(grid)), grid.index, fontsize=7)
    ax.set_xticks(range(grid.shape[1]), [d[5:] for d in grid.columns], rotation=90, fontsize=7)
    ax.set_title("PSI vs reference (clipped at 0.5; WARN 0.1, ERROR 0.25)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _fig_png(fig)


def rate_lines(series: pd.DataFrame, names: list[str], metric: str) -> bytes | None:
    """One line per feature (`source.feature`) of a daily rate (missing_rate, outlier_rate, ...)."""
    s = series.assign(name=series["source"] + "." + series["feature"])
    s = s[s["name"].isin(names)]
    if s.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for name, g in s.groupby("name"):
        g = g.sort_values("day")
        ax.plot(pd.to_datetime(g["day"]), g[metric], marker=".", label=name)
    ax.set_title(metric.replace("_", " "), fontsize=9)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    fig.autofmt_xdate()
    return _fig_png(fig)


def importance_bars(result: dict, top: int = 15) -> bytes | None:
    """Importance share at selection vs now for a feature set's top features."""
    feats = pd.DataFrame(result.get("features") or [])
    if feats.empty:
        return None
    feats = feats.sort_values("share_at_selection", ascending=False).head(top)[::-1]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.3 * len(feats)))
    y = np.arange(len(feats))
    ax.barh(y - 0.2, feats["share_at_selection"], height=0.4, label="at selection")
    ax.barh(y + 0.2, feats["share_now"], height=0.4, label="now")
    ax.set_yticks(y, feats["feature"], fontsize=7)
    ax.set_title(f"{result['feature_set']} v{result['version']}: importance share (Spearman {result.get('spearman')})",
                 fontsize=9)
    ax.legend(fontsize=7)
    return _fig_png(fig)
