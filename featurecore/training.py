"""Point-in-time training sets: labels as-of-joined with the sources of a feature set, on Dask.

A *source* is any asset in the feature layout: ``<store>/<source>/date=D/part-*.parquet``
holding key columns, ``cutoff`` and feature columns. That covers feature groups and
candidate assets alike. A *static* source is a dimension-style table
``<store>/<source>/snapshot.parquet`` (e.g. ``users``, ``users_wide``), joined on the keys
alone. Static attributes are assumed time-invariant: the snapshot is what we know now,
so an attribute that does change over time would leak its later value into earlier
rows. Date and timestamp attributes of a static source are served as the number of days
from the attribute to label_ts (``signup_date`` -> days since signup at label_ts).

``build_training_set`` splits the label days into chunks, one Dask task each. A task
reads its labels and, per source, only the partitions that can match: days from the
chunk's first label day minus the TTL up to its last label day, and only the feature set's
columns. It runs the as-of join (``featurecore.asof``) and writes
``<store>/training_sets/<name>/date=L/part-0.parquet`` per label day itself. Only
counts come back to the caller, which writes ``manifest.json``: feature set and source
versions, label spec, date range, rows per day and per source matched/expired/missing.

Columns: the entity key(s) (the labels' ``entity_id`` renamed to the feature set's first
key), ``label_ts``, ``label``, then ``<source>.<feature>`` for every feature of the set,
then, for the leakage audit, ``<source>.cutoff``: the cutoff of the row that was used,
null unless matched.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .asof import EXPIRED, MATCHED, MISSING, asof_indices, take_rows
from .feature_sets import FeatureSet
from .labels import LABELS_ASSET, read_manifest as read_labels_manifest
from .store import partition_dir, partition_exists, write_partition
from .timeutil import day_key, day_range, shift_day

TRAINING_ROOT = "training_sets"
SNAPSHOT = "snapshot.parquet"
MANIFEST = "manifest.json"
NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True)
class SourceSpec:
    """One source of a feature set as the join needs it."""

    name: str
    features: tuple[str, ...]
    keys: tuple[str, ...]
    ttl_seconds: int | None
    static: bool = False


def is_static(store_root: str, source: str) -> bool:
    """True for a dimension-style source (`<source>/snapshot.parquet`, no day partitions)."""
    return (Path(store_root) / source / SNAPSHOT).is_file()


def source_days(store_root: str, source: str) -> list[str]:
    """Existing day partitions of a source, sorted."""
    base = Path(store_root) / source
    return sorted(p.name[5:] for p in base.glob("date=*") if p.is_dir()) if base.is_dir() else []


def source_specs(store_root: str, fs: FeatureSet) -> list[SourceSpec]:
    """The feature set's sources with their features, keys and TTL (static sources detected in the store)."""
    out = []
    for src in fs.sources:
        ttl = fs.ttl_seconds.get(src)
        out.append(SourceSpec(src, tuple(fs.features_of(src)), tuple(fs.entity_keys), ttl, is_static(store_root, src)))
    return out


