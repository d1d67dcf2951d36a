"""The online store against a brute-force model, on real SQLite files and a real redis-server.

Values round-trip exactly; statuses follow the TTL rule at read time; conditional writes
keep the newest row; a batch lookup is one round trip; a store that is down raises
StoreUnavailable instead of hanging.
"""

from __future__ import annotations

import math
import threading
import uuid

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurecore.feature_sets import FeatureRef, FeatureSet
from featurecore.online import (
    BATCH, EXPIRED, MISSING, PRESENT, STREAM, BadEntity, StoreUnavailable, UnknownFeatureSet, get_online_features,
    open_store,
)
from redis_server import RedisProcess, free_port, redis_server, redis_url  # noqa: F401  (fixtures)

DAY_NS = 86_400 * 10**9
T0 = pd.Timestamp("2026-10-01", tz="UTC")
SETTINGS = dict(deadline=None, max_examples=25,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def make_set(name: str | None = None, ttl_a: int = 2 * 86400, ttl_b: int = 5 * 86400) -> FeatureSet:
    """Two sources with different TTLs; a float, a string and a list feature."""
    return FeatureSet(
        name or f"s{uuid.uuid4().hex[:8]}", "1", ("user_id",),
        (FeatureRef("src_a", "x", "float64"), FeatureRef("src_a", "label", "object"),
         FeatureRef("src_b", "y", "float64"), FeatureRef("src_b", "items", "list")),
        ttl_seconds={"src_a": ttl_a, "src_b": ttl_b},
    )


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """An empty online store of each backend."""
    url = f"sqlite:///{tmp_path / 'online.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("redis_url")
    s = open_store(url)
    yield s
    s.close()


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.just(0.1 + 0.2),
                   st.just(-0.0), st.just(1e-300), st.just(123456789.123456789))
labels = st.one_of(st.none(), st.text(max_size=8))
lists = st.lists(st.text(alphabet="abcdef", max_size=4), max_size=5)


@settings(**SETTINGS)
@given(data=st.lists(st.tuples(floats, labels, floats, lists), min_size=1, max_size=30))
def test_values_round_trip_exactly(store, data):
    fs = make_set()
    users = [f"u{i}" for i in range(len(data))]
    cut = T0 + pd.Timedelta(days=1)
    a = pd.DataFrame({"user_id": users, "cutoff": cut, "x": [d[0] for d in data], "label": [d[1] for d in data]})
    b = pd.DataFrame({"user_id": users, "cutoff": cut, "y": [d[2] for d in data],
                      "items": [np.array(d[3], dtype=object) for d in data]})
    store.register(fs)
    assert store.write_frame(fs, "src_a", a)["written"] == len(data)
    assert store.write_frame(fs, "src_b", b)["written"] == len(data)
    res = store.lookup(fs, users + ["nobody"], at=cut)
    for i, d in enumerate(data):
        assert res.statuses[i] == [PRESENT] * 4
        x, label, y, items = res.values[i]
        for got, want in ((x, d[0]), (y, d[2])):
            assert (got is None and math.isnan(want)) or (got == want and math.copysign(1, got) == math.copysign(1, want))
        assert label == d[1] and items == d[3]
        assert res.rows[i]["src_a"] == {"cutoff": cut.isoformat(), "as_of": cut.isoformat(), "origin": BATCH}
    assert res.statuses[-1] == [MISSING] * 4 and res.values[-1] == [None] * 4 and not res.found(len(data))


@settings(**SETTINGS)
@given(ops=st.lists(st.tuples(st.sampled_from(["u1", "u2"]), st.sampled_from([BATCH, STREAM]),
                              st.integers(0, 4), st.integers(0, 24)), min_size=1, max_size=25),
       at_hours=st.lists(st.integers(0, 24 * 14), min_size=1, max_size=6))
