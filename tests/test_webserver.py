"""The real Dagster webserver on the project's workspace, driven through its GraphQL API.

`dagster-webserver` runs as a subprocess with DAGSTER_HOME set to a temporary folder holding a
copy of the project's dagster.yaml, and LANDING_ROOT/STORE_ROOT pointing at a small
generated landing zone. That dagster.yaml uses the (default) QueuedRunCoordinator, so a run
launched through GraphQL is QUEUED until a `dagster-daemon` dequeues it; the test stops the
sensors and the schedule through GraphQL first (so the daemon launches nothing else), then
starts the daemon, and the run executes in its own process with its own LocalCluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from featurecore import demo_data

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parent.parent
BIN = PROJECT / ".venv" / "bin"
START = "2026-09-01"
DAY = "2026-09-02"
DEMO = demo_data.DemoConfig(start=START, days=2, users=200, products=50, events_per_day=800, seed=3)
REPO = {"repositoryLocationName": "feature_factory", "repositoryName": "__repository__"}
RUN_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Terminate a process we started with its whole process group (its code servers, runs)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # children left behind in the group (e.g. a run's worker processes)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Server:
    def __init__(self, url: str, logs: Path):
        self.url = url
        self.logs = logs

    def gql(self, query: str, variables: dict | None = None) -> dict:
        r = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("webserver")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    demo_data.generate(root / "landing", DEMO)
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    env.update(
        DAGSTER_HOME=str(home),
        LANDING_ROOT=str(root / "landing"),
        STORE_ROOT=str(root / "store"),
        PARTITION_START=START,
        PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")])),
    )
    port = free_port()
    procs: list[subprocess.Popen] = []
    files = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        f = open(root / f"{name}.log", "w")
        files.append(f)
        p = subprocess.Popen(args, cwd=PROJECT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    try:
        web = start("webserver", [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)])
        srv = Server(f"http://127.0.0.1:{port}", root)
        deadline = time.monotonic() + 90
        while True:
            assert web.poll() is None, (root / "webserver.log").read_text()
            try:
                if requests.get(f"{srv.url}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "webserver did not answer /server_info"
            time.sleep(0.5)
        while True:  # the code location loads in its own process
            entries = srv.gql("{ locationStatusesOrError { ... on WorkspaceLocationStatusEntries { entries { name loadStatus } } } }")
            status = {e["name"]: e["loadStatus"] for e in entries["locationStatusesOrError"]["entries"]}
            if status.get("feature_factory") == "LOADED":
                break
            assert time.monotonic() < deadline, f"code location not loaded: {status}"
            time.sleep(0.5)
        srv.env, srv.root, srv.start_daemon = env, root, lambda: start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        yield srv
    finally:
        for p in reversed(procs):
            stop(p)
        for f in files:
            f.close()


def test_code_location_loaded_without_errors(server):
    data = server.gql("""{ workspaceOrError { ... on Workspace { locationEntries { name
        locationOrLoadError { __typename ... on RepositoryLocation { repositories { name pipelines { name } } }
                              ... on PythonError { message } } } } } }""")
    (entry,) = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == "feature_factory"
    loc = entry["locationOrLoadError"]
    assert loc["__typename"] == "RepositoryLocation", loc
    (repo,) = loc["repositories"]
    assert repo["name"] == "__repository__"
    assert {"daily_features", "dimensions"} <= {p["name"] for p in repo["pipelines"]}


def test_assets_groups_partitions_and_checks(server):
    data = server.gql("""{ assetNodes { assetKey { path } groupName isPartitioned jobNames
        partitionDefinition { type description fmt }
        partitionKeysByDimension { name partitionKeys }
        assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } } }""")
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"raw_events", "users", "products"} <= set(nodes)
    for key in ("raw_events", "users", "products"):
        assert nodes[key]["groupName"] == "ingestion"
        checks = nodes[key]["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks"
        assert {"name": "bad_row_share", "blocking": True} in checks["checks"]

    raw = nodes["raw_events"]
    assert raw["isPartitioned"] and "daily_features" in raw["jobNames"]
    assert raw["partitionDefinition"]["type"] == "TIME_WINDOW"
    assert raw["partitionDefinition"]["fmt"] == "%Y-%m-%d"
    (dim,) = raw["partitionKeysByDimension"]
    keys = dim["partitionKeys"]
    assert keys[0] == START
    today = datetime.now(timezone.utc).date()
    assert date.fromisoformat(keys[-1]) < today  # the last key is a complete day
    assert keys == [(date.fromisoformat(START) + timedelta(days=i)).isoformat() for i in range(len(keys))]
    assert not nodes["users"]["isPartitioned"] and nodes["users"]["partitionKeysByDimension"] == []

    job = server.gql(
        """query($s: PipelineSelector!) { pipelineOrError(params: $s) { __typename
            ... on Pipeline { name partitionKeysOrError(limit: 3) { partitionKeys } } } }""",
        {"s": {**REPO, "pipelineName": "daily_features"}},
    )["pipelineOrError"]
    assert job["__typename"] == "Pipeline"
    assert job["partitionKeysOrError"]["partitionKeys"] == ["2026-09-01", "2026-09-02", "2026-09-03"]


def test_launch_partition_run_through_graphql(server):
    # 1. Stop the automation so the daemon started below launches only our run.
    states = server.gql(
        """query($r: RepositorySelector!) {
            sensorsOrError(repositorySelector: $r) { ... on Sensors { results { name sensorState { id status } } } }
            schedulesOrError(repositorySelector: $r) { ... on Schedules { results { name scheduleState { id status } } } } }""",
        {"r": REPO},
    )
    sensors = {s["name"]: s["sensorState"] for s in states["sensorsOrError"]["results"]}
    schedules = {s["name"]: s["scheduleState"] for s in states["schedulesOrError"]["results"]}
    assert {"landing_sensor", "late_data_sensor"} <= set(sensors) and "daily_features_schedule" in schedules
    known = [sensors["landing_sensor"], sensors["late_data_sensor"], schedules["daily_features_schedule"]]
    assert all(s["status"] == "RUNNING" for s in known)  # default_status=RUNNING in code
    for state in sensors.values():
        out = server.gql("""mutation($id: String!) { stopSensor(id: $id) { __typename
            ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }""",
                         {"id": state["id"]})["stopSensor"]
        assert out["__typename"] == "StopSensorMutationResult" and out["instigationState"]["status"] == "STOPPED", out
    for state in schedules.values():
        out = server.gql("""mutation($id: String!) { stopRunningSchedule(id: $id) { __typename
            ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }""",
                         {"id": state["id"]})["stopRunningSchedule"]
        assert out["__typename"] == "ScheduleStateResult" and out["scheduleState"]["status"] == "STOPPED", out

    # 2. Launch daily_features for one partition, limited to raw_events.
    launched = server.gql(
        """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
            ... on LaunchRunSuccess { run { runId status tags { key value } assetSelection { path } } }
            ... on PythonError { message stack } ... on Error { message } } }""",
        {"p": {
            "selector": {**REPO, "jobName": "daily_features", "assetSelection": [{"path": ["raw_events"]}]},
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
        }},
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = launched["run"]
    run_id = run["runId"]
    assert {"key": "dagster/partition", "value": DAY} in run["tags"]
    assert run["assetSelection"] == [{"path": ["raw_events"]}]
    assert run["status"] in ("QUEUED", "STARTING", "STARTED")

    # 3. The project's dagster.yaml queues runs; the daemon dequeues and launches them.
    server.start_daemon()
    deadline = time.monotonic() + RUN_TIMEOUT
    seen = []
    while True:
        status = server.gql("""query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }""",
                            {"id": run_id})["runOrError"]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        assert time.monotonic() < deadline, f"run still {status} after {RUN_TIMEOUT}s; statuses seen {seen}"
        time.sleep(1)
    assert status == "SUCCESS", (seen, (server.root / "daemon.log").read_text()[-3000:])

    # 4. The partition is in the store and recorded by the instance, with its check result.
    landing_rows = pq.ParquetFile(server.root / "landing" / "events" / DAY / "part-0.parquet").metadata.num_rows
    part = server.root / "store" / "raw_events" / f"date={DAY}" / "part-0.parquet"
    assert pq.ParquetFile(part).metadata.num_rows == landing_rows
    assert sorted(p.name for p in (server.root / "store" / "raw_events").iterdir()) == [f"date={DAY}"]

    node = server.gql(
        """query($k: [AssetKeyInput!]) { assetNodes(assetKeys: $k) {
            assetMaterializations(partitions: ["%s"]) { partition runId
                metadataEntries { label ... on IntMetadataEntry { intValue } } }
            assetCheckOrError(checkName: "bad_row_share") { __typename
                ... on AssetCheck { executionForLatestMaterialization { runId status evaluation { success } } } } } }""" % DAY,
        {"k": [{"path": ["raw_events"]}]},
    )["assetNodes"][0]
    (mat,) = node["assetMaterializations"]
    assert mat["partition"] == DAY and mat["runId"] == run_id
    ints = {e["label"]: e.get("intValue") for e in node["assetMaterializations"][0]["metadataEntries"]}
    assert ints["dagster/row_count"] == landing_rows and ints["quarantined"] == 0
    execution = node["assetCheckOrError"]["executionForLatestMaterialization"]
    assert execution["runId"] == run_id and execution["status"] == "SUCCEEDED" and execution["evaluation"]["success"]

    runs = server.gql("{ runsOrError { ... on Runs { results { runId jobName status } } } }")["runsOrError"]["results"]
    assert [(r["runId"], r["jobName"], r["status"]) for r in runs] == [(run_id, "daily_features", "SUCCESS")]
