"""Shared parts of the candidate generators: errors, cadence, shards, staged partition writes,
versioned artifacts, windowed reads of the store and the output contract.

Output contract (same layout as feature groups): ``<store>/<asset>/date=D/part-*.parquet``
with the entity key column(s), ``cutoff`` (``D+1 00:00 UTC``, tz-aware) and the candidate
columns (float64 where numeric). A partition is written as one Parquet part per entity
shard, each by the Dask worker that computed it, into a staging folder that replaces
``date=D`` only when every shard succeeded, so a failed shard never leaves half a day.
"""

from __future__ import annotations

import time

import hashlib
import json
import math
import os
import uuid
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..store import partition_dir, partition_exists, remove_folder, replace_folder
from ..timeutil import cutoff, day_range, shift_day, to_day

ARTIFACTS = "_artifacts"


class CandidateError(Exception):
    """A candidate computation that cannot proceed; the message names asset, day and shard."""


class EntityConfigError(CandidateError):
    """The configured entity / time / value columns do not exist in the source table."""


class EmptyShardError(CandidateError):
    """A shard with no entities, or whose entities have no rows in the source."""


class SeriesTooShortError(CandidateError):
    """A series has fewer points than the configured calculators need."""


# --------------------------------------------------------------------------- cadence


@dataclass(frozen=True)
class Cadence:
    """Which partition days a costly candidate asset computes: every day, a weekday, or every N days."""

    spec: str = "weekly"

    _WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

    def __post_init__(self):
        self.describe()  # validate early, with a message naming the accepted forms

    def describe(self) -> str:
        """A human sentence for metadata notes."""
        s = self.spec.strip().lower()
        if s == "daily":
            return "every day"
        if s == "weekly":
            return "Sundays (weekly)"
        if s.startswith("weekly:") and s[7:] in self._WEEKDAYS:
            return f"{s[7:].capitalize()}days (weekly)"
        if s.startswith("every:") and s[6:].isdigit() and int(s[6:]) > 0:
            return f"every {int(s[6:])} days counted from the partition start"
        raise ValueError(f"cadence {self.spec!r}: expected 'daily', 'weekly', 'weekly:<mon..sun>' or 'every:<N>'")

    def includes(self, day: str, start: str) -> bool:
        """True when partition `day` is computed under this cadence (`start`: first partition)."""
        s = self.spec.strip().lower()
        d = to_day(day)
        if s == "daily":
            return True
        if s.startswith("weekly"):
            wd = 6 if s == "weekly" else self._WEEKDAYS.index(s[7:])
            return d.weekday() == wd
        return (d - to_day(start)).days % int(s[6:]) == 0


# --------------------------------------------------------------------------- shards


