"""The HTTP service as users start it (a uvicorn process), against SQLite and Redis.

Answers are compared with the rows written (brute force); bad requests get clear 4xx;
a store that is down gets a 503 with a reason, not a hang.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from featurecore.feature_sets import FeatureRef, FeatureSet
from featurecore.online import open_store
from redis_server import RedisProcess, free_port, redis_server, redis_url  # noqa: F401  (fixtures)

PROJECT = Path(__file__).resolve().parent.parent
CUT = pd.Timestamp("2026-10-31", tz="UTC")
N_USERS = 1500
FS = FeatureSet(
    "api_set", "1", ("user_id",),
    (FeatureRef("grp", "clicks", "float64"), FeatureRef("grp", "ratio", "float64"),
     FeatureRef("lists", "recent", "list")),
    ttl_seconds={"grp": 30 * 86400, "lists": 7 * 86400},
)


def expected_frames():
    rng = np.random.default_rng(3)
    users = [f"u{i:05d}" for i in range(N_USERS)]
    ratio = rng.random(N_USERS)
    ratio[::7] = np.nan
    grp = pd.DataFrame({"user_id": users, "cutoff": CUT, "clicks": rng.integers(0, 50, N_USERS).astype(float),
                        "ratio": ratio})
    lists = pd.DataFrame({"user_id": users[::2], "cutoff": CUT - pd.Timedelta(days=3),
                          "recent": [[f"p{j}" for j in range(i % 4)] for i in range(0, N_USERS, 2)]})
    return grp, lists


def fill(url: str) -> None:
    s = open_store(url)
    s.register(FS)
    grp, lists = expected_frames()
    s.write_frame(FS, "grp", grp)
    s.write_frame(FS, "lists", lists)
    s.close()


class Service:
    """`python -m featurecore.serving_api` in a child process."""

    def __init__(self, url: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "featurecore.serving_api", "--port", str(self.port), "--store-url", url,
             "--max-batch", "2000"],
            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(self.base + "/openapi.json", timeout=1)
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stdout.read().decode())
                time.sleep(0.2)
        raise RuntimeError("serving did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sqlite_service(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'online.sqlite'}"
    fill(url)
    svc = Service(url)
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def redis_service(redis_server):  # noqa: F811
    fill(redis_server.url)
    svc = Service(redis_server.url)
    yield svc
    svc.stop()


@pytest.fixture(params=["sqlite", "redis"])
def service(request):
    return request.getfixturevalue(f"{request.param}_service")


def test_batch_lookup_of_1000_entities_equals_what_was_written(service):
    grp, lists = expected_frames()
    ids = [f"u{i:05d}" for i in range(0, 2000, 2)]  # 750 known, 250 unknown
    r = httpx.post(f"{service.base}/features/api_set", json={"entities": ids, "at": (CUT + pd.Timedelta(days=5)).isoformat()},
                   timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["features"] == ["grp.clicks", "grp.ratio", "lists.recent"]
    assert body["missing_entities"] == 250 and len(body["results"]) == 1000
    g = grp.set_index("user_id")
    li = lists.set_index("user_id")
    for res in body["results"]:
        u = res["entity"]["user_id"]
        if u not in g.index:
            assert not res["found"] and res["statuses"] == ["missing"] * 3 and res["values"] == [None] * 3
            continue
        ratio = g.loc[u, "ratio"]
        assert res["values"][:2] == [g.loc[u, "clicks"], None if np.isnan(ratio) else ratio]
        # lists: cutoff 3 days earlier + 5 days later = 8 days old > 7-day TTL -> expired, not present
        assert res["statuses"] == ["present", "present", "expired" if u in li.index else "missing"]
        assert res["values"][2] is None
        assert body["sources"] == ["grp", "lists"]
        assert res["rows"][0] == [CUT.isoformat(), CUT.isoformat(), "batch"]


def test_single_lookup_and_metadata(service):
    _, lists = expected_frames()
    u = lists["user_id"].iloc[5]
    r = httpx.get(f"{service.base}/features/api_set", params={"user_id": u, "at": CUT.isoformat()})
    assert r.status_code == 200
    res = r.json()["results"][0]
    assert res["statuses"] == ["present"] * 3 and res["values"][2] == lists["recent"].iloc[5]
    assert httpx.get(f"{service.base}/health").json()["status"] == "ok"
    sets = httpx.get(f"{service.base}/feature-sets").json()["feature_sets"]
    assert [(s["name"], s["version"], s["features"]) for s in sets] == [("api_set", "1", 3)]
    d = httpx.get(f"{service.base}/feature-sets/api_set").json()
    assert d["ttl_seconds"] == {"grp": 30 * 86400, "lists": 7 * 86400} and d["entity_keys"] == ["user_id"]


@pytest.mark.parametrize("method,path,kwargs,status,message", [
    ("post", "/features/nope", {"json": {"entities": ["u1"]}}, 404, "unknown feature set 'nope'; served: api_set v1"),
    ("get", "/feature-sets/nope", {}, 404, "unknown feature set 'nope'"),
    ("post", "/features/api_set", {"json": {"entities": ["u1"], "version": "7"}}, 404, "has no version '7'"),
    ("get", "/features/api_set", {"params": {"user_id": "u99999"}}, 404, "unknown entity user_id=u99999"),
    ("post", "/features/api_set", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422,
     "malformed request: body is not valid JSON"),
    ("post", "/features/api_set", {"json": {"ids": ["u1"]}}, 422, "entities: Field required"),
    ("post", "/features/api_set", {"json": {"entities": []}}, 422, "entities: List should have at least 1 item"),
    ("post", "/features/api_set", {"json": {"entities": [{"product_id": "p1"}]}}, 422, "is keyed by ['user_id']"),
    ("post", "/features/api_set", {"json": {"entities": ["u1"], "at": "yesterday-ish"}}, 422, "cannot parse at="),
    ("get", "/features/api_set", {"params": {"customer": "u1"}}, 422, "pass the entity key(s) ['user_id']"),
    ("post", "/features/api_set", {"json": {"entities": ["u1"] * 2001}}, 413, "at most 2000"),
])
def test_bad_requests_get_clear_4xx(service, method, path, kwargs, status, message):
    r = getattr(httpx, method)(service.base + path, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.json()
    assert r.json()["status"] == status


def test_store_down_gets_503_not_a_hang(redis_server):  # noqa: F811
    server = RedisProcess().start()
    fill(server.url)
    svc = Service(server.url)
    try:
        assert httpx.post(f"{svc.base}/features/api_set", json={"entities": ["u00001"]}, timeout=30).status_code == 200
        server.stop()
        # the client timeout is a watchdog against a hang, far above the store's own timeouts
        r = httpx.post(f"{svc.base}/features/api_set", json={"entities": ["u00001"]}, timeout=30)
        assert r.status_code == 503 and "online store unavailable" in r.json()["error"]
        assert str(server.port) in r.json()["error"]
        h = httpx.get(f"{svc.base}/health", timeout=30)
        assert h.status_code == 503
    finally:
        svc.stop()
        server.stop()


def test_missing_sqlite_file_gets_503(tmp_path):
    svc = Service(f"sqlite:///{tmp_path / 'never-written.sqlite'}")
    try:
        r = httpx.get(f"{svc.base}/features/api_set", params={"user_id": "u1"}, timeout=30)
        assert r.status_code == 503 and "does not exist" in r.json()["error"]
    finally:
        svc.stop()
