"""Featuretools Deep Feature Synthesis candidates, leakage-free and sharded over entities.

Flow for partition day D (cutoff ``t = D+1 00:00 UTC``):

1. **Discover** (once per configuration version, on a seeded sample of entities): build
   an EntitySet (users, products, events, and sessions normalised from events), set the
   interesting values of ``event_type`` from the sample, run ``ft.dfs(features_only=True)``,
   keep numeric and boolean features, compute them on the sample and drop single-valued,
   >95%-null and >0.99-correlated ones, cap at ``max_features`` and save the definitions with
   ``ft.save_features`` under ``<store>/_artifacts/dfs_candidates/<version>/``. The manifest
   records the EntitySet schema so every shard builds the same one.
2. **Compute** for all entities: ``calculate_feature_matrix`` per entity shard, each a Dask
   task writing its own part. Reader tasks decode the union of a group of days' windows
   once, split by day range, into entity buckets (``read_buckets``); a shard takes whole
   buckets from every reader, finds each day's entities in those events
   (``entities_by_day``) and computes all the group's cutoffs at once: one EntitySet and one
   ``calculate_feature_matrix`` with a cutoff time per (entity, day), split back into day
   partitions. Sessions are session-days (entity, session id, UTC day), so an EntitySet
   holding more days than one window gives every cutoff exactly the values of an
   EntitySet built for that cutoff alone: window starts and cutoffs are midnights, and no
   session-day straddles one.

Time rules: only events before the group's last cutoff are read (``ts < t`` for a one-day
group), and Featuretools is called with a cutoff time per (entity, day),
``include_cutoff_time=False`` and ``training_window = N days`` (rows with
``t - N days <= ts < t``), so for every day an event at or after its cutoff never counts,
even though a multi-day shard's input holds the later days' events.

Fill rule: Featuretools returns NaN for ``NUM_UNIQUE`` (and ``NUM_TRUE``) over an empty
set; top-level count-like features (COUNT, NUM_UNIQUE, NUM_TRUE) are filled with 0, every
other aggregate (mean, std, min, max, percent_true, …) stays NaN when undefined. SUM of an
empty set is 0 (Featuretools' own default).
"""

from __future__ import annotations

import importlib
import json
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..ingest import read_snapshot
from ..timeutil import cutoff as cutoff_of
from ..timeutil import day_start, to_day
from .common import (
    CandidateError, EmptyShardError, artifact_dir, as_candidates, as_string_dictionaries, check_columns, config_hash,
    file_sha, read_window, read_window_table, save_json, source_columns, window_days, worker_name, write_part,
)

ASSET = "dfs_candidates"
FAMILY = "dfs"
PCA_FAMILY = "dfs_pca"
COUNT_LIKE = {"Count", "NumUnique", "NumTrue"}
# Events columns the EntitySet may use, with their Woodwork logical types.
EVENT_TYPES = {"event_type": "Categorical", "product_id": "Categorical", "session_id": "Categorical",
               "device_type": "Categorical", "referrer": "Categorical",
               "price": "Double", "quantity": "Double", "amount": "Double"}
# Low-cardinality string columns read as Arrow dictionaries (pandas categoricals, as Woodwork keeps them).
DICTIONARY_COLUMNS = ("event_type", "device_type", "referrer")
BOOKKEEPING = ("source_file", "row_number")
_DEFINITIONS_CACHE: dict = {}
MAX_CATEGORIES = 50  # string attributes with more distinct values are dropped (identifiers, free text)


@dataclass(frozen=True)
class DFSConfig:
    """What DFS generates and on which data; every field is part of the definitions' version."""

    agg_primitives: tuple[str, ...] = ("count", "sum", "mean", "std", "max", "min", "num_unique", "percent_true")
    trans_primitives: tuple[str, ...] = ("is_weekend",)
    where_primitives: tuple[str, ...] = ("count", "sum")
    max_depth: int = 3  # users <- sessions <- events -> products: depth 3 reaches per-session product aggregates
    training_window_days: int | None = 30
    sample_entities: int = 400
    max_features: int = 200
    interesting_columns: tuple[str, ...] = ("event_type",)
    interesting_values: int = 3
    sessions: bool = True
    entities: str = "all"  # "all": users snapshot + users with events in the window; "active": the latter only
    prune_on_sample: bool = True
    pca_components: int = 0
    seed: int = 0
    entity: str = "user_id"
    source: str = "raw_events"

    def __post_init__(self):
        if self.entities not in ("all", "active"):
            raise ValueError(f"DFSConfig.entities={self.entities!r}: expected 'all' or 'active'")
        if self.training_window_days is not None and self.training_window_days < 1:
            raise ValueError("DFSConfig.training_window_days must be >= 1 or None (all history)")

    def version(self) -> str:
        """Version of the feature definitions: a hash of this config and the Featuretools version."""
        import featuretools as ft

        # dfs-2: session-days; dfs-3: percent_true is primitives.VectorPercentTrue (same values);
        # dfs-4: integer keys in the EntitySet (same values), features in (depth, name) order
        return config_hash(self, ft.__version__, "dfs-4")


# --------------------------------------------------------------------------- inputs


def _window(day: str, start: str, cfg: DFSConfig) -> list[str]:
    return window_days(day, cfg.training_window_days, start)


def _union_window(days: list[str], start: str, cfg: DFSConfig) -> list[str]:
    """The partition days any of the days' training windows reads, in order."""
    return sorted(set().union(*[_window(d, start, cfg) for d in days]), key=to_day)


