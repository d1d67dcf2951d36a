"""Benchmark: the point-in-time as-of join (training sets) against pandas ``merge_asof`` and DuckDB ``ASOF JOIN``.

Data (synthetic, seeded, generated once per size and not timed): ``users`` entities and
``days`` daily partitions of a feature source. Each day about 80% of the users have a row
with ``cutoff = D+1 00:00 UTC`` and 8 float features. Label rows come from about 70% of
the users per label day, at random times within the day. The source's TTL is 2 days, so
rows of users absent for a few days expire and must come back null; every label row is kept.

Every implementation goes from the Parquet store to Parquet output:

(a) this project: ``featurecore.training.build_training_set`` on the 2-worker LocalCluster.
    It is the code path of the ``training_set`` asset: one task per chunk of label days
    reads its labels and the feature partitions that can match, joins (``featurecore.asof``:
    key hashing plus one ``searchsorted``), and writes one partition per label day.
(b) DuckDB (``SET threads=2``): ``ASOF LEFT JOIN`` on ``user_id`` and ``label_ts >= cutoff``,
    with ``CASE WHEN cutoff >= label_ts - TTL`` for the TTL, written with ``COPY ... TO`` one file.
(c) pandas ``merge_asof(by='user_id', tolerance=TTL, direction='backward')`` in one
    process: read, sort, join, write one file.

Agreement: the three outputs, sorted by (user_id, label_ts), must be equal.
The in-memory kernels are timed too, for information (Arrow tables already loaded).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .common import RESULTS_DIR, fmt_ratio, fmt_seconds, table

SOURCE = "bench_asof_source"
N_FEATURES = 8
TTL_DAYS = 2
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
#: size -> (users, label days); label rows ~= 0.7 * users * days
SIZES = {"tiny": (2_000, 10), "small": (40_000, 40), "large": (120_000, 60)}


@dataclass
class AsofResult:
    """Timings, agreement and sizes of one as-of join benchmark run."""

    size: str
    label_rows: int
    feature_rows: int
    seconds: dict[str, float]
    kernel_seconds: dict[str, float]
    agree: dict[str, bool]
    matched_share: float
    runs: dict[str, list[float]]

    @property
    def ratio(self) -> float:
        """Project time over DuckDB time (the target figure)."""
        return self.seconds["project"] / self.seconds["duckdb"]

    def render(self) -> str:
        """The result as plain-text tables."""
        rows = [[name, fmt_seconds(s), f"{self.label_rows / s / 1e6:.2f} M/s", fmt_ratio(s / self.seconds['duckdb']),
                 " ".join(fmt_seconds(x) for x in self.runs.get(name, []))]
                for name, s in self.seconds.items()]
        out = [table(["implementation (Parquet in -> Parquet out)", "time", "label rows/s", "vs DuckDB", "runs"], rows,
                     title=(f"As-of join ({self.size}): {self.label_rows:,} label rows x {self.feature_rows:,} feature rows, "
                            f"{N_FEATURES} features, TTL {TTL_DAYS} days; {self.matched_share:.1%} of label rows matched"))]
        out.append("")
        out.append(table(["in-memory kernel (info)", "time", "vs DuckDB"],
                         [[k, fmt_seconds(v), fmt_ratio(v / self.kernel_seconds["duckdb"])] for k, v in self.kernel_seconds.items()]))
        out.append("")
        out.append("agreement with DuckDB (sorted by user_id, label_ts; all rows, all features): "
                   + ", ".join(f"{k}: {'equal' if v else 'DIFFERENT'}" for k, v in self.agree.items()))
        return "\n".join(out)


def prepare(root: Path, users: int, days: int, seed: int = 3) -> tuple[str, list[str]]:
    """Write the feature source and the labels into a store (cached by size)."""
    store = root / "store"
    marker = root / "ready"
    day_keys = [(pd.Timestamp("2026-09-01") + pd.Timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days + TTL_DAYS + 2)]
    label_days = day_keys[TTL_DAYS + 2:]
    if marker.exists():
        return str(store), label_days
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:07d}" for i in range(users)], dtype=object)
    for d in day_keys:
        present = rng.random(users) < 0.8
        n = int(present.sum())
        t = pa.table({"user_id": pa.array(ids[present], pa.string()),
                      "cutoff": pa.array(np.full(n, (pd.Timestamp(d, tz="UTC") + pd.Timedelta(days=1)).value), pa.int64())
                      .cast(pa.timestamp("ns", tz="UTC")),
                      **{f: rng.normal(size=n) for f in FEATURES}})
        folder = store / SOURCE / f"date={d}"
        folder.mkdir(parents=True)
        pq.write_table(t, folder / "part-0.parquet", compression="zstd")
    for d in label_days:
        pick = rng.random(users) < 0.7
        n = int(pick.sum())
        ts = pd.Timestamp(d, tz="UTC").value + rng.integers(0, 86_400 * 10**9, n)
        order = np.argsort(ts, kind="stable")
        t = pa.table({"entity_id": pa.array(ids[pick][order], pa.string()),
                      "label_ts": pa.array(ts[order], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                      "label": rng.integers(0, 2, n).astype("float64")})
        folder = store / "labels" / f"date={d}"
        folder.mkdir(parents=True)
        pq.write_table(t, folder / "part-0.parquet", compression="zstd")
    marker.write_text("ok")
    return str(store), label_days


def _feature_set():
    from featurecore.feature_sets import FeatureRef, FeatureSet

    return FeatureSet("bench_asof", "1", ("user_id",), tuple(FeatureRef(SOURCE, f) for f in FEATURES),
                      ttl_seconds={SOURCE: TTL_DAYS * 86_400})


def run_project(client, store: str, label_days: list[str]) -> dict:
    """The project's training-set builder (Dask, Parquet in and out)."""
    from featurecore.training import build_training_set

    return build_training_set(client, store, _feature_set(), label_days[0], label_days[-1], name="bench_asof", audit=False)