def source_version(store_root: str, source: str) -> str:
    """A version string for a source: the declared group version, a candidate artifact version, or a snapshot digest."""
    from .groups import GROUPS

    if source in GROUPS:
        return f"group v{GROUPS[source].version}"
    art = Path(store_root) / "_artifacts" / source
    if art.is_dir():
        versions = sorted((p for p in art.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if versions:
            return f"artifact {versions[-1].name}"
    snap = Path(store_root) / source / SNAPSHOT
    if snap.is_file():
        st = snap.stat()
        return "snapshot " + hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    return "unversioned"


def training_dir(store_root: str, name: str) -> Path:
    """Folder of a training set."""
    return Path(store_root) / TRAINING_ROOT / name


# --------------------------------------------------------------------------- reading


def _read_partitions(store_root: str, source: str, days: list[str], columns: list[str],
                     keep: tuple[str, pa.Array] | None = None) -> pa.Table | None:
    """The `columns` of a source's existing partitions among `days` (optionally only rows whose key is in `keep`)."""
    tables = []
    for d in days:
        if not partition_exists(store_root, source, d):
            continue
        for f in sorted(partition_dir(store_root, source, d).glob("*.parquet")):
            names = set(pq.read_schema(f).names)
            t = pq.read_table(f, columns=[c for c in columns if c in names])
            if keep is not None:
                t = t.filter(pc.is_in(t[keep[0]], value_set=keep[1].cast(t[keep[0]].type)))
            for c in columns:  # a feature absent from a day's file is null there, not an error
                if c not in t.column_names:
                    t = t.append_column(c, pa.nulls(t.num_rows, type=pa.float64()))
            tables.append(t.select(columns))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _asof_source(store_root: str, src: SourceSpec, labels: pa.Table, l_ns: np.ndarray, first: str, last: str,
                 lookback_batch: int = 7) -> tuple[pa.Table, pa.Array, np.ndarray]:
    """Features, used cutoffs and statuses of one partitioned source for every label row.

    Reads the partitions of the label days first, then older ones a batch at a time, and
    only for label rows still without a row, down to the TTL. With dense sources one
    extra day is usually enough, so a 60-day TTL does not mean 60 partition reads.
    """
    n = labels.num_rows
    cols = [*src.keys, "cutoff", *src.features]
    if src.ttl_seconds is None:
        existing = source_days(store_root, src.name)
        bound = existing[0] if existing else last
    else:
        bound = shift_day(first, -(math.ceil(src.ttl_seconds / 86_400) + 1))
    ttl = pd.Timedelta(seconds=src.ttl_seconds) if src.ttl_seconds is not None else None
    status = np.full(n, MISSING, dtype=np.int8)
    idx = np.full(n, -1, dtype=np.int64)
    pending = np.arange(n)
    parts, offset = [], 0
    hi, lo = last, shift_day(first, -1)
    while pending.size and hi >= bound:
        days = day_range(max(lo, bound), hi)
        keep = None
        if parts or offset:  # older batches: only rows of entities still unresolved
            keep = (src.keys[0], pc.unique(labels[src.keys[0]].take(pa.array(pending))))
        t = _read_partitions(store_root, src.name, days, cols, keep)
        if t is not None and t.num_rows:
            sub = [labels[k].take(pa.array(pending)) for k in src.keys]
            i, st = asof_indices(sub, l_ns[pending], [t[k] for k in src.keys], t["cutoff"], ttl)
            found = st != MISSING
            status[pending[found]] = st[found]
            ok = st == MATCHED
            idx[pending[ok]] = i[ok] + offset
            parts.append(t.select(["cutoff", *src.features]))
            offset += t.num_rows
            pending = pending[~found]
        hi, lo = shift_day(max(lo, bound), -1), shift_day(lo, -lookback_batch)
    if not parts:
        got = pa.table({"cutoff": pa.nulls(n, pa.timestamp("ns", tz="UTC")), **{f: pa.nulls(n, pa.float64()) for f in src.features}})
    else:
        got = take_rows(pa.concat_tables(parts, promote_options="permissive"), idx)
    return got.select(list(src.features)), got["cutoff"], status


def static_values(table: pa.Table, at_ns) -> pa.Table:
    """Static attributes as a feature set serves them at `at_ns` (one time, or one per row).

    Dates and timestamps become days elapsed at that time; other columns are unchanged.
    The training join (at each row's label_ts) and the online store (at the cutoff of the
    day it materializes) both use this, so they serve the same values.
    """
    cols = []
    for name in table.column_names:
        col = table[name]
        if pa.types.is_date(col.type) or pa.types.is_timestamp(col.type):
            ts = col.cast(pa.timestamp("ns", tz="UTC") if pa.types.is_date(col.type) else pa.timestamp("ns", tz=col.type.tz or "UTC"))
            valid = ts.is_valid().to_numpy(zero_copy_only=False)
            ns = ts.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            col = pa.array((np.asarray(at_ns, dtype=np.int64) - ns) / NS_PER_DAY, mask=~valid, type=pa.float64())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def static_rows(store_root: str, source: str, keys: tuple[str, ...], features: list[str], at_ns: int) -> pa.Table:
    """Every entity of a static source: its keys, then `features` as served at `at_ns` (see `static_values`)."""
    t = pq.read_table(Path(store_root) / source / SNAPSHOT, columns=[*keys, *features])
    return pa.table([*(t[k] for k in keys), *static_values(t.select(list(features)), at_ns).columns],
                    names=[*keys, *features])


def _static_table(store_root: str, src: SourceSpec, label_ts_ns: np.ndarray, idx: np.ndarray) -> pa.Table:
    """Static attributes at `idx`; dates and timestamps become days elapsed at label_ts."""
    t = pq.read_table(Path(store_root) / src.name / SNAPSHOT, columns=list(src.features))
    return static_values(take_rows(t, idx), label_ts_ns)


def _read_labels(store_root: str, labels_asset: str, days: list[str]) -> tuple[pa.Table, list[tuple[str, int, int]]]:
    tables, spans, offset = [], [], 0
    for d in days:
        if not partition_exists(store_root, labels_asset, d):
            continue
        files = sorted(partition_dir(store_root, labels_asset, d).glob("*.parquet"))
        t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
        tables.append(t)
        spans.append((d, offset, offset + t.num_rows))
        offset += t.num_rows
    if not tables:
        return pa.table({"entity_id": pa.array([], pa.string()), "label_ts": pa.array([], pa.timestamp("ns", tz="UTC")),
                         "label": pa.array([], pa.float64())}), []
    return pa.concat_tables(tables, promote_options="permissive"), spans


# --------------------------------------------------------------------------- the join task


def join_labels(store_root: str, labels: pa.Table, sources: list[SourceSpec], label_days: list[str], audit: bool = True) -> tuple[pa.Table, dict]:
    """As-of join of a table of labels with every source (pure; used by the Dask task and by tests).

    `labels` has ``entity_id`` (or the first key's name), ``label_ts``, ``label`` and any
    further key columns. Returns the joined table and per-source status counts.
    """
    keys = list(sources[0].keys) if sources else ["entity_id"]
    if "entity_id" in labels.column_names and keys[0] not in labels.column_names:
        labels = labels.rename_columns([keys[0] if c == "entity_id" else c for c in labels.column_names])
    missing = [k for k in keys if k not in labels.column_names]
    if missing:
        raise ValueError(f"labels lack key column(s) {missing} of the feature set (keys {keys})")
    l_ts = labels["label_ts"]
    l_ns = l_ts.combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False) if labels.num_rows else np.zeros(0, np.int64)
    out_cols, out_names = [labels[c] for c in labels.column_names], list(labels.column_names)
    counts = {}
    first, last = (min(label_days), max(label_days)) if label_days else (None, None)
    for src in sources:
        if src.static:
            snap = pq.read_table(Path(store_root) / src.name / SNAPSHOT, columns=list(src.keys))
            idx, status = asof_indices([labels[k] for k in src.keys], l_ns, [snap[k] for k in src.keys],
                                       np.full(snap.num_rows, np.iinfo(np.int64).min, dtype=np.int64), None)
            got = _static_table(store_root, src, l_ns, idx)
            cut = None
        else:
            got, cut, status = _asof_source(store_root, src, labels, l_ns, first, last)
        for f in src.features:
            out_cols.append(got[f])
            out_names.append(f"{src.name}.{f}")
        if audit and cut is not None:
            out_cols.append(cut)
            out_names.append(f"{src.name}.cutoff")
        counts[src.name] = {"matched": int((status == MATCHED).sum()), "expired": int((status == EXPIRED).sum()),
                            "missing": int((status == MISSING).sum())}
    return pa.table(out_cols, names=out_names), counts


def join_chunk(store_root: str, label_days: list[str], sources: list[SourceSpec], labels_asset: str, out_asset: str,
               audit: bool = True) -> list[dict]:
    """Dask task: join the labels of `label_days` with every source and write one partition per label day."""
    t0 = time.perf_counter()
    labels, spans = _read_labels(store_root, labels_asset, label_days)
    joined, counts = join_labels(store_root, labels, sources, label_days, audit)
    join_s = time.perf_counter() - t0
    stats = []
    for d, lo, hi in spans:
        part = joined.slice(lo, hi - lo)
        size = write_partition(part, store_root, out_asset, d)["bytes"]
        lab = part["label"].to_numpy(zero_copy_only=False)
        stats.append({"day": d, "rows": part.num_rows, "bytes": size, "label_sum": float(np.nansum(lab))})
    if stats:
        stats[0]["counts"] = counts
        stats[0]["seconds"] = time.perf_counter() - t0
        stats[0]["join_seconds"] = join_s
    return stats


# --------------------------------------------------------------------------- the builder


def _chunks(days: list[str], chunk_days: int) -> list[list[str]]:
    return [days[i : i + chunk_days] for i in range(0, len(days), chunk_days)]


def build_training_set(
    client,
    store_root: str,
    fs: FeatureSet,
    start: str,
    end: str,
    *,
    name: str | None = None,
    labels_asset: str = LABELS_ASSET,
    chunk_days: int | None = None,
    audit: bool = True,
) -> dict:
    """Build a point-in-time training set for label days start..end on Dask; returns (and writes) the manifest."""
    t0 = time.perf_counter()
    name = name or f"{fs.name}_v{fs.version}"
    sources = source_specs(store_root, fs)
    for s in sources:
        if not s.static and not source_days(store_root, s.name):
            raise FileNotFoundError(f"training set {name}: source {s.name!r} has no partitions under {store_root}")
    days = [d for d in day_range(start, end) if partition_exists(store_root, labels_asset, d)]
    if not days:
        raise FileNotFoundError(f"training set {name}: no label partitions of `{labels_asset}` between {start} and {end}")
    out_asset = f"{TRAINING_ROOT}/{name}"
    shutil.rmtree(Path(store_root) / out_asset, ignore_errors=True)  # a training set is rebuilt as a whole
    if chunk_days is None:
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        chunk_days = max(1, math.ceil(len(days) / workers))
    futs = [client.submit(join_chunk, store_root, c, sources, labels_asset, out_asset, audit, pure=False)
            for c in _chunks(days, chunk_days)]
    stats = [s for part in client.gather(futs) for s in part]
    counts: dict[str, dict] = {}
    for s in stats:
        for src, c in s.get("counts", {}).items():
            agg = counts.setdefault(src, {"matched": 0, "expired": 0, "missing": 0})
            for k, v in c.items():
                agg[k] += v
    rows = sum(s["rows"] for s in stats)
    try:
        labels_man = read_labels_manifest(store_root, labels_asset)
    except FileNotFoundError:
        labels_man = {}
    feature_cols = [f"{s.name}.{f}" for s in sources for f in s.features]
    manifest = {
        "name": name,
        "path": str(training_dir(store_root, name)),
        "feature_set": {"name": fs.name, "version": fs.version,
                        "definition_sha": hashlib.sha1(json.dumps(fs.definition(), sort_keys=True).encode()).hexdigest()[:12]},
        "labels": {k: labels_man.get(k) for k in ("asset", "spec", "description", "delay_seconds")} | {"asset": labels_asset},
        "start": day_key(start), "end": day_key(end), "days": [s["day"] for s in stats],
        "rows": rows, "rows_per_day": {s["day"]: s["rows"] for s in stats},
        "label_mean": (sum(s["label_sum"] for s in stats) / rows) if rows else None,
        "bytes": sum(s["bytes"] for s in stats),
        "sources": {s.name: {"version": source_version(store_root, s.name), "static": s.static, "ttl_seconds": s.ttl_seconds,
                             "features": len(s.features), **counts.get(s.name, {})} for s in sources},
        "columns": {"keys": list(fs.entity_keys), "label_ts": "label_ts", "label": "label", "features": feature_cols,
                    "audit": [f"{s.name}.cutoff" for s in sources if not s.static] if audit else []},
        "chunks": len(futs), "chunk_days": chunk_days,
        "task_seconds": round(sum(s.get("seconds", 0.0) for s in stats), 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "notes": "static sources are joined on keys and assumed time-invariant; rows without a feature row within a source's TTL are kept with nulls",
    }
    path = training_dir(store_root, name) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=str))
    os.replace(tmp, path)
    return manifest


