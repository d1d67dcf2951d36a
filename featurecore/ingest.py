"""Ingestion of landing files into typed, deduplicated, validated day partitions.

Every row read ends up in exactly one place: the day partition of its ``ts``
(``raw_events``), the routing area for another day (late or early data), or the
quarantine with a reason, the source file and the column at fault. Nothing is
dropped silently. These functions run inside Dask tasks and write the offline
store themselves; they return only small statistics.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.parquet as pq

from .config import EVENT_REQUIRED, SourceConfig
from .contracts import EventSchema, ProductSchema, UserSchema
from .store import partition_dir, write_partition
from .timeutil import day_start, to_day

EVENT_COLUMNS = ("event_id", "user_id", "ts", "event_type", "product_id", "price", "quantity",
                 "device_type", "referrer", "session_id")
STRING_COLUMNS = ("event_id", "user_id", "event_type", "product_id", "device_type", "referrer", "session_id")
NUMERIC_COLUMNS = ("price", "quantity")
QUARANTINE_COLUMNS = ("source_file", "row_number", "column", "reason", "record")
ROUTED_ASSET = "_routed_events"
# Events more than this many days after their arrival folder are treated as clock errors.
MAX_FUTURE_DAYS = 1

EVENTS_ARROW_SCHEMA = pa_arrow.schema(
    [
        ("event_id", pa_arrow.string()),
        ("user_id", pa_arrow.string()),
        ("ts", pa_arrow.timestamp("ns", tz="UTC")),
        ("event_type", pa_arrow.string()),
        ("product_id", pa_arrow.string()),
        ("price", pa_arrow.float64()),
        ("quantity", pa_arrow.float64()),
        ("device_type", pa_arrow.string()),
        ("referrer", pa_arrow.string()),
        ("session_id", pa_arrow.string()),
        ("source_file", pa_arrow.string()),
        ("row_number", pa_arrow.int64()),
    ]
)
QUARANTINE_ARROW_SCHEMA = pa_arrow.schema(
    [
        ("source_file", pa_arrow.string()),
        ("row_number", pa_arrow.int64()),
        ("column", pa_arrow.string()),
        ("reason", pa_arrow.string()),
        ("record", pa_arrow.string()),
    ]
)


class IngestionError(Exception):
    """A landing file that cannot be read at all; the message names the file."""


@dataclass
class TypedBatch:
    """Typed rows that passed, and quarantined rows with reasons."""

    good: pd.DataFrame
    quarantine: pd.DataFrame


def list_files(folder: Path, file_format: str) -> list[Path]:
    """Data files of a landing folder in a stable order (hidden and temp files ignored)."""
    if not folder.is_dir():
        return []
    suffix = ".parquet" if file_format == "parquet" else ".csv"
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == suffix and not p.name.startswith((".", "_")))


def read_raw_file(path: Path, file_format: str, csv_options: dict | None = None) -> pd.DataFrame:
    """Read one landing file as raw as possible; raise IngestionError naming the file when unreadable."""
    if path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        if file_format == "parquet":
            return pq.read_table(path).to_pandas()
        # Everything as text: typing happens per column so bad cells are attributable.
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], **(csv_options or {}))
    except Exception as exc:  # pyarrow and pandas raise many types for corrupt input
        raise IngestionError(f"{path}: cannot read {file_format} file: {exc}") from exc


def _records_json(df: pd.DataFrame) -> list[str]:
    if df.empty:
        return []
    return df.astype(object).where(df.notna(), None).to_json(orient="records", lines=True, date_format="iso", default_handler=str).splitlines()


def quarantine_rows(raw: pd.DataFrame, mask: np.ndarray, source_file: str, column: str | None, reason) -> pd.DataFrame:
    """Quarantine the rows of `raw` selected by `mask`, keeping the whole original record."""
    rows = raw.loc[mask]
    if rows.empty:
        return empty_quarantine()
    reasons = reason if isinstance(reason, pd.Series) else pd.Series(reason, index=rows.index)
    orig = rows.drop(columns=[c for c in ("source_file", "row_number") if c in rows.columns])
    return pd.DataFrame(
        {
            "source_file": rows["source_file"].astype(str).to_numpy() if "source_file" in rows else source_file,
            "row_number": rows["row_number"].to_numpy() if "row_number" in rows else rows.index.to_numpy(),
            "column": column,
            "reason": reasons.loc[rows.index].astype(str).to_numpy(),
            "record": _records_json(orig),
        }
    )


def empty_quarantine() -> pd.DataFrame:
    """A quarantine frame with no rows and the standard columns."""
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row_number" else object) for c in QUARANTINE_COLUMNS})


def _as_string(s: pd.Series) -> pd.Series:
    """Text values as Python str (object dtype), empty strings and nulls as None."""
    out = s.astype("string")
    out = out.where(out.str.len() > 0)
    return out.astype(object).where(out.notna(), None)


def _parse_ts(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(s.dtype):
        return s.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_numeric_dtype(s.dtype):
        # Bare numbers are ambiguous (seconds? millis?); the contract asks for timestamps.
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    return pd.to_datetime(s.astype("string"), utc=True, errors="coerce", format="ISO8601").astype("datetime64[ns, UTC]")


def type_events(raw: pd.DataFrame, source_file: str, mapping: dict[str, str] | None = None) -> TypedBatch:
    """Rename, coerce and validate one file's events; bad rows go to quarantine with a reason."""
    raw = raw.rename(columns=mapping or {}).reset_index(drop=True)
    raw["source_file"] = source_file
    raw["row_number"] = np.arange(len(raw), dtype="int64")
    if raw.empty:
        return TypedBatch(raw.iloc[:0], empty_quarantine())
    missing = [c for c in EVENT_REQUIRED if c not in raw.columns]
    if missing:
        col = missing[0]
        reason = f"{source_file}: missing required column {col!r} (columns present: {sorted(c for c in raw.columns if c not in ('source_file', 'row_number'))})"
        return TypedBatch(raw.iloc[:0], quarantine_rows(raw, np.ones(len(raw), bool), source_file, col, reason))

    typed = pd.DataFrame(index=raw.index)
    bad = pd.Series(None, index=raw.index, dtype=object)
    bad_col = pd.Series(None, index=raw.index, dtype=object)

    def flag(mask: pd.Series, column: str, why: pd.Series | str) -> None:
        new = mask & bad.isna()
        if new.any():
            bad[new] = why[new] if isinstance(why, pd.Series) else why
            bad_col[new] = column

    for col in EVENT_COLUMNS:
        if col not in raw.columns:
            typed[col] = pd.Series(np.nan if col in NUMERIC_COLUMNS else None, index=raw.index, dtype="float64" if col in NUMERIC_COLUMNS else object)
            continue
        src = raw[col]
        if col == "ts":
            parsed = _parse_ts(src)
            flag(src.isna(), col, "missing value in required column 'ts'")
            flag(parsed.isna() & src.notna(), col, "unparsable timestamp in column 'ts': " + src.astype(str))
            typed[col] = parsed
        elif col in NUMERIC_COLUMNS:
            num = pd.to_numeric(src, errors="coerce") if not pd.api.types.is_bool_dtype(src.dtype) else pd.Series(np.nan, index=src.index)
            flag(num.isna() & src.notna(), col, f"bad type in column {col!r}: not a number: " + src.astype(str))
            typed[col] = num.astype("float64")
        else:
            s = _as_string(src)
            if col in EVENT_REQUIRED:
                flag(s.isna(), col, f"missing value in required column {col!r}")
            typed[col] = s
    typed["source_file"] = raw["source_file"]
    typed["row_number"] = raw["row_number"]

    ok = bad.isna()
    try:
        EventSchema.validate(typed[ok], lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases.dropna(subset=["index"])
        for (column, check), grp in fc.groupby(["column", "check"], dropna=False):
            idx = grp["index"].astype("int64").to_numpy()
            m = pd.Series(False, index=raw.index)
            m.loc[idx] = True
            flag(m, str(column), f"failed check {check} on column {column!r}: " + raw[column].astype(str) if column in raw else f"failed check {check}")
    ok = bad.isna()
    quarantine = quarantine_rows(raw, (~ok).to_numpy(), source_file, None, bad)
    if not quarantine.empty:
        quarantine["column"] = bad_col[~ok].astype(str).to_numpy()
    return TypedBatch(typed[ok].reset_index(drop=True), quarantine)


def deduplicate(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the first copy of each event (by event_id, or all contract columns without one)."""
    if events.empty:
        return events, empty_quarantine()
    events = events.sort_values(["source_file", "row_number"], kind="stable").reset_index(drop=True)
    has_id = events["event_id"].notna()
    key = [c for c in EVENT_COLUMNS]
    dup = pd.Series(False, index=events.index)
    if has_id.any():
        dup[has_id] = events.loc[has_id].duplicated(subset=["event_id"], keep="first")
    if (~has_id).any():
        dup[~has_id] = events.loc[~has_id].duplicated(subset=key, keep="first")
    if not dup.any():
        return events, empty_quarantine()
    first_file = events.loc[has_id & ~dup].set_index("event_id")["source_file"]
    reason = pd.Series("duplicate event (same values in every contract column)", index=events.index, dtype=object)
    with_id = dup & has_id
    reason[with_id] = (
        "duplicate event_id " + events.loc[with_id, "event_id"].astype(str)
        + " (kept the first copy, from " + events.loc[with_id, "event_id"].map(first_file).astype(str) + ")"
    )
    q = quarantine_rows(events, dup.to_numpy(), "", "event_id" if has_id.any() else None, reason)
    return events[~dup].reset_index(drop=True), q


def ingest_events_day(day: str, cfg: SourceConfig) -> dict:
    """Ingest landing folder `day` into raw_events/date=day; route other-day rows; quarantine the bad ones."""
    day = to_day(day).isoformat()
    folder = Path(cfg.landing_root) / "events" / day
    files = list_files(folder, cfg.file_format)
    mapping = cfg.mapping("events")
    good, quarantined = [], []
    rows_in = 0
    per_file = {}
    empty_files = []
    for path in files:
        raw = read_raw_file(path, cfg.file_format, cfg.csv_options)
        rel = str(path.relative_to(cfg.landing_root)) if str(path).startswith(str(cfg.landing_root)) else str(path)
        if raw.empty:
            empty_files.append(rel)
        rows_in += len(raw)
        batch = type_events(raw, rel, mapping)
        good.append(batch.good)
        quarantined.append(batch.quarantine)
        per_file[rel] = {"rows": len(raw), "quarantined": len(batch.quarantine)}
    events = pd.concat(good, ignore_index=True) if good else _empty_events()
    events = _conform(events)

    # Assign rows to the day of their ts: this folder's other-day rows are routed out,
    # rows routed here by other folders are merged in.
    ev_day = events["ts"].dt.floor("D")
    this_start = day_start(day)
    lo, hi = day_start(cfg.partition_start), this_start + pd.Timedelta(days=MAX_FUTURE_DAYS + 1)
    out_of_range = (ev_day < lo) | (ev_day >= hi)
    if out_of_range.any():
        reason = ("ts " + events.loc[out_of_range, "ts"].astype(str) + f" is outside the accepted range [{lo.date()}, {(hi - pd.Timedelta(days=1)).date()}] for arrival folder {day}")
        quarantined.append(quarantine_rows(events, out_of_range.to_numpy(), "", "ts", reason))
    keep = ~out_of_range
    routed_out, routed_digest = {}, {}
    other = keep & (ev_day != this_start)
    for target, grp in events[other].groupby(ev_day[other].dt.strftime("%Y-%m-%d")):
        routed_digest[target] = _write_routed(cfg.store_root, target, day, grp)
        routed_out[target] = len(grp)
    _clear_stale_routes(cfg.store_root, day, keep_targets=set(routed_out))
    routed_in, routed_in_digests = _read_routed(cfg.store_root, day)
    events = pd.concat([events[keep & ~other], routed_in], ignore_index=True) if len(routed_in) else events[keep & ~other]
    events, dups = deduplicate(_conform(events))
    quarantined.append(dups)
    quarantine = pd.concat([q for q in quarantined if len(q)], ignore_index=True) if any(len(q) for q in quarantined) else empty_quarantine()

    events = events.sort_values(["ts", "source_file", "row_number"], kind="stable").reset_index(drop=True)
    written = write_partition(events, cfg.store_root, "raw_events", day, schema=EVENTS_ARROW_SCHEMA)
    write_partition(quarantine, cfg.store_root, "quarantine", day, schema=QUARANTINE_ARROW_SCHEMA)
    reasons = Counter(_reason_kind(r) for r in quarantine["reason"]) if len(quarantine) else Counter()
    invalid = int(len(quarantine) - len(dups))
    return {
        "day": day,
        "files": len(files),
        "empty_folder": not files,
        "empty_files": empty_files,
        "rows_read": int(rows_in),
        "rows_routed_in": int(len(routed_in)),
        "rows_routed_out": int(sum(routed_out.values())),
        "routed_to": routed_out,
        "routed_digest": routed_digest,
        "routed_in_digests": routed_in_digests,
        "rows": int(written["rows"]),
        "bytes": int(written["bytes"]),
        "quarantined": int(len(quarantine)),
        "duplicates": int(len(dups)),
        "invalid": invalid,
        "bad_share": (invalid / rows_in) if rows_in else 0.0,
        "quarantine_reasons": dict(reasons),
        "quarantine_examples": quarantine.head(5)[["source_file", "row_number", "column", "reason"]].to_dict("records") if len(quarantine) else [],
        "per_file": per_file,
        "users": int(events["user_id"].nunique()),
    }


def _reason_kind(reason: str) -> str:
    # Group free-text reasons by their stable prefix for metadata counts.
    for prefix in ("duplicate", "missing required column", "missing value", "unparsable timestamp", "bad type", "failed check", "ts "):
        if prefix in reason:
            return prefix.strip()
    return reason.split(":")[0][:60]


def _empty_events() -> pd.DataFrame:
    return EVENTS_ARROW_SCHEMA.empty_table().to_pandas()


def _conform(df: pd.DataFrame) -> pd.DataFrame:
    """Give a frame exactly the raw_events columns and dtypes."""
    out = pd.DataFrame(index=df.index)
    for field in EVENTS_ARROW_SCHEMA:
        name = field.name
        col = df[name] if name in df.columns else pd.Series(pd.NA, index=df.index)
        if name == "ts":
            out[name] = pd.to_datetime(col, utc=True).astype("datetime64[ns, UTC]")
        elif name in NUMERIC_COLUMNS:
            out[name] = pd.to_numeric(col).astype("float64")
        elif name == "row_number":
            out[name] = col.astype("int64")
        else:
            out[name] = col.astype(object).where(col.notna(), None)
    return out


def _routed_path(store_root: str, target: str, arrival: str) -> Path:
    return partition_dir(store_root, ROUTED_ASSET, target) / f"from-{arrival}.parquet"


def _write_routed(store_root: str, target: str, arrival: str, rows: pd.DataFrame) -> str:
    """Write rows of `arrival`'s folder that belong to day `target`; return a digest of their content."""
    rows = _conform(rows)
    # The digest lets the late-data sensor tell whether the target day already holds these rows.
    digest = hashlib.sha1(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()[:12]
    table = pa_arrow.Table.from_pandas(rows, schema=EVENTS_ARROW_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"digest": digest.encode()})
    path = _routed_path(store_root, target, arrival)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return digest


def _clear_stale_routes(store_root: str, arrival: str, keep_targets: set[str]) -> None:
    # A re-run of an arrival folder replaces what it routed before (idempotence).
    root = Path(store_root) / ROUTED_ASSET
    if not root.is_dir():
        return
    for f in root.glob(f"date=*/from-{arrival}.parquet"):
        if f.parent.name.removeprefix("date=") not in keep_targets:
            f.unlink()


def _read_routed(store_root: str, day: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows other folders routed to `day`, and the digest of each arrival folder's contribution."""
    folder = partition_dir(store_root, ROUTED_ASSET, day)
    files = sorted(folder.glob("from-*.parquet")) if folder.is_dir() else []
    if not files:
        return _empty_events(), {}
    tables = [pq.read_table(f) for f in files]
    digests = {f.stem.removeprefix("from-"): (t.schema.metadata or {}).get(b"digest", b"").decode() for f, t in zip(files, tables)}
    return pa_arrow.concat_tables(tables).to_pandas(), digests


def ingest_dimension(table: str, cfg: SourceConfig) -> dict:
    """Ingest the users or products dimension snapshot: type keys, validate, quarantine bad rows."""
    key = {"users": "user_id", "products": "product_id"}[table]
    schema = {"users": UserSchema, "products": ProductSchema}[table]
    folder = Path(cfg.landing_root) / table
    files = list_files(folder, cfg.file_format)
    if not files:
        raise IngestionError(f"{folder}: no {cfg.file_format} files for the {table} dimension")
    frames, quarantined = [], []
    for path in files:
        raw = read_raw_file(path, cfg.file_format, cfg.csv_options).rename(columns=cfg.mapping(table))
        rel = str(path.relative_to(cfg.landing_root))
        raw["source_file"] = rel
        raw["row_number"] = np.arange(len(raw), dtype="int64")
        if key not in raw.columns:
            quarantined.append(quarantine_rows(raw, np.ones(len(raw), bool), rel, key, f"{rel}: missing required column {key!r}"))
            continue
        frames.append(raw)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[key, "source_file", "row_number"])
    df[key] = _as_string(df[key])
    if "price" in df.columns:
        num = pd.to_numeric(df["price"], errors="coerce")
        badp = num.isna() & df["price"].notna()
        quarantined.append(quarantine_rows(df, badp.to_numpy(), "", "price", "bad type in column 'price': not a number: " + df["price"].astype(str)))
        df = df[~badp].assign(price=num[~badp].astype("float64"))
    for col in ("category", "brand"):
        if col in df.columns:
            df[col] = _as_string(df[col])
    missing = df[key].isna()
    quarantined.append(quarantine_rows(df, missing.to_numpy(), "", key, f"missing value in required column {key!r}"))
    df = df[~missing]
    dup = df.duplicated(subset=[key], keep="last")  # later files/rows are newer versions
    quarantined.append(quarantine_rows(df, dup.to_numpy(), "", key, "duplicate " + key + " " + df[key].astype(str) + " (kept the last version)"))
    df = df[~dup]
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases.dropna(subset=["index"])
        m = df.index.isin(fc["index"].astype("int64"))
        quarantined.append(quarantine_rows(df, m, "", str(fc["column"].iloc[0]), "failed check: " + "; ".join(sorted(set(fc["check"].astype(str))))))
        df = df[~m]
    quarantine = pd.concat([q for q in quarantined if len(q)], ignore_index=True) if any(len(q) for q in quarantined) else empty_quarantine()
    df = df.drop(columns=["row_number"]).reset_index(drop=True)
    out = Path(cfg.store_root) / table
    written = _write_snapshot(df, out)
    _write_snapshot(quarantine, Path(cfg.store_root) / f"{table}_quarantine")
    return {"rows": len(df), "quarantined": len(quarantine), "files": len(files), "bytes": written,
            "columns": len(df.columns), "bad_share": len(quarantine) / max(len(df) + len(quarantine), 1),
            "quarantine_examples": quarantine.head(5)[["source_file", "row_number", "column", "reason"]].to_dict("records") if len(quarantine) else []}


def _write_snapshot(df: pd.DataFrame, folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".snapshot.parquet.tmp"
    df.to_parquet(tmp, index=False)
    tmp.replace(folder / "snapshot.parquet")
    return (folder / "snapshot.parquet").stat().st_size


def read_snapshot(store_root: str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a dimension snapshot written by ingest_dimension."""
    return pd.read_parquet(Path(store_root) / table / "snapshot.parquet", columns=columns)