def duckdb_sql(store: str, out: str) -> str:
    """One ASOF LEFT JOIN with the TTL as a CASE, written to one Parquet file."""
    feats = ", ".join(f"CASE WHEN f.cutoff >= l.label_ts - INTERVAL {TTL_DAYS} DAY THEN f.{c} END AS {c}" for c in FEATURES)
    return f"""
    COPY (
      SELECT l.entity_id AS user_id, l.label_ts, l.label, {feats}
      FROM read_parquet('{store}/labels/*/*.parquet') l
      ASOF LEFT JOIN read_parquet('{store}/{SOURCE}/*/*.parquet') f
        ON l.entity_id = f.user_id AND l.label_ts >= f.cutoff
    ) TO '{out}' (FORMAT PARQUET, COMPRESSION ZSTD)"""


def run_duckdb(store: str, out: str) -> None:
    """DuckDB with 2 threads (the cluster's core count)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads=2")
    con.execute("SET TimeZone='UTC'")
    con.execute(duckdb_sql(store, out))
    con.close()


def run_pandas(store: str, out: str) -> None:
    """pandas merge_asof in one process."""
    lab = pd.read_parquet(f"{store}/labels").rename(columns={"entity_id": "user_id"})
    f = pd.read_parquet(f"{store}/{SOURCE}")
    lab = lab.drop(columns=[c for c in lab.columns if c == "date"]).sort_values("label_ts", kind="stable")
    f = f.drop(columns=[c for c in f.columns if c == "date"]).sort_values("cutoff", kind="stable")
    res = pd.merge_asof(lab, f, left_on="label_ts", right_on="cutoff", by="user_id",
                        tolerance=pd.Timedelta(days=TTL_DAYS), direction="backward")
    res.drop(columns=["cutoff"]).to_parquet(out, index=False)


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    df = df[["user_id", "label_ts", *FEATURES]].copy()
    df["user_id"] = df["user_id"].astype(str)
    df["label_ts"] = pd.to_datetime(df["label_ts"], utc=True)
    return df.sort_values(["user_id", "label_ts"], kind="stable").reset_index(drop=True)


def _equal(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if len(a) != len(b) or not (a["user_id"].to_numpy() == b["user_id"].to_numpy()).all():
        return False
    if not (a["label_ts"].to_numpy() == b["label_ts"].to_numpy()).all():
        return False
    return all(np.array_equal(a[f].to_numpy(float), b[f].to_numpy(float), equal_nan=True) for f in FEATURES)


def kernels(store: str, label_days: list[str]) -> dict[str, float]:
    """In-memory join time of each engine on Arrow tables already loaded (info)."""
    import duckdb

    from featurecore.asof import asof_indices, take_rows

    lab = pq.read_table(f"{store}/labels")
    feat = pq.read_table(f"{store}/{SOURCE}").drop_columns(["date"])
    lab = lab.drop_columns(["date"]) if "date" in lab.column_names else lab
    out = {}
    t0 = time.perf_counter()
    idx, _ = asof_indices([lab["entity_id"]], lab["label_ts"], [feat["user_id"]], feat["cutoff"], pd.Timedelta(days=TTL_DAYS))
    take_rows(feat.select(FEATURES), idx)
    out["project (featurecore.asof, 1 thread)"] = time.perf_counter() - t0
    con = duckdb.connect()
    con.execute("SET threads=2")
    con.register("lab", lab)
    con.register("feat", feat)
    cols = ", ".join(f"CASE WHEN f.cutoff >= l.label_ts - INTERVAL {TTL_DAYS} DAY THEN f.{c} END AS {c}" for c in FEATURES)
    t0 = time.perf_counter()
    con.execute(f"SELECT l.entity_id, l.label_ts, {cols} FROM lab l ASOF LEFT JOIN feat f "
                "ON l.entity_id = f.user_id AND l.label_ts >= f.cutoff").to_arrow_table()
    out["duckdb"] = time.perf_counter() - t0
    con.close()
    lp = lab.to_pandas().sort_values("label_ts")
    fp = feat.to_pandas().sort_values("cutoff")
    t0 = time.perf_counter()
    pd.merge_asof(lp, fp, left_on="label_ts", right_on="cutoff", left_by="entity_id", right_by="user_id",
                  tolerance=pd.Timedelta(days=TTL_DAYS), direction="backward")
    out["pandas merge_asof"] = time.perf_counter() - t0
    return out


def run(ctx) -> AsofResult:
    """Time the three implementations (median of `repeats` runs each) and check that they agree."""
    size = ctx.data.size
    users, days = SIZES.get(size.name, SIZES["small"])
    root = Path(ctx.data.root).parent / f"asof-{size.name}-{users}x{days}" if ctx.data.root else RESULTS_DIR / "data" / "asof"
    ctx.log(f"  preparing {users:,} users x {days} label days (cached, not timed)")
    store, label_days = prepare(root, users, days)
    out_dir = root / "out"
    out_dir.mkdir(exist_ok=True)
    client = ctx.client
    from featurecore.training import read_training_set

    client.run(lambda: __import__("featurecore.training"))  # imports are not part of the timing
    repeats = max(size.repeats, 1)
    runs: dict[str, list[float]] = {"project": [], "duckdb": [], "pandas merge_asof": []}
    man = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        man = run_project(client, store, label_days)
        runs["project"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_duckdb(store, str(out_dir / "duckdb.parquet"))
        runs["duckdb"].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run_pandas(store, str(out_dir / "pandas.parquet"))
    runs["pandas merge_asof"].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    ours = _canon(read_training_set(store, "bench_asof").rename(columns=lambda c: c.removeprefix(f"{SOURCE}.")))
    duck = _canon(pd.read_parquet(out_dir / "duckdb.parquet"))
    pan = _canon(pd.read_parquet(out_dir / "pandas.parquet"))
    src = man["sources"][SOURCE]
    return AsofResult(
        size=size.name, label_rows=man["rows"], feature_rows=pq.ParquetDataset(f"{store}/{SOURCE}").read(columns=["cutoff"]).num_rows,
        seconds=med, kernel_seconds=kernels(store, label_days),
        agree={"project": _equal(ours, duck), "pandas merge_asof": _equal(pan, duck)},
        matched_share=src["matched"] / man["rows"], runs=runs,
    )


def summary_rows(res: AsofResult) -> list[list[str]]:
    """Rows for the final summary table."""
    return [
        ["asof_join", f"project / DuckDB ({res.label_rows:,} label rows)", fmt_ratio(res.ratio), "<= 1.5x",
         "yes" if res.ratio <= 1.5 else "NO"],
        ["asof_join", "pandas merge_asof / DuckDB", fmt_ratio(res.seconds["pandas merge_asof"] / res.seconds["duckdb"]), "", ""],
        ["asof_join", "three implementations agree", "yes" if all(res.agree.values()) else "NO", "yes",
         "yes" if all(res.agree.values()) else "NO"],
    ]
