"""Labels: derived from events, or supplied as a table in the landing zone (no Dagster imports).

Stored like any asset, ``<store>/labels/date=L/part-0.parquet``, one partition per UTC
day of ``label_ts``. Every partition has the columns of the landing contract:
``entity_id`` (string), ``label_ts`` (UTC timestamp) and ``label`` (float64).
``<store>/labels/_manifest.json`` says what the partitions hold: the kind, the spec, the
days written, the days still pending and the row counts. A labels run rewrites the whole
asset, so derived and supplied labels never mix.

Derived label (demo default ``purchase_7d``). For label day L, ``label_ts = L 00:00 UTC``
(the cutoff of feature day L-1):

- population: entities with at least one event in the ``lookback_days`` before label_ts,
  i.e. the raw_events partitions L-lookback .. L-1;
- ``label = 1`` when the entity has at least one ``event_type`` event in
  ``[label_ts, label_ts + horizon)``, i.e. partitions L .. L+horizon-1, else 0.

So a label only reads events at or after its label_ts, and features only read events
before it. A derived label for L exists only once every horizon partition L .. L+H-1 of
raw_events exists. Earlier than that the day is *pending*: it is reported and not
written, so a training set never holds a label computed from a partial horizon.

Supplied labels come from ``<landing>/labels/*.parquet|*.csv`` with the columns
``entity_id, label_ts, label``, renamed by the ``labels`` column mapping of the source
config. Rows with a null entity, an unparsable timestamp (ISO 8601; naive times are UTC)
or a non-numeric label are quarantined with a reason. For a duplicate
``(entity_id, label_ts)`` the last copy wins and the others are quarantined.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import SourceConfig
from .ingest import IngestionError, _as_string, _parse_ts, list_files, quarantine_rows, read_raw_file
from .store import partition_dir, partition_exists, write_partition
from .timeutil import day_key, day_range, day_start, shift_day

LABELS_ASSET = "labels"
LABEL_COLUMNS = ("entity_id", "label_ts", "label")
MANIFEST = "_manifest.json"
LABEL_SCHEMA = pa.schema([("entity_id", pa.string()), ("label_ts", pa.timestamp("ns", tz="UTC")), ("label", pa.float64())])


@dataclass(frozen=True)
class LabelSpec:
    """A declared label: `derived` from events or `supplied` in the landing zone."""

    kind: str = "derived"
    name: str = "purchase_7d"
    event_type: str = "purchase"
    horizon_days: int = 7
    lookback_days: int = 30
    entity: str = "user_id"
    # Days after label_ts at which a supplied label becomes known (derived: the horizon).
    supplied_delay_days: int = 0

    def __post_init__(self):
        if self.kind not in ("derived", "supplied"):
            raise ValueError(f"label kind {self.kind!r}: expected 'derived' or 'supplied'")
        if self.horizon_days < 1 or self.lookback_days < 1:
            raise ValueError("horizon_days and lookback_days must be >= 1")

    @property
    def delay(self) -> pd.Timedelta:
        """How long after label_ts the label is known (used by time-aware target encoding and CV gaps)."""
        return pd.Timedelta(days=self.horizon_days if self.kind == "derived" else self.supplied_delay_days)

    def describe(self) -> str:
        """One sentence for metadata."""
        if self.kind == "supplied":
            return "supplied table <landing>/labels (entity_id, label_ts, label)"
        return (f"{self.name}: 1 if the {self.entity} has a '{self.event_type}' event in the {self.horizon_days} days "
                f"from label_ts (label_ts = day start, UTC); population: {self.entity}s with an event in the "
                f"{self.lookback_days} days before label_ts")


# --------------------------------------------------------------------------- derived


def horizon_days(day: str, spec: LabelSpec) -> list[str]:
    """raw_events partitions a derived label of label day `day` reads (L .. L+H-1)."""
    return day_range(day, shift_day(day, spec.horizon_days - 1))


def population_days(day: str, spec: LabelSpec) -> list[str]:
    """raw_events partitions that define the population of label day `day` (L-lookback .. L-1)."""
    return day_range(shift_day(day, -spec.lookback_days), shift_day(day, -1))


def label_available(store_root: str, day: str, spec: LabelSpec, events_asset: str = "raw_events") -> bool:
    """True when every horizon partition of a derived label day exists."""
    return all(partition_exists(store_root, events_asset, d) for d in horizon_days(day, spec))


def daily_activity(store_root: str, day: str, entity: str, event_type: str, events_asset: str = "raw_events") -> pd.DataFrame:
    """Per entity: events and target events of one raw_events partition (small; a Dask task)."""
    files = sorted(partition_dir(store_root, events_asset, day).glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(f, columns=[entity, "event_type"]) for f in files]) if files else None
    if t is None or t.num_rows == 0:
        return pd.DataFrame({entity: pd.Series(dtype=object), "n_events": pd.Series(dtype="int64"), "n_target": pd.Series(dtype="int64")})
    t = t.append_column("is_target", pc.cast(pc.equal(t["event_type"], event_type), pa.int64()))
    g = t.group_by(entity).aggregate([("event_type", "count"), ("is_target", "sum")])
    return pd.DataFrame({entity: g[entity].to_pandas(), "n_events": g["event_type_count"].to_numpy(), "n_target": g["is_target_sum"].to_numpy()})


def derive_label_day(day: str, population: list[pd.DataFrame], horizon: list[pd.DataFrame], spec: LabelSpec) -> pd.DataFrame:
    """Label rows of one label day from the activity of its population and horizon days."""
    ent = spec.entity
    pop = [a[ent] for a in population if a is not None and len(a)]
    ids = pd.unique(pd.concat(pop, ignore_index=True)) if pop else np.array([], dtype=object)
    hits = [a.loc[a["n_target"] > 0, ent] for a in horizon if a is not None and len(a)]
    positive = pd.concat(hits, ignore_index=True) if hits else pd.Series([], dtype=object)
    ids = pd.Series(np.sort(np.asarray(ids, dtype=object)), dtype=object)
    return pd.DataFrame({
        "entity_id": ids,
        "label_ts": pd.Series(day_start(day), index=ids.index).astype("datetime64[ns, UTC]"),
        "label": ids.isin(positive).astype("float64"),
    })


def write_derived_day(store_root: str, day: str, population: list, horizon: list, spec: LabelSpec, asset: str = LABELS_ASSET) -> dict:
    """Derive and write one label day (a Dask task); returns small statistics."""
    t0 = time.perf_counter()
    df = derive_label_day(day, population, horizon, spec)
    w = write_partition(df, store_root, asset, day, schema=LABEL_SCHEMA)
    return {"day": day, "rows": len(df), "positives": int(df["label"].sum()), "bytes": w["bytes"], "seconds": time.perf_counter() - t0}


def build_derived_labels(client, store_root: str, days: list[str], spec: LabelSpec, asset: str = LABELS_ASSET,
                         events_asset: str = "raw_events") -> dict:
    """Derive labels for `days` on Dask: one activity task per raw_events day, one write task per label day."""
    available = [d for d in days if label_available(store_root, d, spec, events_asset)]
    pending = [d for d in days if d not in set(available)]
    need = sorted({x for d in available for x in population_days(d, spec) + horizon_days(d, spec)})
    need = [d for d in need if partition_exists(store_root, events_asset, d)]
    act = {d: client.submit(daily_activity, store_root, d, spec.entity, spec.event_type, events_asset, pure=False) for d in need}
    futs = [
        client.submit(write_derived_day, store_root, d,
                      [act[x] for x in population_days(d, spec) if x in act],
                      [act[x] for x in horizon_days(d, spec)], spec, asset, pure=False)
        for d in available
    ]
    stats = client.gather(futs)
    return {"days": stats, "pending": pending}


# --------------------------------------------------------------------------- supplied


def read_supplied_labels(cfg: SourceConfig) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Typed, validated supplied labels, the quarantined rows, and the files read."""
    folder = Path(cfg.landing_root) / "labels"
    files = list_files(folder, "parquet") + list_files(folder, "csv")
    if not files:
        raise IngestionError(f"{folder}: no labels table (*.parquet or *.csv with entity_id, label_ts, label)")
    frames, quarantined = [], []
    for path in files:
        fmt = "csv" if path.suffix == ".csv" else "parquet"
        raw = read_raw_file(path, fmt, cfg.csv_options).rename(columns=cfg.mapping("labels"))
        rel = str(path.relative_to(cfg.landing_root))
        missing = [c for c in LABEL_COLUMNS if c not in raw.columns]
        if missing:
            raise IngestionError(f"{path}: labels table lacks column(s) {missing}; has {list(raw.columns)} "
                                 "(map your names in column_mapping.labels of the source config)")
        raw = raw.assign(source_file=rel, row_number=np.arange(len(raw), dtype="int64"))
        frames.append(raw)
    df = pd.concat(frames, ignore_index=True)
    ent = _as_string(df["entity_id"])
    ts = _parse_ts(df["label_ts"])
    lab = pd.to_numeric(df["label"], errors="coerce")
    bad_ent, bad_ts = ent.isna().to_numpy(), ts.isna().to_numpy()
    bad_lab = (lab.isna() | ~np.isfinite(lab.fillna(0))).to_numpy()
    quarantined.append(quarantine_rows(df, bad_ent, "", "entity_id", "missing value in required column 'entity_id'"))
    quarantined.append(quarantine_rows(df, bad_ts & ~bad_ent, "", "label_ts", "unparsable label_ts (ISO 8601 expected): " + df["label_ts"].astype(str)))
    quarantined.append(quarantine_rows(df, bad_lab & ~bad_ent & ~bad_ts, "", "label", "label is not a number: " + df["label"].astype(str)))
    keep = ~(bad_ent | bad_ts | bad_lab)
    out = pd.DataFrame({"entity_id": ent[keep].to_numpy(dtype=object), "label_ts": ts[keep].to_numpy(),
                        "label": lab[keep].astype("float64").to_numpy()}, index=df.index[keep])
    out["label_ts"] = out["label_ts"].dt.tz_localize("UTC") if out["label_ts"].dt.tz is None else out["label_ts"]
    dup = out.duplicated(subset=["entity_id", "label_ts"], keep="last").to_numpy()
    if dup.any():
        quarantined.append(quarantine_rows(df.loc[out.index], dup, "", "entity_id",
                                           "duplicate (entity_id, label_ts): kept the last copy"))
    out = out[~dup].reset_index(drop=True)
    q = [x for x in quarantined if len(x)]
    return out, (pd.concat(q, ignore_index=True) if q else quarantined[0].iloc[:0]), [str(f) for f in files]