def check_source(store_root: str, day: str, start: str, cfg: DFSConfig) -> None:
    """Fail early, with the available columns, when the entity column is not in the events."""
    days = _window(day, start, cfg)
    cols = source_columns(store_root, cfg.source, days)
    if cols:
        check_columns(cfg.source, cols, {"entity": cfg.entity, "time": "ts"})


def read_events(store_root: str, day: str, start: str, cfg: DFSConfig, entities: list | None) -> pd.DataFrame:
    """Events of the training window before the cutoff (only `entities` when given), with `amount`."""
    return read_events_many(store_root, [day], start, cfg, entities)


def read_events_many(store_root: str, days: list[str], start: str, cfg: DFSConfig, entities: list | None) -> pd.DataFrame:
    """Events of the union of the days' training windows before the last cutoff, with `amount`
    (the readers' path in one piece: ids as strings, events without an entity dropped)."""
    union, before = _union_window(days, start, cfg), max(cutoff_of(d) for d in days)
    return events_from_pieces([read_buckets(store_root, union, cfg, before, 1, entities).take([0])])


def list_entities(store_root: str, day: str, start: str, cfg: DFSConfig) -> list[str]:
    """Entities of day D: users with events in the window (plus the users snapshot when entities='all')."""
    return list_entities_many(store_root, [day], start, cfg)[0]


def list_entities_many(store_root: str, days: list[str], start: str, cfg: DFSConfig) -> list[list[str]]:
    """``list_entities`` of several days from one read of their windows' union (keys and times only)."""
    for d in sorted(set(days)):
        check_source(store_root, d, start, cfg)
    if not days:
        return []
    events = read_window(store_root, cfg.source, _union_window(days, start, cfg), [cfg.entity, "ts"],
                         before=max(cutoff_of(d) for d in days))
    by_day = entities_by_day(events, days, start, cfg, snapshot_entities(store_root, cfg))
    return [by_day[d] for d in days]


# --------------------------------------------------------------------------- bucketed reading (the Dask run)
#
# A run reads each group's window once, spread over reader tasks by day, and splits the
# events by a stable hash of the entity into buckets; a shard task takes whole buckets from
# every reader. Every entity's events thus meet in one shard, no event of a group is decoded twice, and
# a shard finds its own entities of each day in the events it got (no listing pass first).
#
# On the cluster a reader writes its events to an Arrow IPC file beside the store (a shuffle
# file, as Spark writes) and returns only its per-bucket counts; each shard memory-maps the
# files and keeps its buckets' rows. Handing ~100 MB tables from worker to worker through
# Dask instead cost 0.1-0.55 s per shard before it could start (large benchmark), and held
# every reader's events in worker memory until all shards had them.

_BUCKET_KEY = "featurecore-dfsb"  # the 16-byte SipHash key: buckets agree across processes and runs
_BUCKET_COL = "_bucket"


def entity_buckets(ids, n_buckets: int) -> np.ndarray:
    """Bucket in ``[0, n_buckets)`` of each entity id (SipHash of its string form), the same in every process."""
    arr = np.asarray([str(e) for e in ids] if not isinstance(ids, np.ndarray) else ids.astype(str), dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    return (pd.util.hash_array(arr, hash_key=_BUCKET_KEY, categorize=False) % np.uint64(n_buckets)).astype(np.int64)


@dataclass
class EventBuckets:
    """One reader's events, in the order read, with each row's entity bucket: in memory (`table`)
    or in an Arrow IPC shuffle file (`path`, the bucket as a column), which is all that travels."""

    table: pa.Table | None
    counts: np.ndarray  # int64, events per bucket
    entities: np.ndarray  # int64, distinct entities per bucket
    path: str | None = None

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(events, distinct entities) per bucket: what the run balances shards by."""
        return self.counts, self.entities

    def take(self, buckets: list[int]) -> pa.Table | None:
        """The rows of `buckets`, in the order read, as one table."""
        if self.path is not None:
            tbl = pa.ipc.open_file(pa.memory_map(self.path)).read_all()  # zero-copy: pages come from the OS cache
            # a filter keeps the readers' time order, so a shard's EntitySet needs no sort by time
            keep = pc.is_in(tbl.column(_BUCKET_COL), value_set=pa.array(sorted(set(buckets)), pa.int32()))
            return tbl.filter(keep).drop_columns([_BUCKET_COL])
        return self.table  # in memory: one bucket (read_buckets allows no other), None when empty


def event_columns(store_root: str, cfg: DFSConfig, days: list[str]) -> list[str]:
    """The events columns a DFS EntitySet reads that the source has (checked: entity and time must be there)."""
    avail = source_columns(store_root, cfg.source, days)
    if avail:
        check_columns(cfg.source, avail, {"entity": cfg.entity, "time": "ts"})
    return [c for c in [cfg.entity, "ts", *[c for c in EVENT_TYPES if c != "amount"]] if c in avail]


def read_buckets(store_root: str, days: list[str], cfg: DFSConfig, before: pd.Timestamp, n_buckets: int,
                 entities: list | None = None, shuffle_to: str | None = None) -> EventBuckets:
    """Dask task: events of the partition `days` before `before` (only `entities` when given), by
    entity bucket; written to the file `shuffle_to` when given, else kept in memory (one bucket only)."""
    if shuffle_to is None and n_buckets != 1:
        raise ValueError("a reader of several buckets writes a shuffle file")
    empty = EventBuckets(None, np.zeros(n_buckets, np.int64), np.zeros(n_buckets, np.int64))
    cols = event_columns(store_root, cfg, days)
    tbl = read_window_table(store_root, cfg.source, days, cols, entity=cfg.entity, entities=entities, before=before,
                            dictionary=DICTIONARY_COLUMNS) if cols else None
    if tbl is None:
        return empty
    if tbl.column(cfg.entity).null_count:  # an event without an entity belongs to no one
        tbl = tbl.filter(pc.is_valid(tbl.column(cfg.entity)))
    if tbl.num_rows == 0:
        return empty
    # one type whatever the files stored, so every reader's pieces concatenate in a shard
    tbl = as_string_dictionaries(tbl, DICTIONARY_COLUMNS)
    # ids as strings from here on: buckets, listings and the EntitySet all see the same form
    key = tbl.column(cfg.entity).cast(pa.string())
    tbl = tbl.set_column(tbl.schema.get_field_index(cfg.entity), cfg.entity, key)
    enc = pc.dictionary_encode(key.combine_chunks())
    if shuffle_to is None:  # one process: nothing to split
        return EventBuckets(tbl, np.array([tbl.num_rows], np.int64), np.array([len(enc.dictionary)], np.int64))
    dict_bucket = entity_buckets(enc.dictionary.to_numpy(zero_copy_only=False), n_buckets).astype(np.int32)
    row_bucket = dict_bucket[enc.indices.to_numpy(zero_copy_only=False)]
    write_ipc(tbl.append_column(_BUCKET_COL, pa.array(row_bucket, pa.int32())), Path(shuffle_to))
    return EventBuckets(None, np.bincount(row_bucket, minlength=n_buckets).astype(np.int64),
                        np.bincount(dict_bucket, minlength=n_buckets).astype(np.int64), path=shuffle_to)


def write_ipc(tbl: pa.Table, path: Path) -> None:
    """`tbl` as an uncompressed Arrow IPC file at `path` (its folder must exist), written whole or not at all."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")  # two attempts of one reader never share a file
    tbl = tbl.unify_dictionaries()  # an IPC file holds one dictionary per column (day files each had their own)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, tbl.schema) as writer:
        writer.write_table(tbl)
    tmp.replace(path)