def shard_count(n_entities: int, n_workers: int, shards_per_worker: int = 3, min_shard_entities: int = 50,
                floor: int = 10, days_in_run: int = 1) -> int:
    """Entity shards for one day: a few per worker, none smaller than `min_shard_entities`, and
    enough tasks over the run's days to keep every worker busy (a worker's share under `floor`
    entities is not worth a task)."""
    if n_entities <= 0:
        return 0
    workers = max(n_workers, 1)
    upper = workers * max(shards_per_worker, 1)
    by_size = n_entities // max(min_shard_entities, 1)
    if days_in_run >= workers:
        # the days alone give every worker work: a day is split further only as far as needed
        # for the run's task count to be a multiple of the workers (so none idles at the end),
        # because every shard has a fixed cost (tsfresh: it scans its day's window for its
        # entities; DFS: Featuretools' cost per cutoff and call)
        n = 1
        while (days_in_run * n) % workers and n < max(by_size, 1):
            n += 1
        return int(n if (days_in_run * n) % workers == 0 else 1)
    lower = min(workers, max(1, n_entities // max(floor, 1)))
    n = max(lower, min(upper, by_size))
    # a multiple of the worker count: 3 equal shards on 2 workers take as long as 4 would
    return int(max(n // workers * workers, lower))


def plan_shards(entities: Iterable, n_shards: int) -> list[list]:
    """Split sorted entities into `n_shards` strided shards (activity is spread, not clustered by id)."""
    ents = sorted(set(entities))
    if n_shards <= 0 or not ents:
        return []
    return [s for s in (ents[i::n_shards] for i in range(n_shards)) if s]


def plan_weighted_shards(weights: dict, n_shards: int) -> list[list]:
    """Split entities into `n_shards` of nearly equal total weight (heaviest first onto the lightest shard)."""
    import heapq

    if n_shards <= 0 or not weights:
        return []
    heap = [(0.0, i) for i in range(n_shards)]
    shards: list[list] = [[] for _ in range(n_shards)]
    for e in sorted(weights, key=lambda e: (-weights[e], e)):
        load, i = heapq.heappop(heap)
        shards[i].append(e)
        heapq.heappush(heap, (load + weights[e], i))
    return [sorted(s) for s in shards if s]


def staging_dir(store_root: str | os.PathLike, asset: str, day: str, token: str, make: bool = False) -> Path:
    """A hidden sibling folder of `date=D` where a run's shards write their parts (`make`: create it).

    Only the client makes it, before it submits the day's tasks; a task never does, so a task
    still running after its run was cancelled and cleaned up fails to write instead of leaving
    a folder behind.
    """
    target = partition_dir(store_root, asset, day)
    path = target.parent / f".staging-{target.name}-{token}"
    if make:
        path.mkdir(parents=True, exist_ok=True)
    return path


def new_token() -> str:
    """A random run token so concurrent runs never share a staging folder."""
    return uuid.uuid4().hex[:10]


def write_part(df: pd.DataFrame, folder: Path, index: int) -> dict:
    """Write one shard's frame as `part-<index>.parquet` in `folder` (a staging folder the client made);
    returns rows, bytes, per-column bytes."""
    if not folder.is_dir():
        raise CandidateError(f"staging folder {folder} is gone: its run was cancelled or failed and cleaned it up")
    path = folder / f"part-{index:04d}.parquet"
    tmp = folder / f".{path.name}.{uuid.uuid4().hex[:6]}"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp, compression="zstd")
    os.replace(tmp, path)
    from .costs import column_bytes

    return {"rows": int(len(df)), "bytes": int(path.stat().st_size), "column_bytes": column_bytes([path]), "path": str(path)}


def commit_partition(store_root: str | os.PathLike, asset: str, day: str, staging: Path) -> Path:
    """Replace `date=D` with the staging folder (rename; the old partition is removed afterwards)."""
    target = partition_dir(store_root, asset, day)
    if not staging.is_dir():
        raise CandidateError(f"{asset} {day}: staging folder {staging} is missing; nothing to commit")
    return replace_folder(target, staging)


def discard_staging(staging: Path) -> None:
    """Remove a staging folder after a failed shard or run (its other tasks may still be writing)."""
    remove_folder(staging)


# --------------------------------------------------------------------------- artifacts


def config_hash(*parts: Any) -> str:
    """A short stable hash of configuration objects (dataclasses, dicts, strings)."""

    def norm(x):
        if is_dataclass(x):
            return {k: norm(v) for k, v in asdict(x).items()}
        if isinstance(x, dict):
            return {str(k): norm(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        return x

    return hashlib.sha1(json.dumps([norm(p) for p in parts], sort_keys=True, default=str).encode()).hexdigest()[:10]


def artifact_dir(store_root: str | os.PathLike, asset: str, version: str) -> Path:
    """`<store>/_artifacts/<asset>/<version>/`: saved definitions, selections and fitted transforms."""
    return Path(store_root) / ARTIFACTS / asset / version


def save_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:6]}"
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)
    return path


def file_sha(path: str | os.PathLike) -> str:
    """Short content hash of a file (the version of a saved artifact)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]


# --------------------------------------------------------------------------- reading the store


def window_days(day: str, window: int | None, start: str) -> list[str]:
    """Partition days `[D-window+1, D]` (or all days since `start` when window is None), never before `start`."""
    first = start if window is None else max(shift_day(day, -(window - 1)), start, key=to_day)
    return day_range(first, day) if to_day(first) <= to_day(day) else []


def read_window(
    store_root: str | os.PathLike,
    asset: str,
    days: list[str],
    columns: list[str] | None = None,
    entity: str | None = None,
    entities: list | None = None,
    before: pd.Timestamp | None = None,
    time_col: str = "ts",
) -> pd.DataFrame:
    """Rows of the existing day partitions `days`, optionally only `entities`, and only `time_col < before`."""
    tbl = read_window_table(store_root, asset, days, columns, entity, entities, before, time_col)
    return pd.DataFrame(columns=columns or []) if tbl is None else tbl.to_pandas()


def read_window_table(
    store_root: str | os.PathLike,
    asset: str,
    days: list[str],
    columns: list[str] | None = None,
    entity: str | None = None,
    entities: list | None = None,
    before: pd.Timestamp | None = None,
    time_col: str = "ts",
    dictionary: tuple[str, ...] = (),
) -> pa.Table | None:
    """``read_window`` as an Arrow table (None when no partition exists): no pandas objects per row.

    Columns named in `dictionary` that the (first) file stores as strings are read as Arrow
    dictionaries straight from Parquet's dictionary pages (pandas categoricals later): for a
    handful of distinct values over many rows that decodes faster than materializing every
    string. Where a later file stores such a column in a type Arrow cannot read as a
    dictionary, the read falls back to plain columns, as without `dictionary`.
    """
    files = [str(f) for d in days if partition_exists(store_root, asset, d) for f in sorted(partition_dir(store_root, asset, d).glob("*.parquet"))]
    if not files:
        return None
    dset = pads.dataset(files, format="parquet")
    flt = None
    if entities is not None:
        flt = pads.field(entity).isin(pa.array(list(entities)))
    if before is not None:
        b = pads.field(time_col) < pa.scalar(before.to_pydatetime(), type=dset.schema.field(time_col).type)
        flt = b if flt is None else flt & b
    as_dict = [c for c in dictionary if c in dset.schema.names and _is_text(dset.schema.field(c).type)]
    if as_dict:
        fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=as_dict))
        try:
            return pads.dataset(files, format=fmt).to_table(columns=columns, filter=flt)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid):
            pass  # e.g. a later file stores the column as numbers: the plain read casts (or names the file)
    return dset.to_table(columns=columns, filter=flt)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def as_string_dictionaries(tbl: pa.Table, columns: tuple[str, ...]) -> pa.Table:
    """`tbl` with each string-like column of `columns` as ``dictionary<int32, string>`` (other types
    untouched), so tables read from files that typed a column differently still concatenate."""
    want = pa.dictionary(pa.int32(), pa.string())
    for c in columns:
        t = tbl.schema.field(c).type if c in tbl.schema.names else want
        values = t.value_type if pa.types.is_dictionary(t) else t
        if t != want and (_is_text(values) or pa.types.is_null(values)):
            tbl = tbl.set_column(tbl.schema.get_field_index(c), c, pc.dictionary_encode(tbl.column(c).cast(pa.string())))
    return tbl


def window_rows(store_root: str | os.PathLike, asset: str, days: list[str]) -> int:
    """Rows stored in the existing day partitions `days`, from the Parquet footers (no data read).

    A plan's estimate: an unreadable file counts 0 here and fails, by name, in the task reading it.
    """
    total = 0
    for d in days:
        if partition_exists(store_root, asset, d):
            for f in partition_dir(store_root, asset, d).glob("*.parquet"):
                try:
                    total += pq.ParquetFile(f).metadata.num_rows
                except (pa.ArrowException, OSError):
                    pass
    return total


def source_columns(store_root: str | os.PathLike, asset: str, days: list[str]) -> list[str]:
    """Column names of the first existing partition of `asset` among `days` (schema only, no data)."""
    for d in days:
        if partition_exists(store_root, asset, d):
            files = sorted(partition_dir(store_root, asset, d).glob("*.parquet"))
            if files:
                try:
                    return list(pq.read_schema(files[0]).names)
                except (pa.ArrowException, OSError) as exc:
                    raise CandidateError(f"{asset}: cannot read the schema of {files[0]}: {exc}") from exc
    return []


def check_columns(asset: str, available: list[str], needed: dict[str, str | None]) -> None:
    """Raise EntityConfigError naming the role and the available columns when one is missing."""
    missing = {role: c for role, c in needed.items() if c is not None and c not in available}
    if missing:
        what = ", ".join(f"{role} column {c!r}" for role, c in missing.items())
        raise EntityConfigError(f"{asset}: {what} not found; available columns: {sorted(available)}")


# --------------------------------------------------------------------------- output


def as_candidates(features: pd.DataFrame, keys: pd.DataFrame, day: str) -> pd.DataFrame:
    """Key columns, `cutoff` (tz-aware UTC) and features; numeric and boolean columns as float64."""
    out = keys.reset_index(drop=True).copy()
    out["cutoff"] = pd.Series(cutoff(day), index=out.index).astype("datetime64[ns, UTC]")
    feats = features.reset_index(drop=True)
    cols = {}
    for c in feats.columns:
        s = feats[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            # nullable Int64/boolean: go through Float64 so <NA> becomes NaN
            cols[c] = s.astype("Float64").astype("float64").to_numpy() if s.dtype.kind not in "fiub" else s.astype("float64").to_numpy()
        else:
            cols[c] = s.astype(object).where(s.notna(), None).to_numpy()
    return pd.concat([out, pd.DataFrame(cols, index=out.index)], axis=1)


def null_share(df: pd.DataFrame, skip: Iterable[str]) -> float:
    """Mean null share over the candidate columns (0 for no columns or rows)."""
    cols = [c for c in df.columns if c not in set(skip)]
    return float(df[cols].isna().to_numpy().mean()) if cols and len(df) else 0.0


def clean_numeric(x: np.ndarray) -> np.ndarray:
    """Float matrix with +-inf turned into NaN."""
    x = np.asarray(x, dtype="float64")
    return np.where(np.isfinite(x), x, np.nan)


def worker_name() -> str:
    """Address of the Dask worker running the current task ("local" outside a worker)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b."""
    return int(math.ceil(a / b))


def single_part_day(asset: str, day: str, entity: str, staging: str, compute) -> dict:
    """Run `compute()` -> (frame, seconds) for one day in a Dask task and write it as the staging folder's single part."""
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        df, seconds = compute()
        w = write_part(df, Path(staging), 0)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(f"{asset} {day}: {type(exc).__name__}: {exc}") from exc
    return {"day": day, "shard": 0, "entities": int(len(df)), "rows": w["rows"], "bytes": w["bytes"],
            "column_bytes": w["column_bytes"], "seconds": seconds, "task_seconds": time.perf_counter() - t0,
            "cpu_seconds": time.thread_time() - c0, "worker": worker_name(),
            "null_share": float(df.drop(columns=[entity, "cutoff"]).isna().to_numpy().mean()) if len(df) and df.shape[1] > 2 else 0.0}
