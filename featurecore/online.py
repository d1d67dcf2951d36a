"""Online store: the latest feature values of a feature set per entity, in SQLite or Redis.

No Dagster imports: the materialization asset, the streaming updater, the HTTP service
and the skew check all use this module.

Data model
----------
A value row is one (feature set version, source, origin, entity): the set's features of
that source as a JSON list (set order), plus a *stamp* ``cutoff`` and ``as_of`` (UTC
nanoseconds). ``cutoff`` is the row's place in the time contract (the row is the
feature row of partition D, cutoff D+1 00:00, using events with ts < cutoff); ``as_of``
is how far the row has seen events: ``as_of == cutoff`` for batch rows, the stream
watermark for a provisional streamed row of the current day.

``origin`` is ``batch`` (written by the daily materialization; authoritative) or
``stream`` (written by the streaming updater). Both are kept, so a lookup at time
``at`` can serve the newest row that existed at ``at``.

Reading (``lookup``) at time ``at`` (default: now), per source:
- candidates are the batch and stream rows with ``as_of <= at`` (a row from after
  ``at`` did not exist then); the newest by ``(cutoff, as_of)`` wins, batch on a tie;
- no candidate -> every feature of the source is ``missing`` (value null);
- ``at - as_of > ttl(source)`` -> ``expired`` (value null, never served as present):
  the same rule as the training-set as-of join (a row older than the TTL is ignored);
- else ``present``. A present value may still be null when the feature is undefined
  for the entity (e.g. a ratio with a zero denominator), exactly as offline.

Writes are conditional per row: a row replaces the stored one of the same key only if
its stamp ``(cutoff, as_of)`` is not older, so a backfill of an old day never
overwrites newer values and the batch row of a day replaces that day's streamed row.

Round trips: a lookup of any number of entities is one request to the store (SQLite:
one ``SELECT ... WHERE entity IN (SELECT value FROM json_each(?))``; Redis: one
pipeline of ``HMGET`` per source and origin). Feature-set definitions are cached in the
process (refreshed every ``DEFINITION_REFRESH_S`` seconds or on an unknown name).

Store URLs: ``sqlite:///abs/path/online.sqlite`` or ``redis://host:port/db``;
``default_store_url(store_root)`` picks ``ONLINE_STORE_URL``, else ``REDIS_URL``, else
``sqlite:///<store_root>/online/online.sqlite``. Every call to a store that is down
raises ``StoreUnavailable`` within the connect/socket timeouts (Redis 0.5 s connect,
2 s socket by default; SQLite busy timeout 2 s for readers, 60 s for writers), never hangs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson
import pandas as pd

from .feature_sets import FeatureSet, _version_key

PRESENT, MISSING, EXPIRED = "present", "missing", "expired"
STATUSES = (PRESENT, MISSING, EXPIRED)
BATCH, STREAM = "batch", "stream"
ORIGINS = (BATCH, STREAM)
_ORIGIN_RANK = {STREAM: 0, BATCH: 1}  # batch wins a tie: it is authoritative
STAMP_DIGITS = 19  # ns since the epoch fit 19 digits until the year 2286
STAMP_LEN = 2 * STAMP_DIGITS
KEY_SEP = "\x1f"  # joins the values of a multi-column entity key
DEFINITION_REFRESH_S = 10.0
NS = 10**9


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached or opened (down, wrong URL, timeout, locked)."""


class UnknownFeatureSet(KeyError):
    """No such feature set (or version) is served by this online store."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown feature set"


class BadEntity(ValueError):
    """An entity whose key columns do not match the feature set's entity keys."""


# --------------------------------------------------------------------------- encoding


def stamp_of(cutoff_ns: int, as_of_ns: int) -> str:
    """Fixed-width ``cutoff`` + ``as_of`` digits: string order is time order (Redis Lua compares strings)."""
    return f"{int(cutoff_ns):0{STAMP_DIGITS}d}{int(as_of_ns):0{STAMP_DIGITS}d}"


def parse_stamp(stamp: str | bytes) -> tuple[int, int]:
    """(cutoff_ns, as_of_ns) of a stamp."""
    s = stamp.decode() if isinstance(stamp, bytes) else stamp
    return int(s[:STAMP_DIGITS]), int(s[STAMP_DIGITS:STAMP_LEN])