def events_from_pieces(pieces: list) -> pd.DataFrame:
    """One shard's events from the readers' pieces, with `amount` (= price x quantity)."""
    tables = [t for t in pieces if t is not None and t.num_rows]
    if not tables:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]")})
    # day files may store a column in different types (int vs double, time units): unify, don't fail
    ev = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if "price" in ev.columns and "quantity" in ev.columns:
        ev["amount"] = ev["price"] * ev["quantity"]
    return ev


def snapshot_entities(store_root: str, cfg: DFSConfig, entities: list | None = None) -> list[str]:
    """Users of the snapshot (only `entities` when given), who get a row on every day when
    ``entities='all'`` (else none)."""
    if cfg.entities != "all" or not (Path(store_root) / "users" / "snapshot.parquet").is_file():
        return []
    ids = set(read_snapshot(store_root, "users", [cfg.entity])[cfg.entity].dropna().astype(str))
    return sorted(ids if entities is None else ids & set(map(str, entities)))


def _entity_codes(events: pd.DataFrame, cfg: DFSConfig) -> tuple[np.ndarray, pd.Index]:
    """Each event's entity code (-1 for a null id) and the ids coded, as strings."""
    if not len(events) or cfg.entity not in events.columns:
        return np.zeros(0, np.int64), pd.Index([], dtype=object)
    codes, uniq = pd.factorize(events[cfg.entity], sort=False)
    return codes, pd.Index(np.asarray(uniq.astype(str), dtype=object))


def entities_by_day(events: pd.DataFrame, days: list[str], start: str, cfg: DFSConfig, also: list | None = None,
                    coded: tuple[np.ndarray, pd.Index] | None = None) -> dict[str, list[str]]:
    """Each day's sorted entities: those with an event in its window before its cutoff, plus `also`
    (snapshot users) on every day; ``list_entities`` of the same data, from events already read."""
    extra = set(map(str, also or ()))
    codes, uniq = _entity_codes(events, cfg) if coded is None else coded
    if len(codes):
        col = pd.to_datetime(events["ts"], utc=True)
        ts = col.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    else:
        ts = np.zeros(0, np.int64)
    out = {}
    for d in days:
        win = _window(d, start, cfg)
        ids = set(extra)
        if win and len(ts):
            m = (codes >= 0) & (ts >= day_start(win[0]).value) & (ts < cutoff_of(d).value)
            ids |= set(uniq[np.flatnonzero(np.bincount(codes[m], minlength=len(uniq)))].tolist())
        out[d] = sorted(ids)
    return out


# (entity, day) rows per EntitySet: a shard or one process computes its entities in batches of
# about this many. Featuretools' time per row is lowest here (large benchmark, 4 cutoffs,
# ~10 events per row: 40 us per row at 63k rows against 44 at 126k, 54 at 252k and 44 at 31k):
# smaller frames stay in cache, while each call pays ~0.06 s per cutoff whatever its size. It
# also bounds the feature matrix a task holds at once.
BATCH_ROWS = 64_000