def write_supplied_labels(cfg: SourceConfig, days: list[str] | None = None, asset: str = LABELS_ASSET) -> dict:
    """Read, validate and write supplied labels, one partition per label_ts day (a Dask task)."""
    t0 = time.perf_counter()
    labels, quarantine, files = read_supplied_labels(cfg)
    day = labels["label_ts"].dt.strftime("%Y-%m-%d")
    if days is not None:
        keep = day.isin(set(days))
        labels, day = labels[keep], day[keep]
    stats = []
    for d, part in labels.groupby(day, sort=True):
        part = part.sort_values(["label_ts", "entity_id"], kind="stable")
        w = write_partition(part, cfg.store_root, asset, d, schema=LABEL_SCHEMA)
        stats.append({"day": d, "rows": len(part), "positives": int((part["label"] > 0).sum()), "bytes": w["bytes"]})
    qdir = Path(cfg.store_root) / f"{asset}_quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    quarantine.astype({"record": str}).to_parquet(qdir / "snapshot.parquet", index=False)
    return {"days": stats, "pending": [], "quarantined": len(quarantine), "files": files,
            "quarantine_examples": quarantine.head(5)[["source_file", "row_number", "column", "reason"]].to_dict("records"),
            "seconds": time.perf_counter() - t0}