def read_manifest(store_root: str, name: str) -> dict:
    """A training set's manifest."""
    path = training_dir(store_root, name) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no training set {name!r} under {path.parent}")
    return json.loads(path.read_text())


def read_training_table(store_root: str, name: str, columns: list[str] | None = None, days: list[str] | None = None) -> pa.Table:
    """A training set (or some of its days / columns) as one Arrow table, in label-day order."""
    man = read_manifest(store_root, name)
    days = [d for d in man["days"] if days is None or d in set(days)]
    files = [f for d in days for f in sorted(partition_dir(store_root, f"{TRAINING_ROOT}/{name}", d).glob("*.parquet"))]
    if not files:
        return pa.table({c: pa.array([], pa.float64()) for c in columns or []})
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="permissive")


def read_training_set(store_root: str, name: str, columns: list[str] | None = None, days: list[str] | None = None) -> pd.DataFrame:
    """A training set (or some of its days / columns) as pandas, in label-day order."""
    return read_training_table(store_root, name, columns, days).to_pandas()


def training_set_ddf(store_root: str, name: str, columns: list[str] | None = None):
    """A training set as a lazy Dask dataframe, one partition per label day."""
    import dask.dataframe as dd

    return dd.read_parquet([str(partition_dir(store_root, f"{TRAINING_ROOT}/{name}", d) / "part-0.parquet")
                            for d in read_manifest(store_root, name)["days"]], columns=columns)