def test_writes_and_reads_follow_the_model(store, ops, at_hours):
    """A random history of batch/stream writes; every read equals a brute-force model of the rules.

    Hour 24 makes a stream row as of its cutoff (a closed day): it ties with the batch row, which must win.
    """
    fs = make_set()
    store.register(fs)
    kept: dict[tuple, tuple] = {}  # (user, origin) -> (cutoff, as_of, value): the newest stamp wins
    for n, (user, origin, day, hour) in enumerate(ops):
        cut = T0 + pd.Timedelta(days=day + 1)
        as_of = cut if origin == BATCH else T0 + pd.Timedelta(days=day, hours=hour)
        frame = pd.DataFrame({"user_id": [user], "cutoff": [cut], "x": [float(n)], "label": ["l"]})
        store.write_frame(fs, "src_a", frame, origin=origin, as_of=None if origin == BATCH else as_of)
        old = kept.get((user, origin))
        if old is None or (cut.value, as_of.value) >= (old[0], old[1]):
            kept[(user, origin)] = (cut.value, as_of.value, float(n))
    ttl = fs.ttl_seconds["src_a"] * 10**9
    for h in at_hours:
        at = T0 + pd.Timedelta(hours=h)
        res = store.lookup(fs, ["u1", "u2", "u3"], at=at)
        for i, user in enumerate(["u1", "u2", "u3"]):
            cands = [(c, a, 1 if o == BATCH else 0, v, o) for (u, o), (c, a, v) in kept.items() if u == user and a <= at.value]
            if not cands:
                want = (MISSING, None)
            else:
                c, a, _, v, o = max(cands)
                want = (EXPIRED, None) if at.value - a > ttl else (PRESENT, v)
            assert (res.statuses[i][0], res.values[i][0]) == want, (user, at, kept)


def test_batch_wins_a_tie_with_a_closed_stream_row(store):
    """A streamed row of a closed day has as_of == cutoff, like the batch row of that day: batch is served."""
    fs = make_set()
    store.register(fs)
    cut = T0 + pd.Timedelta(days=1)
    row = lambda x: pd.DataFrame({"user_id": ["u"], "cutoff": [cut], "x": [x], "label": ["l"]})  # noqa: E731
    store.write_frame(fs, "src_a", row(1.0), origin=BATCH)
    store.write_frame(fs, "src_a", row(2.0), origin=STREAM, as_of=cut)
    assert store.lookup(fs, ["u"], at=cut).values[0][0] == 1.0
    store.write_frame(fs, "src_a", row(3.0), origin=STREAM, as_of=cut - pd.Timedelta(hours=1))  # older: skipped
    store.write_frame(fs, "src_a", row(4.0), origin=BATCH)  # same stamp: replaces
    res = store.lookup(fs, ["u"], at=cut)
    assert res.values[0][0] == 4.0 and res.rows[0]["src_a"]["origin"] == BATCH


@settings(**SETTINGS)
@given(age_a=st.integers(-3, 3), age_b=st.integers(-3, 3))
def test_ttl_boundaries_per_source(store, age_a, age_b):
    """Age == TTL is present, TTL + 1 ns is expired; each source uses its own TTL."""
    fs = make_set()
    store.register(fs)
    cut = T0 + pd.Timedelta(days=1)
    store.write_frame(fs, "src_a", pd.DataFrame({"user_id": ["u"], "cutoff": [cut], "x": [1.0], "label": ["a"]}))
    store.write_frame(fs, "src_b", pd.DataFrame({"user_id": ["u"], "cutoff": [cut], "y": [2.0], "items": [["p"]]}))
    for src, age, ttl in (("src_a", age_a, fs.ttl_seconds["src_a"]), ("src_b", age_b, fs.ttl_seconds["src_b"])):
        at = cut.value + ttl * 10**9 + age
        res = store.lookup(fs, [{"user_id": "u"}], at=at)
        idx = [i for i, f in enumerate(fs.features) if f.source == src]
        want = EXPIRED if age > 0 else PRESENT
        assert {res.statuses[0][i] for i in idx} == {want}
        assert all((res.values[0][i] is None) == (want == EXPIRED) for i in idx)