def has_supplied_labels(cfg: SourceConfig) -> bool:
    """True when the landing zone holds a labels table."""
    folder = Path(cfg.landing_root) / "labels"
    return bool(list_files(folder, "parquet") + list_files(folder, "csv"))


# --------------------------------------------------------------------------- the asset as a whole


def clear_labels(store_root: str, asset: str = LABELS_ASSET) -> None:
    """Remove every label partition and the manifest (a labels run rewrites the whole asset)."""
    shutil.rmtree(Path(store_root) / asset, ignore_errors=True)


def write_manifest(store_root: str, spec: LabelSpec, result: dict, start: str, end: str, asset: str = LABELS_ASSET) -> dict:
    """Record what the label partitions hold; training sets copy it into their manifest."""
    days = result["days"]
    rows = sum(s["rows"] for s in days)
    pos = sum(s["positives"] for s in days)
    man = {
        "asset": asset, "spec": asdict(spec), "description": spec.describe(), "start": start, "end": end,
        "days": [s["day"] for s in days], "pending_days": result.get("pending", []),
        "rows": rows, "positives": pos, "positive_rate": (pos / rows) if rows else None,
        "rows_per_day": {s["day"]: s["rows"] for s in days},
        "delay_seconds": int(spec.delay.total_seconds()), "quarantined": result.get("quarantined", 0),
    }
    path = Path(store_root) / asset / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(man, indent=1, default=str))
    os.replace(tmp, path)
    return man


def read_manifest(store_root: str, asset: str = LABELS_ASSET) -> dict:
    """The labels manifest; FileNotFoundError names the asset when labels were never built."""
    path = Path(store_root) / asset / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no labels under {path.parent}: materialize the `{asset}` asset first")
    return json.loads(path.read_text())


def build_labels(client, cfg: SourceConfig, spec: LabelSpec, start: str, end: str, asset: str = LABELS_ASSET) -> dict:
    """Rebuild the labels asset for label days start..end from the declared source; returns the manifest."""
    days = day_range(start, end)
    clear_labels(cfg.store_root, asset)
    if spec.kind == "derived":
        result = build_derived_labels(client, cfg.store_root, days, spec, asset)
    else:
        result = client.submit(write_supplied_labels, cfg, days, asset, pure=False).result()
    return write_manifest(cfg.store_root, spec, result, day_key(start), day_key(end), asset)