def compute_events(store_root: str, start: str, cfg: DFSConfig, manifest: dict, days: list[str], events: pd.DataFrame,
                   also: list | None = None, max_rows: int | None = BATCH_ROWS) -> tuple[dict[str, pd.DataFrame], dict]:
    """Candidate rows of every entity in `events` (and `also`) for each of `days` it is listed on:
    one EntitySet per batch of about `max_rows` (entity, day) rows (equal entity counts, in id order)."""
    coded = _entity_codes(events, cfg)
    listed = {d: e for d, e in entities_by_day(events, days, start, cfg, also, coded).items() if e}
    if not listed:
        return {}, {}
    union = sorted(set().union(*listed.values()))
    rows = sum(len(e) for e in listed.values())
    n_batches = max(1, -(-rows // max_rows)) if max_rows else 1
    if n_batches == 1:
        return compute_many(store_root, start, cfg, manifest, listed, events)
    batch_of = {e: b for b, part in enumerate(np.array_split(np.array(union, dtype=object), n_batches)) for e in part}
    # each event's batch through the code of its entity: one pass, where a string isin per batch cost ~0.4 s at 5M events
    codes, uniq = coded
    uniq_batch = np.array([batch_of.get(u, -1) for u in uniq] + [-1], dtype=np.int64)
    ev_batch = uniq_batch[codes]  # a null id (code -1) takes the sentinel: in no batch
    subs: list[dict[str, list]] = [{d: [] for d in listed} for _ in range(n_batches)]
    for d, ents in listed.items():
        for e in ents:
            subs[batch_of[e]][d].append(e)
    frames: dict[str, list] = {d: [] for d in listed}
    seconds: dict[str, float] = {}
    for b, sub in enumerate(subs):
        # a take keeps the events' time order (the EntitySet build then needs no sort)
        got, sec = compute_many(store_root, start, cfg, manifest, sub, events.take(np.flatnonzero(ev_batch == b)))
        for d, f in got.items():
            frames[d].append(f)
        for k, v in sec.items():
            seconds[k] = seconds.get(k, 0.0) + v
    return {d: pd.concat(fs, ignore_index=True) for d, fs in frames.items() if fs}, seconds


def compute_window(store_root: str, days: list[str], start: str, cfg: DFSConfig, manifest: dict,
                   entities: list | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
    """The whole computation in one process (the reference for the sharded run): one read of the
    days' windows, every listed entity (only `entities` when given) of every day."""
    days = sorted(set(days), key=to_day)
    events = read_events_many(store_root, days, start, cfg, entities)
    return compute_events(store_root, start, cfg, manifest, days, events, snapshot_entities(store_root, cfg, entities))


def _dimension(store_root: str, table: str) -> pd.DataFrame | None:
    path = Path(store_root) / table / "snapshot.parquet"
    return read_snapshot(store_root, table) if path.is_file() else None


# --------------------------------------------------------------------------- EntitySet


def infer_schema(events: pd.DataFrame, users: pd.DataFrame | None, products: pd.DataFrame | None, cfg: DFSConfig) -> dict:
    """Which columns (and logical types) the EntitySet uses, decided once on the discovery sample."""

    def attrs(df: pd.DataFrame | None, key: str) -> dict[str, str]:
        if df is None:
            return {}
        out = {}
        for c in df.columns:
            if c == key or c in BOOKKEEPING:
                continue
            s = df[c]
            if pd.api.types.is_bool_dtype(s):
                out[c] = "Boolean"
            elif pd.api.types.is_numeric_dtype(s):
                out[c] = "Double"
            elif s.dtype == object and s.dropna().map(type).eq(str).all() and 0 < s.nunique() <= MAX_CATEGORIES:
                out[c] = "Categorical"
            # dates and high-cardinality text are left out: a static snapshot date is not an event time
        return out

    ev_cols = {c: t for c, t in EVENT_TYPES.items() if c in events.columns and events[c].notna().any()}
    use_products = products is not None and "product_id" in ev_cols
    return {
        "entity": cfg.entity,
        "events": ev_cols,
        "users": attrs(users, cfg.entity),
        "products": attrs(products, "product_id") if use_products else None,
        "sessions": bool(cfg.sessions and "session_id" in ev_cols),
    }


def build_entityset(events: pd.DataFrame, users: pd.DataFrame | None, products: pd.DataFrame | None,
                    schema: dict, entities: list):
    """The EntitySet of one shard with exactly the schema's columns (so saved definitions apply), and
    the entity ids its users' integer keys stand for (key ``i`` is ``ids[i]``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # woodwork/pandas FutureWarnings
        return _build_entityset(events, users, products, schema, entities)


def _build_entityset(events, users, products, schema, entities):
    import featuretools as ft

    key = schema["entity"]
    ev_types = schema["events"]
    # Every key (users, sessions, products) is an integer code, not the id string: Featuretools
    # groups and joins on its keys over and over, and factorizing strings was a fifth of its time.
    # Integer keys make no features (DFS skips numeric foreign keys) and never reach the output:
    # `ids` maps user keys back, sessions and products are intermediate.
    ids = pd.Index(sorted(set(map(str, entities))), dtype=object)
    ev = pd.DataFrame({"_event": np.arange(len(events), dtype="int64")})
    sessions = None
    # an event of an entity not listed gets key -1: it reaches no user, as an unmatched string did
    codes, uniq = _string_codes(events[key]) if len(events) else (np.zeros(0, np.int64), pd.Index([]))
    ev[key] = np.where(codes >= 0, ids.get_indexer(uniq)[codes], -1) if len(uniq) else np.full(len(codes), -1, np.int64)
    # Featuretools compares naive times; everything in the store is UTC.
    ev["ts"] = pd.to_datetime(events["ts"], utc=True).dt.tz_localize(None).to_numpy() if len(events) else pd.Series(dtype="datetime64[ns]")
    for c, t in ev_types.items():
        col = events[c] if c in events.columns else pd.Series(np.nan, index=events.index)
        if c in ("session_id", "product_id"):
            ev[c] = col.to_numpy(dtype=object)  # keys: coded below
        elif t == "Double":
            ev[c] = col.astype("float64").to_numpy()
        elif t == "Categorical" and isinstance(col.dtype, pd.CategoricalDtype):
            # what Woodwork makes of the strings (sorted categories, only those present), without the strings
            cat = col.array.remove_unused_categories()
            ev[c] = cat.reorder_categories(sorted(cat.categories))
        else:
            ev[c] = col.astype(object).where(col.notna(), None).to_numpy()
    if schema["sessions"]:
        # Events without a session id form a session of their own; the entity is part of the
        # session key so a session id reused by two entities cannot mix them; the UTC day is
        # too, so no session straddles a window start or cutoff (both midnights) and one
        # EntitySet serves any set of cutoffs with the values of one built per cutoff.
        ev["session_id"], sessions = _session_keys(ev, key)
    pids = None
    if schema["products"] is not None:
        # a null product id is key -1: no product row matches it, as no row matched a null
        ev["product_id"], pids = _string_codes(ev["product_id"], sort=True)
    ts = ev["ts"].to_numpy()
    if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():  # readers give files in day order, usually sorted already
        # by (ts, _event): a stable sort by time keeps the events' own order among equal times
        ev = ev.take(np.argsort(ts, kind="stable")).reset_index(drop=True)

    es = ft.EntitySet("candidates")
    if schema["sessions"]:
        # users -> sessions -> events (no direct users -> events edge): with a diamond Featuretools
        # only aggregates along the long path and never stacks per-session aggregates.
        ev = ev.drop(columns=[key])
    # Every column's logical type is given: Woodwork's inference is most of a small shard's fixed cost.
    fk = {"_event": "Integer", "ts": "Datetime", **({} if schema["sessions"] else {key: "Integer"})}
    if schema["sessions"]:
        fk["session_id"] = "Integer"
    if schema["products"] is not None:
        fk["product_id"] = "Integer"
    # already sorted above by (ts, _event): Woodwork would sort again by the same unique keys
    es.add_dataframe(dataframe_name="events", dataframe=ev, index="_event", time_index="ts",
                     logical_types={**ev_types, **fk}, already_sorted=True)

    utypes = schema["users"]
    es.add_dataframe(dataframe_name="users", dataframe=_dimension_rows(ids, users, key, utypes), index=key,
                     logical_types={key: "Integer", **utypes})
    if sessions is not None:
        es.add_dataframe(dataframe_name="sessions", dataframe=sessions, index="session_id", time_index="session_start",
                         logical_types={"session_id": "Integer", key: "Integer", "session_start": "Datetime"})
        es.add_relationship("users", key, "sessions", key)
        es.add_relationship("sessions", "session_id", "events", "session_id")
    else:
        es.add_relationship("users", key, "events", key)

    ptypes = schema["products"]
    if ptypes is not None:
        es.add_dataframe(dataframe_name="products", dataframe=_dimension_rows(pids, products, "product_id", ptypes),
                         index="product_id", logical_types={"product_id": "Integer", **ptypes})
        es.add_relationship("products", "product_id", "events", "product_id")

    return es, ids


def _dimension_rows(ids: pd.Index, table: pd.DataFrame | None, key: str, types: dict[str, str]) -> pd.DataFrame:
    """A dimension's EntitySet rows: one per id of `ids`, keyed by its code (its position), with the
    schema's attribute columns from the snapshot `table` (NaN where it has no row or column)."""
    out = pd.DataFrame({key: ids})
    if table is not None and types:
        attrs = table[[key, *[c for c in types if c in table.columns]]].assign(**{key: table[key].astype(str)})
        out = out.merge(attrs.drop_duplicates(key), on=key, how="left")
    out[key] = np.arange(len(ids), dtype=np.int64)
    for c, t in types.items():
        if c not in out.columns:
            out[c] = np.nan
        if t == "Double":
            out[c] = out[c].astype("float64")
    return out


def _session_keys(ev: pd.DataFrame, key: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Each event's session key, an integer code of (entity code, session id or the event itself,
    UTC day), and the sessions table (key, entity, first event time).

    Woodwork orders sessions by (start, key), and Featuretools aggregates them in that order, so
    the codes of an entity's sessions starting at the same instant follow their spelled keys
    ``"<entity>|<session id or _event_<n>>|<day>"``: the order string keys gave, the same bits.
    """
    n = len(ev)
    e_codes = ev[key].to_numpy(dtype=np.int64)
    s_codes, s_uniq = _string_codes(ev["session_id"])  # -1: no session id
    n_labels = len(s_uniq) + n  # an event without a session id is a session of its own: label len(s_uniq) + event
    s_codes = np.where(s_codes < 0, len(s_uniq) + np.arange(n), s_codes)
    day = ev["ts"].to_numpy().astype("datetime64[D]").astype(np.int64)
    d_codes, d_uniq = pd.factorize(day)
    # (entity, session) then (that, day): codes below (entities + 1) * (sessions ids + events), far from overflow
    a_codes, a_uniq = pd.factorize((e_codes + 1) * n_labels + s_codes)
    codes, b_uniq = pd.factorize(a_codes.astype(np.int64) * len(d_uniq) + d_codes)
    pair = a_uniq[b_uniq // len(d_uniq)]
    ent = pair // n_labels - 1
    start = pd.Series(ev["ts"].to_numpy()).groupby(codes, sort=False).min().reindex(range(len(b_uniq))).to_numpy()
    sessions = pd.DataFrame({"session_id": np.arange(len(b_uniq), dtype=np.int64), key: ent.astype(np.int64), "session_start": start})
    tied = sessions.duplicated([key, "session_start"], keep=False).to_numpy()
    if tied.any():
        label = pair[tied] % n_labels
        own = label >= len(s_uniq)
        spelled = np.empty(len(label), dtype=object)
        spelled[~own] = s_uniq.to_numpy(dtype=object)[label[~own]]
        spelled[own] = "_event_" + ev["_event"].to_numpy()[label[own] - len(s_uniq)].astype(str).astype(object)
        t = sessions[tied].assign(spelled=spelled + "|")
        by_key = t.sort_values([key, "session_start", "spelled"], kind="stable")["session_id"].to_numpy()
        slots = t.sort_values([key, "session_start", "session_id"], kind="stable")["session_id"].to_numpy()
        remap = np.arange(len(sessions), dtype=np.int64)
        remap[by_key] = slots  # within each tie, the codes in spelled-key order
        codes = remap[codes]
        sessions["session_id"] = remap[sessions["session_id"].to_numpy()]
    return codes.astype(np.int64), sessions


def _string_codes(values, sort: bool = False) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of the values as strings (what Woodwork made of string keys: 7 and "7" are one
    key, 7.0 another), -1 for nulls, and the strings coded; strings are built once per distinct
    value when the values are strings already."""
    arr = np.asarray(values, dtype=object)
    codes, uniq = pd.factorize(arr)
    if not len(uniq):
        return codes.astype(np.int64), pd.Index([], dtype=object)
    if pd.api.types.infer_dtype(uniq, skipna=False) != "string":
        # factorize takes 7, 7.0 and True for one value: spell every value first, as Woodwork did
        codes, uniq = pd.factorize(pd.Series(arr, dtype=object).astype("string").to_numpy(dtype=object, na_value=None))
    codes, uniq = codes.astype(np.int64), pd.Index(uniq, dtype=object)  # distinct strings already
    if not sort:
        return codes, uniq
    rank, spelled = pd.factorize(uniq, sort=True)
    return np.where(codes >= 0, rank[codes], -1).astype(np.int64), pd.Index(spelled, dtype=object)


def feature_matrix(es, ids: pd.Index, features: list, entities: list, day: str, cfg: DFSConfig) -> pd.DataFrame:
    """`calculate_feature_matrix` at the cutoff of `day` (include_cutoff_time=False), fill rule applied."""
    return feature_matrix_many(es, ids, features, {day: entities}, cfg)[day]


def feature_matrix_many(es, ids: pd.Index, features: list, entities_by_day: dict[str, list], cfg: DFSConfig) -> dict[str, pd.DataFrame]:
    """One `calculate_feature_matrix` for every (entity, day cutoff) pair of an EntitySet whose user
    keys stand for `ids`; one frame per day indexed by entity id, fill rule applied."""
    import featuretools as ft

    key = cfg.entity
    wanted = {d: pd.Index(sorted(set(map(str, ents))), dtype=object, name=key) for d, ents in entities_by_day.items()}
    cts = {}
    for d, names in wanted.items():
        codes = ids.get_indexer(names)
        if (codes < 0).any():
            raise ValueError(f"{ASSET} {d}: entities not in the EntitySet: {names[codes < 0][:5].tolist()}")
        cts[d] = pd.DataFrame({key: codes, "time": cutoff_of(d).tz_localize(None)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # woodwork/pandas FutureWarnings, "last_time_index is not set"
        fm = ft.calculate_feature_matrix(
            features=features, entityset=es, cutoff_time=pd.concat(cts.values(), ignore_index=True),
            training_window=None if cfg.training_window_days is None else f"{cfg.training_window_days} days",
            include_cutoff_time=False, cutoff_time_in_index=True, n_jobs=1, verbose=False,
        )
    fm = apply_fill_rule(fm, features)
    times = fm.index.get_level_values("time")
    out = {}
    for d, ct in cts.items():
        part = fm[times == ct["time"].iloc[0]] if len(ct) else fm.iloc[:0]
        part = part.droplevel("time").reindex(ct[key])
        part.index = wanted[d]
        out[d] = part
    return out


def apply_fill_rule(fm: pd.DataFrame, features: list) -> pd.DataFrame:
    """Top-level COUNT / NUM_UNIQUE / NUM_TRUE of an empty set -> 0; other aggregates keep NaN."""
    import featuretools as ft

    fm = fm.copy()
    for f in features:
        if isinstance(f, ft.AggregationFeature) and type(f.primitive).__name__ in COUNT_LIKE:
            for name in f.get_feature_names():
                fm[name] = pd.to_numeric(fm[name], errors="coerce").fillna(0.0)
    return fm


# --------------------------------------------------------------------------- discovery


def _key_columns(schema: dict) -> dict[str, set[str]]:
    """The identifier columns of each EntitySet dataframe (integer codes: no feature may use their values)."""
    key = schema["entity"]
    keys = {"events": {"_event"}, "users": {key}}
    keys["events"] |= {"session_id"} if schema["sessions"] else {key}
    if schema["sessions"]:
        keys["sessions"] = {"session_id", key}
    if schema["products"] is not None:
        keys["events"].add("product_id")
        keys["products"] = {"product_id"}
    return keys


def _on_keys(f, keys: dict[str, set[str]]) -> bool:
    """Whether a feature feeds an identifier to a primitive (COUNT's own use of the index aside): with
    primitives that take any column (first, last, ...) it would return shard-local key codes."""
    import featuretools as ft

    if isinstance(f, ft.IdentityFeature):
        return f.column_name in keys.get(f.dataframe_name, ())
    bases = [] if isinstance(f, ft.AggregationFeature) and type(f.primitive).__name__ == "Count" else list(f.base_features)
    if getattr(f, "where", None) is not None:
        bases.append(f.where)
    return any(_on_keys(b, keys) for b in bases)


def _numeric(f) -> bool:
    schema = f.column_schema
    return bool("numeric" in schema.semantic_tags or schema.is_boolean) and f.number_output_features == 1


def discover(store_root: str, day: str, start: str, cfg: DFSConfig, entities: list | None = None) -> dict:
    """Discover definitions on a sample of day D's entities, prune, save them (and PCA); returns the manifest."""
    import featuretools as ft

    from .primitives import agg_primitives

    t0 = time.perf_counter()
    out = artifact_dir(store_root, ASSET, cfg.version())
    entities = entities if entities is not None else list_entities(store_root, day, start, cfg)
    if not entities:
        raise EmptyShardError(f"{ASSET} {day}: no entities to discover features on (no events in the window and no users snapshot)")
    rng = np.random.default_rng(cfg.seed)
    sample = sorted(rng.choice(np.array(entities, dtype=object), size=min(cfg.sample_entities, len(entities)), replace=False).tolist())
    events = read_events(store_root, day, start, cfg, sample)
    users, products = _dimension(store_root, "users"), _dimension(store_root, "products")
    schema = infer_schema(events, users, products, cfg)
    keys = _key_columns(schema)
    named = sorted(set(cfg.interesting_columns) & set().union(*keys.values()))
    if named:
        # the EntitySet holds identifiers as integer codes: there are no id values to filter on
        raise ValueError(f"{ASSET}: interesting_columns {named} are identifiers, not attributes with interesting values")
    es, ids = build_entityset(events, users, products, schema, sample)
    interesting = {}
    for c in cfg.interesting_columns:
        if c in schema["events"] and len(events):
            interesting[c] = events[c].dropna().astype(str).value_counts().head(cfg.interesting_values).index.tolist()
    if interesting:
        es.add_interesting_values(dataframe_name="events", values=interesting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = ft.dfs(entityset=es, target_dataframe_name="users", agg_primitives=agg_primitives(cfg.agg_primitives),
                       trans_primitives=list(cfg.trans_primitives), where_primitives=list(cfg.where_primitives),
                       max_depth=cfg.max_depth, features_only=True)
    generated = len(feats)
    # ft.dfs orders features through sets of them (hash-seeded per process), and the pruning
    # below keeps the first of a correlated pair: order them by (depth, name) so the same data
    # and config give the same definitions in every process, the simpler of a pair kept
    feats = sorted((f for f in feats if _numeric(f) and not _on_keys(f, keys)), key=lambda f: (f.get_depth(), f.get_name()))
    numeric = len(feats)
    fm = feature_matrix(es, ids, feats, sample, day, cfg)
    pruned = {}
    if cfg.prune_on_sample and len(fm):
        n = len(feats)
        fm, feats = ft.selection.remove_single_value_features(fm, features=feats)
        pruned["single_value"] = n - len(feats)
        n = len(feats)
        fm, feats = ft.selection.remove_highly_null_features(fm, features=feats, pct_null_threshold=0.95)
        pruned["highly_null"] = n - len(feats)
        n = len(feats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fm, feats = ft.selection.remove_highly_correlated_features(fm.astype("float64"), features=feats, pct_corr_threshold=0.99)
        pruned["correlated"] = n - len(feats)
    capped = max(len(feats) - cfg.max_features, 0)
    feats = feats[: cfg.max_features]
    if not feats:
        raise CandidateError(f"{ASSET} {day}: DFS produced no usable numeric feature on the sample of {len(sample)} entities")
    out.mkdir(parents=True, exist_ok=True)
    defs_path = out / "features.json"
    ft.save_features(feats, str(defs_path))
    manifest = {
        "asset": ASSET, "version": cfg.version(), "config": asdict(cfg), "featuretools": ft.__version__,
        "discovered_on_day": day, "sample_entities": len(sample), "entities_on_day": len(entities),
        "schema": schema, "interesting_values": interesting, "generated": generated, "numeric": numeric,
        "pruned_on_sample": pruned, "capped": capped, "features": [f.get_name() for f in feats],
        "definitions": str(defs_path), "definitions_sha": file_sha(defs_path),
        "discovery_seconds": round(time.perf_counter() - t0, 3),
    }
    if cfg.pca_components > 0:
        from .reduction import fit_pca, save_pca

        model = fit_pca(fm[[f.get_name() for f in feats]].astype("float64"), cfg.pca_components)
        save_pca(out / "pca.npz", model)
        manifest["pca"] = {"path": str(out / "pca.npz"), "components": int(len(model["explained_variance_ratio"])),
                           "explained_variance_ratio": [round(float(v), 5) for v in model["explained_variance_ratio"]]}
    save_json(out / "manifest.json", manifest)
    return manifest


def load_manifest(store_root: str, cfg: DFSConfig) -> dict | None:
    """The saved manifest of this configuration's definitions, or None when not yet discovered."""
    path = artifact_dir(store_root, ASSET, cfg.version()) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_definitions(store_root: str, manifest: dict) -> list:
    """The saved Featuretools feature definitions of a manifest (looked up under this store's artifacts)."""
    import featuretools as ft

    # definitions name its classes (Featuretools also imports it itself where the package is installed)
    importlib.import_module(".primitives", __package__)

    path = str(artifact_dir(store_root, ASSET, manifest["version"]) / "features.json")
    key = (path, manifest["definitions_sha"])
    if key not in _DEFINITIONS_CACHE:
        # a worker computes many shards with the same definitions: deserialize them once per process
        _DEFINITIONS_CACHE.clear()
        _DEFINITIONS_CACHE[key] = ft.load_features(path)
    return _DEFINITIONS_CACHE[key]


# --------------------------------------------------------------------------- compute


def compute(store_root: str, day: str, start: str, cfg: DFSConfig, manifest: dict, entities: list,
            events: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """Candidate rows of `entities` at day D's cutoff (pure: returns the frame and per-family seconds)."""
    if not entities:
        raise EmptyShardError(f"{ASSET} {day}: empty shard (no entities)")
    frames, seconds = compute_many(store_root, start, cfg, manifest, {day: entities}, events)
    return frames[day], seconds


def compute_many(store_root: str, start: str, cfg: DFSConfig, manifest: dict, entities_by_day: dict[str, list],
                 events: pd.DataFrame | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
    """Candidate rows of each day's entities at its cutoff from one EntitySet (pure: frames per day, family seconds)."""
    entities_by_day = {d: e for d, e in entities_by_day.items() if len(e)}
    if not entities_by_day:
        raise EmptyShardError(f"{ASSET}: empty shard (no entities on any day)")
    t0 = time.perf_counter()
    feats = load_definitions(store_root, manifest)
    union = sorted(set().union(*[set(map(str, e)) for e in entities_by_day.values()]))
    days = sorted(entities_by_day, key=to_day)
    if events is None:
        events = read_events_many(store_root, days, start, cfg, union)
    es, ids = build_entityset(events, _dimension(store_root, "users"), _dimension(store_root, "products"), manifest["schema"], union)
    fms = feature_matrix_many(es, ids, feats, entities_by_day, cfg)
    seconds = {FAMILY: time.perf_counter() - t0}
    model = None
    if "pca" in manifest:
        from .reduction import apply_pca, load_pca

        model = load_pca(artifact_dir(store_root, ASSET, manifest["version"]) / "pca.npz")
    out = {}
    for d in days:
        fm = fms[d]
        blocks = [fm[manifest["features"]]]
        if model is not None:
            t1 = time.perf_counter()
            blocks.append(apply_pca(fm[manifest["features"]].astype("float64"), model, "dfs"))
            seconds[PCA_FAMILY] = seconds.get(PCA_FAMILY, 0.0) + time.perf_counter() - t1
        out[d] = as_candidates(pd.concat(blocks, axis=1), pd.DataFrame({cfg.entity: fm.index.astype(str)}), d)
    return out, seconds


def families(manifest: dict) -> dict[str, list[str]]:
    """Feature names per family for the cost file."""
    out = {FAMILY: list(manifest["features"])}
    if "pca" in manifest:
        out[PCA_FAMILY] = [f"dfs_pc{i:02d}" for i in range(manifest["pca"]["components"])]
    return out


def shard_task(store_root: str, start: str, cfg: DFSConfig, manifest: dict, days: list[str], readers: list[EventBuckets],
               buckets: list[int], n_buckets: int, staging: dict[str, str], index: int, n_shards: int,
               entities: list | None = None, max_rows: int | None = BATCH_ROWS) -> dict[str, dict]:
    """Dask task: one shard (entity buckets) over one or more days, its rows taken from every reader; writes a
    part per day that has entities here and returns small stats per such day (none: nothing to do)."""
    t0, c0 = time.perf_counter(), time.thread_time()
    days = sorted(days, key=to_day)
    where = f"{ASSET} {days[0]}" + (f"..{days[-1]}" if len(days) > 1 else "")
    events = pd.DataFrame()
    try:
        events = events_from_pieces([r.take(buckets) for r in readers])
        also = snapshot_entities(store_root, cfg, entities)
        if also:  # this shard's snapshot users: those in its buckets
            also = np.array(also, dtype=object)[np.isin(entity_buckets(np.array(also, dtype=object), n_buckets), buckets)].tolist()
        frames, seconds = compute_events(store_root, start, cfg, manifest, days, events, also, max_rows)
        written = {d: (f, write_part(f, Path(staging[d]), index)) for d, f in frames.items()}
    except CandidateError as exc:
        raise type(exc)(f"{where} shard {index + 1}/{n_shards}: {exc}") from exc
    except Exception as exc:
        n = events[cfg.entity].nunique() if cfg.entity in events.columns else 0
        raise CandidateError(f"{where} shard {index + 1}/{n_shards} ({n} entities with events): {type(exc).__name__}: {exc}") from exc
    # one computation served every day: its time is shared out by rows
    total = max(sum(len(df) for df, _ in written.values()), 1)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    out = {}
    for d, (df, w) in written.items():
        share = len(df) / total
        out[d] = {"day": d, "shard": index, "entities": len(df), "rows": w["rows"], "bytes": w["bytes"],
                  "column_bytes": w["column_bytes"], "seconds": {k: v * share for k, v in seconds.items()},
                  "task_seconds": wall * share, "cpu_seconds": cpu * share, "worker": worker_name(),
                  "null_share": float(df[manifest["features"]].isna().to_numpy().mean()) if len(df) else 0.0}
    return out