def entity_id(values: Sequence[Any]) -> str:
    """Canonical string of an entity key (``str`` of each key value, joined by U+001F)."""
    return KEY_SEP.join(str(v) for v in values)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, pd.Timestamp):
        return o.isoformat()
    return str(o)


def _clean(v: Any) -> Any:
    """JSON-safe value: NaN/NaT/None -> None, numpy scalars/arrays -> Python."""
    if v is None:
        return None
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, np.ndarray):
        return [_clean(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        return _clean(v.item())
    if v is pd.NaT or v is pd.NA:
        return None
    return v


def _dumps(values: list) -> str:
    try:
        return orjson.dumps(values, default=_json_default).decode()
    except TypeError:  # something orjson cannot write even through `default`
        return json.dumps(values, default=_json_default)


def encode_values(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """One JSON list per row of ``frame[columns]``; floats round-trip exactly (shortest repr)."""
    if not len(frame):
        return []
    cols = [frame[c].to_numpy(dtype=object) for c in columns]
    out = []
    for row in zip(*cols):
        vals = [_clean(v) for v in row]
        if any(isinstance(v, float) and math.isinf(v) for v in vals):  # orjson would write null
            out.append(json.dumps(vals, default=_json_default))
        else:
            out.append(_dumps(vals))
    return out


def decode_values(text: str | bytes) -> list:
    """Inverse of ``encode_values``."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # a row with +-Infinity


def to_ns(at: Any) -> int:
    """UTC nanoseconds of a time (str, datetime, Timestamp, int ns); naive means UTC."""
    if at is None:
        return time.time_ns()
    if isinstance(at, (int, np.integer)):
        return int(at)
    ts = pd.Timestamp(at)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)


@functools.lru_cache(maxsize=8192)
def iso(ns: int | None) -> str | None:
    """ISO 8601 UTC text of nanoseconds (cached: a day's rows share one cutoff)."""
    return None if ns is None else pd.Timestamp(int(ns), tz="UTC").isoformat()


# --------------------------------------------------------------------------- backends


@dataclass
class _Rows:
    """Fetched rows: (source, origin) -> {entity: (stamp, json values)}."""

    data: dict[tuple[str, str], dict[str, tuple[str, str]]]


class SQLiteBackend:
    """One table of value rows keyed by (set, entity, source, origin); WAL so readers never wait for a writer."""

    def __init__(self, path: str, *, readonly: bool = False, timeout: float = 2.0):
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self.readonly = readonly
        self.timeout = timeout
        self._local = threading.local()
        if not readonly:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with self._conn() as c:
                c.executescript(
                    """
                    CREATE TABLE IF NOT EXISTS online_values (
                        fset TEXT NOT NULL, entity TEXT NOT NULL, source TEXT NOT NULL, origin TEXT NOT NULL,
                        stamp TEXT NOT NULL, vals TEXT NOT NULL,
                        PRIMARY KEY (fset, entity, source, origin)) WITHOUT ROWID;
                    CREATE TABLE IF NOT EXISTS feature_sets (
                        name TEXT NOT NULL, version TEXT NOT NULL, definition TEXT NOT NULL,
                        PRIMARY KEY (name, version));
                    CREATE TABLE IF NOT EXISTS markers (
                        fset TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (fset, key));
                    """
                )

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                if self.readonly:
                    if not Path(self.path).is_file():
                        raise StoreUnavailable(f"online store {self.url}: file does not exist (nothing materialized yet?)")
                    c = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout,
                                        check_same_thread=False)
                else:
                    # writers (one Dask task per feature set) queue behind each other's transactions
                    c = sqlite3.connect(self.path, timeout=max(self.timeout, 60.0), check_same_thread=False)
                    _set_wal(c, max(self.timeout, 60.0))
                    c.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as e:
                raise StoreUnavailable(f"online store {self.url}: cannot open: {e}") from e
            self._local.conn = c
        return c

    def _run(self, fn):
        try:
            return fn(self._conn())
        except sqlite3.OperationalError as e:
            # A vanished file, a lock held past the busy timeout, a read-only mount: all mean "down".
            self._local.conn = None
            raise StoreUnavailable(f"online store {self.url}: {e}") from e

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""
        self._run(lambda c: c.execute("SELECT count(*) FROM feature_sets").fetchone())

    def put_definition(self, name: str, version: str, definition: str) -> None:
        """Store a feature set version's JSON definition."""
        def go(c):
            with c:
                c.execute("INSERT OR REPLACE INTO feature_sets VALUES (?, ?, ?)", (name, version, definition))
        self._run(go)

    def definitions(self) -> list[tuple[str, str, str]]:
        """(name, version, JSON definition) of every stored set."""
        return self._run(lambda c: c.execute("SELECT name, version, definition FROM feature_sets").fetchall())

    def set_marker(self, fset: str, key: str, value: str) -> None:
        """Store a small per-set value (e.g. the latest batch day)."""
        def go(c):
            with c:
                c.execute("INSERT OR REPLACE INTO markers VALUES (?, ?, ?)", (fset, key, value))
        self._run(go)

    def get_marker(self, fset: str, key: str) -> str | None:
        """A per-set value, or None."""
        r = self._run(lambda c: c.execute("SELECT value FROM markers WHERE fset = ? AND key = ?", (fset, key)).fetchone())
        return r[0] if r else None

    def write(self, fset: str, source: str, origin: str, entities: list[str], stamps: list[str],
              vals: list[str]) -> int:
        """Conditionally write value rows; returns how many replaced or added a row."""
        sql = (
            "INSERT INTO online_values (fset, entity, source, origin, stamp, vals) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (fset, entity, source, origin) DO UPDATE SET stamp = excluded.stamp, vals = excluded.vals "
            "WHERE excluded.stamp >= online_values.stamp"
        )

        def go(c):
            with c:
                before = c.total_changes
                c.executemany(sql, ((fset, e, source, origin, s, v) for e, s, v in zip(entities, stamps, vals)))
                return c.total_changes - before
        return self._run(go)

    def fetch(self, fset: str, sources: list[str], entities: list[str]) -> _Rows:
        """Every stored row of these entities and sources, in one round trip."""
        def go(c):
            return c.execute(
                "SELECT entity, source, origin, stamp, vals FROM online_values "
                "WHERE fset = ? AND entity IN (SELECT value FROM json_each(?))",
                (fset, json.dumps(entities)),
            ).fetchall()
        out: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        want = set(sources)
        for ent, src, origin, stamp, vals in self._run(go):
            if src in want:
                out.setdefault((src, origin), {})[ent] = (stamp, vals)
        return _Rows(out)

    def count(self, fset: str) -> int:
        """Number of stored value rows of a set."""
        return self._run(lambda c: c.execute("SELECT count(*) FROM online_values WHERE fset = ?", (fset,)).fetchone()[0])

    def close(self) -> None:
        """Release connections."""
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


# Conditional write: set each field only if the stored stamp is not newer (atomic per call).
_REDIS_WRITE_LUA = """
local n = 0
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if (not old) or string.sub(old, 1, %d) <= string.sub(ARGV[i + 1], 1, %d) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
""" % (STAMP_LEN, STAMP_LEN)


class RedisBackend:
    """One hash per (set, source, origin): field = entity, value = stamp + JSON list."""

    PREFIX = "ff"

    def __init__(self, url: str, *, connect_timeout: float = 0.5, socket_timeout: float = 2.0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        # One quick retry covers a dropped idle connection; a server that is down fails fast.
        self.r = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                                      retry=Retry(NoBackoff(), 1), health_check_interval=0)
        self._write = self.r.register_script(_REDIS_WRITE_LUA)

    def _run(self, fn):
        try:
            return fn()
        except self._errors as e:
            raise StoreUnavailable(f"online store {_redact(self.url)}: {type(e).__name__}: {e}") from e

    def _key(self, fset: str, source: str, origin: str) -> str:
        return f"{self.PREFIX}:v:{fset}:{source}:{origin}"

    def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""
        self._run(self.r.ping)

    def put_definition(self, name: str, version: str, definition: str) -> None:
        """Store a feature set version's JSON definition."""
        self._run(lambda: self.r.hset(f"{self.PREFIX}:sets", f"{name}@{version}", definition))

    def definitions(self) -> list[tuple[str, str, str]]:
        """(name, version, JSON definition) of every stored set."""
        raw = self._run(lambda: self.r.hgetall(f"{self.PREFIX}:sets"))
        out = []
        for k, v in raw.items():
            name, version = k.decode().rsplit("@", 1)
            out.append((name, version, v.decode()))
        return out

    def set_marker(self, fset: str, key: str, value: str) -> None:
        """Store a small per-set value (e.g. the latest batch day)."""
        self._run(lambda: self.r.hset(f"{self.PREFIX}:markers:{fset}", key, value))

    def get_marker(self, fset: str, key: str) -> str | None:
        """A per-set value, or None."""
        v = self._run(lambda: self.r.hget(f"{self.PREFIX}:markers:{fset}", key))
        return v.decode() if v is not None else None

    def write(self, fset: str, source: str, origin: str, entities: list[str], stamps: list[str],
              vals: list[str], chunk: int = 2000) -> int:
        """Conditionally write value rows; returns how many replaced or added a row."""
        key = self._key(fset, source, origin)

        def go():
            pipe = self.r.pipeline(transaction=False)
            for i in range(0, len(entities), chunk):
                args: list[str] = []
                for e, s, v in zip(entities[i:i + chunk], stamps[i:i + chunk], vals[i:i + chunk]):
                    args += [e, s + v]
                self._write(keys=[key], args=args, client=pipe)
            return sum(int(x) for x in pipe.execute())
        return self._run(go) if entities else 0

    def fetch(self, fset: str, sources: list[str], entities: list[str]) -> _Rows:
        """Every stored row of these entities and sources, in one round trip."""
        def go():
            pipe = self.r.pipeline(transaction=False)
            order = [(s, o) for s in sources for o in ORIGINS]
            for s, o in order:
                pipe.hmget(self._key(fset, s, o), entities)
            return order, pipe.execute()
        order, results = self._run(go)
        out: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
        for so, vals in zip(order, results):
            d = {}
            for e, v in zip(entities, vals):
                if v is not None:
                    d[e] = (v[:STAMP_LEN].decode(), v[STAMP_LEN:].decode())
            if d:
                out[so] = d
        return _Rows(out)

    def count(self, fset: str) -> int:
        """Number of stored value rows of a set."""
        def go():
            keys = list(self.r.scan_iter(match=f"{self.PREFIX}:v:{fset}:*", count=1000))
            return sum(self.r.hlen(k) for k in keys)
        return self._run(go)

    def close(self) -> None:
        """Release connections."""
        self.r.close()


def _redact(url: str) -> str:
    """A URL without its password, for messages and metadata."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def redact(url: str) -> str:
    """A store URL safe to show (password removed)."""
    return _redact(url)


# --------------------------------------------------------------------------- store


def default_store_url(store_root: str) -> str:
    """``ONLINE_STORE_URL``, else ``REDIS_URL``, else a SQLite file inside the offline store root."""
    url = os.environ.get("ONLINE_STORE_URL") or os.environ.get("REDIS_URL")
    if url:
        return url
    return f"sqlite:///{Path(store_root).resolve() / 'online' / 'online.sqlite'}"


def backend_kind(url: str) -> str:
    """``sqlite`` or ``redis`` from a store URL (ValueError otherwise)."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return "redis"
    raise ValueError(f"unsupported online store URL {url!r}: use sqlite:///<path> or redis://host:port/db")


@dataclass
class LookupResult:
    """Feature vectors of a batch of entities, with a status per feature and the rows they came from."""

    feature_set: FeatureSet
    at_ns: int
    entities: list[dict]
    values: list[list]
    statuses: list[list[str]]
    rows: list[dict[str, dict | None]]  # per entity: source -> {cutoff, as_of, origin} of the row served

    @property
    def features(self) -> list[str]:
        """Qualified feature names (``source.feature``), in set order."""
        return [f.qualified for f in self.feature_set.features]

    def found(self, i: int) -> bool:
        """True when entity ``i`` has a row for some source (even an expired one)."""
        return any(r is not None for r in self.rows[i].values())

    def to_dict(self) -> dict:
        """JSON-ready answer (the HTTP service returns exactly this).

        Per entity, ``rows`` lists for each of ``sources`` the served row as ``[cutoff,
        as_of, origin]`` (null when the source has none): compact, as it repeats per entity.
        """
        sources = self.feature_set.sources
        return {
            "feature_set": self.feature_set.name,
            "version": self.feature_set.version,
            "at": iso(self.at_ns),
            "features": self.features,
            "sources": sources,
            "results": [
                {
                    "entity": e,
                    "found": self.found(i),
                    "values": self.values[i],
                    "statuses": self.statuses[i],
                    "rows": [None if (r := self.rows[i].get(s)) is None else [r["cutoff"], r["as_of"], r["origin"]]
                             for s in sources],
                }
                for i, e in enumerate(self.entities)
            ],
        }

    def to_frame(self) -> pd.DataFrame:
        """Keys, then per feature its value and ``<feature>__status`` columns."""
        df = pd.DataFrame(self.entities)
        names = self.features
        vals = pd.DataFrame(self.values, columns=names, index=df.index) if self.values else pd.DataFrame(columns=names)
        sts = pd.DataFrame(self.statuses, columns=[f"{n}__status" for n in names], index=df.index) \
            if self.statuses else pd.DataFrame(columns=[f"{n}__status" for n in names])
        return pd.concat([df, vals, sts], axis=1)


class OnlineStore:
    """A feature-set-aware view over a SQLite or Redis backend: register, write rows, look up vectors."""

    def __init__(self, url: str, *, readonly: bool = False, connect_timeout: float = 0.5,
                 socket_timeout: float = 2.0):
        self.url = url
        self.kind = backend_kind(url)
        if self.kind == "sqlite":
            # sqlite:////abs/path (absolute) or sqlite:///rel/path, as in SQLAlchemy
            self.backend = SQLiteBackend(url[len("sqlite:///"):], readonly=readonly, timeout=socket_timeout)
        else:
            self.backend = RedisBackend(url, connect_timeout=connect_timeout, socket_timeout=socket_timeout)
        self._defs: dict[str, dict[str, FeatureSet]] = {}
        self._defs_at = 0.0
        self._lock = threading.Lock()

    # -- definitions
    def register(self, fs: FeatureSet) -> None:
        """Record a feature set version as served (its definition travels with the values)."""
        self.backend.put_definition(fs.name, fs.version, fs.to_json())
        self._defs_at = 0.0

    def _load_definitions(self, force: bool = False) -> dict[str, dict[str, FeatureSet]]:
        now = time.monotonic()
        if force or now - self._defs_at > DEFINITION_REFRESH_S:
            defs: dict[str, dict[str, FeatureSet]] = {}
            for name, version, text in self.backend.definitions():
                defs.setdefault(name, {})[version] = FeatureSet.from_json(text)
            with self._lock:
                self._defs, self._defs_at = defs, now
        return self._defs

    def feature_set(self, name: str, version: str | None = None) -> FeatureSet:
        """A served set (the highest version when ``version`` is None); UnknownFeatureSet otherwise."""
        for force in (False, True):
            defs = self._load_definitions(force)
            versions = defs.get(name)
            if versions and (version is None or str(version) in versions):
                if version is None:
                    return versions[max(versions, key=_version_key)]
                return versions[str(version)]
            if force:
                break
        if name not in defs:
            served = ", ".join(f"{n} v{v}" for n in sorted(defs) for v in sorted(defs[n], key=_version_key)) or "none"
            raise UnknownFeatureSet(f"unknown feature set {name!r}; served: {served}")
        raise UnknownFeatureSet(
            f"feature set {name!r} has no version {version!r}; served versions: {', '.join(sorted(defs[name], key=_version_key))}"
        )

    def served_sets(self) -> list[dict]:
        """Name, version, entity keys and feature count of every served set."""
        defs = self._load_definitions(force=True)
        return [
            {"name": n, "version": v, "entity_keys": list(fs.entity_keys), "features": len(fs.features),
             "materialized_day": self.materialized_day(fs)}
            for n in sorted(defs) for v, fs in sorted(defs[n].items(), key=lambda kv: _version_key(kv[0]))
        ]

    def mark_materialized(self, fs: FeatureSet, day: str) -> None:
        """Remember the latest batch day written for a set (never moves backwards)."""
        old = self.materialized_day(fs)
        if old is None or day > old:
            self.backend.set_marker(_fset(fs), "batch_day", day)

    def materialized_day(self, fs: FeatureSet) -> str | None:
        """The latest batch day written for a set, if any."""
        return self.backend.get_marker(_fset(fs), "batch_day")

    # -- writes
    def write_frame(self, fs: FeatureSet, source: str, frame: pd.DataFrame, *, origin: str = BATCH,
                    as_of: Any = None) -> dict:
        """Write rows of one source (keys, ``cutoff``, features) for a set; older-than-stored rows are skipped.

        ``as_of``: None -> each row's cutoff (a complete batch row); else a time (or a
        per-row array of ns) up to which a streamed row has seen events.
        """
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}")
        feats = fs.features_of(source)
        if not feats:
            raise ValueError(f"feature set {fs.name} v{fs.version} has no features from {source!r}")
        missing = [c for c in [*fs.entity_keys, "cutoff", *feats] if c not in frame.columns]
        if missing:
            raise ValueError(f"{source}: rows lack columns {missing} needed by feature set {fs.name} v{fs.version}")
        if not len(frame):
            return {"rows": 0, "written": 0, "bytes": 0}
        keys = entity_ids(frame, fs.entity_keys)
        cut = _ns_array(frame["cutoff"])
        if as_of is None:
            aso = cut
        elif np.ndim(as_of) == 0:
            aso = np.minimum(np.full(len(frame), to_ns(as_of), dtype=np.int64), cut)
        else:
            aso = np.minimum(np.asarray(as_of, dtype=np.int64), cut)
        stamps = [f"{c:0{STAMP_DIGITS}d}{a:0{STAMP_DIGITS}d}" for c, a in zip(cut.tolist(), aso.tolist())]
        vals = encode_values(frame, feats)
        written = self.backend.write(_fset(fs), source, origin, keys, stamps, vals)
        return {"rows": len(frame), "written": int(written), "bytes": int(sum(map(len, vals)))}

    # -- reads
    def lookup(self, feature_set: str | FeatureSet, entities: Sequence[Any], *, version: str | None = None,
               at: Any = None) -> LookupResult:
        """Feature vectors of ``entities`` as of ``at`` (default now), in one round trip to the store."""
        fs = feature_set if isinstance(feature_set, FeatureSet) else self.feature_set(feature_set, version)
        ents = normalize_entities(fs, entities)
        ids = [entity_id([e[k] for k in fs.entity_keys]) for e in ents]
        at_ns = to_ns(at)
        sources = fs.sources
        fetched = self.backend.fetch(_fset(fs), sources, list(dict.fromkeys(ids))).data if ids else {}
        ttl_ns = {s: (fs.ttl_seconds[s] * NS if s in fs.ttl_seconds else None) for s in sources}
        width = {s: len(fs.features_of(s)) for s in sources}
        values, statuses, rows = [], [], []
        infos: dict[tuple[str, str], dict] = {}  # (stamp, origin) -> row info, shared by equal rows
        stamps: dict[str, tuple[int, int]] = {}
        for eid in ids:
            per_src: dict[str, tuple[list, str, dict | None]] = {}
            row_info: dict[str, dict | None] = {}
            for s in sources:
                best = None
                for origin in ORIGINS:
                    hit = fetched.get((s, origin), {}).get(eid)
                    if hit is None:
                        continue
                    parsed = stamps.get(hit[0])
                    if parsed is None:
                        parsed = stamps[hit[0]] = parse_stamp(hit[0])
                    cut, aso = parsed
                    if aso > at_ns:
                        continue  # did not exist yet at `at`
                    key = (cut, aso, _ORIGIN_RANK[origin])
                    if best is None or key > best[0]:
                        best = (key, origin, hit[1], hit[0])
                if best is None:
                    per_src[s] = ([None] * width[s], MISSING, None)
                    row_info[s] = None
                    continue
                (cut, aso, _), origin, text, stamp = best
                info = infos.get((stamp, origin))
                if info is None:
                    info = infos[(stamp, origin)] = {"cutoff": iso(cut), "as_of": iso(aso), "origin": origin}
                ttl = ttl_ns[s]
                if ttl is not None and at_ns - aso > ttl:
                    per_src[s] = ([None] * width[s], EXPIRED, info)
                else:
                    vals = decode_values(text)
                    if len(vals) != width[s]:
                        raise ValueError(f"stored row of {s} for {eid!r} has {len(vals)} values, expected {width[s]}")
                    per_src[s] = (vals, PRESENT, info)
                row_info[s] = info
            it = {s: iter(per_src[s][0]) for s in sources}
            values.append([next(it[f.source]) for f in fs.features])
            statuses.append([per_src[f.source][1] for f in fs.features])
            rows.append(row_info)
        return LookupResult(fs, at_ns, ents, values, statuses, rows)

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot answer."""
        self.backend.ping()

    def count(self, fs: FeatureSet) -> int:
        """Stored value rows of a set (all sources and origins)."""
        return self.backend.count(_fset(fs))

    def close(self) -> None:
        """Release connections."""
        self.backend.close()


def _fset(fs: FeatureSet) -> str:
    return f"{fs.name}@{fs.version}"


def _ns_array(s: pd.Series) -> np.ndarray:
    return pd.to_datetime(s, utc=True).dt.as_unit("ns").array.asi8.astype(np.int64)


def entity_ids(frame: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Canonical entity strings of a frame's key columns (see ``entity_id``)."""
    if len(keys) == 1:
        return [str(v) for v in frame[keys[0]].tolist()]
    cols = [frame[k].tolist() for k in keys]
    return [KEY_SEP.join(str(v) for v in vals) for vals in zip(*cols)]


def entity_dict(keys: Sequence[str], eid: str) -> dict:
    """Inverse of ``entity_id``: ``{key: value}`` (values as strings)."""
    return dict(zip(keys, eid.split(KEY_SEP))) if len(keys) > 1 else {keys[0]: eid}


def normalize_entities(fs: FeatureSet, entities: Sequence[Any]) -> list[dict]:
    """Entities as ``{key: value}`` dicts; a bare value is accepted for single-key sets. BadEntity otherwise."""
    keys = list(fs.entity_keys)
    out = []
    for i, e in enumerate(entities):
        if isinstance(e, dict):
            if set(e) != set(keys):
                raise BadEntity(
                    f"entity #{i} has keys {sorted(e)}; feature set {fs.name} v{fs.version} is keyed by {keys}"
                )
            vals = [e[k] for k in keys]
        elif len(keys) == 1 and isinstance(e, (str, int, np.integer)) and not isinstance(e, bool):
            vals = [e]
        else:
            raise BadEntity(
                f"entity #{i} ({e!r}) is not an object with keys {keys}"
                + (" or a bare key value" if len(keys) == 1 else "")
            )
        for k, v in zip(keys, vals):
            if v is None or (isinstance(v, str) and not v) or isinstance(v, (bool, float, list, dict)):
                raise BadEntity(f"entity #{i}: key {k!r} must be a non-empty string or an integer, got {v!r}")
        out.append(dict(zip(keys, vals)))
    return out


def open_store(url: str, *, readonly: bool = False, **timeouts) -> OnlineStore:
    """An OnlineStore for a URL (see the module docstring)."""
    return OnlineStore(url, readonly=readonly, **timeouts)


def get_online_features(feature_set: str | FeatureSet, entities: Sequence[Any], *, store: OnlineStore | str,
                        version: str | None = None, at: Any = None) -> LookupResult:
    """The lookup API: feature vectors with per-feature status for one or many entities."""
    s = store if isinstance(store, OnlineStore) else open_store(store, readonly=True)
    try:
        return s.lookup(feature_set, entities, version=version, at=at)
    finally:
        if s is not store:
            s.close()


def _set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch a database to WAL, retrying: the switch needs an exclusive lock and ignores the busy
    timeout, so two writers opening a fresh file at once would otherwise fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