def test_batch_lookup_is_one_round_trip(store, request):
    fs = make_set()
    store.register(fs)
    users = [f"u{i:05d}" for i in range(3000)]
    cut = T0 + pd.Timedelta(days=1)
    store.write_frame(fs, "src_a", pd.DataFrame({"user_id": users, "cutoff": cut, "x": 1.0, "label": "l"}))
    store.write_frame(fs, "src_b", pd.DataFrame({"user_id": users, "cutoff": cut, "y": 2.0, "items": [["a"]] * 3000}))
    want = users[::3][:1000]
    store.lookup(fs, want[:1], at=cut)  # definitions are cached after the first lookup
    if store.kind == "sqlite":
        statements = []
        conn = store.backend._conn()
        conn.set_trace_callback(statements.append)
        res = store.lookup(fs, want, at=cut)
        conn.set_trace_callback(None)
        assert len(statements) == 1 and "json_each" in statements[0]
    else:
        import redis
        from redis.connection import Connection

        admin = redis.Redis.from_url(store.url)
        before = admin.info("commandstats")
        sent = []
        original = Connection.send_packed_command

        def counting(self, command, check_health=True):
            sent.append(command)
            return original(self, command, check_health)

        Connection.send_packed_command = counting
        try:
            res = store.lookup(fs, want, at=cut)
        finally:
            Connection.send_packed_command = original
        after = admin.info("commandstats")
        admin.close()
        assert len(sent) == 1  # one write to the socket: the whole pipeline
        hmget = after["cmdstat_hmget"]["calls"] - before.get("cmdstat_hmget", {"calls": 0})["calls"]
        assert hmget == 2 * len(fs.sources)  # one HMGET per source and origin, not per entity
    assert [r["user_id"] for r in res.entities] == want
    assert all(s == [PRESENT] * 4 for s in res.statuses)


def test_bad_requests_are_named(store):
    fs = make_set("known")
    store.register(fs)
    with pytest.raises(UnknownFeatureSet, match="unknown feature set 'nope'; served: known v1"):
        store.lookup("nope", ["u1"])
    with pytest.raises(UnknownFeatureSet, match="has no version '9'"):
        store.lookup("known", ["u1"], version="9")
    with pytest.raises(BadEntity, match=r"keyed by \['user_id'\]"):
        store.lookup("known", [{"product_id": "p1"}])
    with pytest.raises(BadEntity, match="non-empty string or an integer"):
        store.lookup("known", [{"user_id": None}])


def _returns_within(fn, seconds: float):
    """Run fn in a thread; (finished, exception). A watchdog against hangs, not a speed test."""
    out: dict = {}

    def go():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            out["exc"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), out.get("exc")


def test_redis_down_raises_store_unavailable(redis_server, tmp_path):
    server = RedisProcess().start()
    s = open_store(server.url)
    fs = make_set("down")
    s.register(fs)
    s.write_frame(fs, "src_a", pd.DataFrame({"user_id": ["u"], "cutoff": [T0], "x": [1.0], "label": ["l"]}))
    assert s.lookup(fs, ["u"], at=T0).statuses[0][0] == PRESENT
    server.stop()
    done, exc = _returns_within(lambda: s.lookup(fs, ["u"], at=T0), 30)
    assert done, "lookup hung on a Redis that is down"
    assert isinstance(exc, StoreUnavailable) and str(server.port) in str(exc)
    # nothing listens on this port at all
    done, exc = _returns_within(lambda: open_store(f"redis://127.0.0.1:{free_port()}/0").lookup("x", ["u"]), 30)
    assert done and isinstance(exc, StoreUnavailable)
    s.close()


def test_get_online_features_opens_the_store_by_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'online.sqlite'}"
    w = open_store(url)
    fs = make_set("by_url")
    w.register(fs)
    w.write_frame(fs, "src_a", pd.DataFrame({"user_id": ["u", "v"], "cutoff": [T0] * 2, "x": [1.5, 2.5], "label": ["a", None]}))
    w.close()
    res = get_online_features("by_url", [{"user_id": "v"}, "u"], store=url, at=T0)
    assert [r[:2] for r in res.values] == [[2.5, None], [1.5, "a"]]
    assert [r[2:] for r in res.statuses] == [[MISSING, MISSING]] * 2
    frame = res.to_frame()
    assert list(frame["src_a.x"]) == [2.5, 1.5] and list(frame["src_b.y__status"]) == [MISSING, MISSING]


def test_sqlite_missing_file_is_unavailable(tmp_path):
    reader = open_store(f"sqlite:///{tmp_path / 'nothing' / 'online.sqlite'}", readonly=True)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        reader.lookup("user_core", ["u1"])
