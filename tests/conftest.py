"""Shared fixtures. The environment is pointed at a temporary landing zone and store
before any project module is imported, because the partitions definition reads the
source configuration at import time."""

import os
import sys
import tempfile
from pathlib import Path

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="ff-tests-"))
os.environ.setdefault("LANDING_ROOT", str(_SESSION_ROOT / "landing"))
os.environ.setdefault("STORE_ROOT", str(_SESSION_ROOT / "store"))
os.environ.setdefault("PARTITION_START", "2026-09-01")
os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402

from featurecore import demo_data  # noqa: E402
from featurecore.config import load_source_config  # noqa: E402

SMALL_DEMO = demo_data.DemoConfig(start="2026-09-01", days=4, users=300, products=80, events_per_day=1500, seed=11)


@pytest.fixture(scope="session")
def session_root() -> Path:
    """The temporary root shared by the session's landing zone and store."""
    return _SESSION_ROOT


@pytest.fixture
def source_cfg(tmp_path):
    """A SourceConfig rooted in a fresh temporary folder."""
    from dataclasses import replace

    return replace(load_source_config(), landing_root=str(tmp_path / "landing"), store_root=str(tmp_path / "store"))


@pytest.fixture
def small_landing(source_cfg):
    """A small generated demo world in the fixture's landing zone."""
    demo_data.generate(source_cfg.landing_root, SMALL_DEMO)
    return source_cfg


@pytest.fixture(scope="session")
def dask_client():
    """One real LocalCluster (2 worker processes) for the session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, processes=True)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()
