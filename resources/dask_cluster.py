"""The Dask cluster resource: an existing scheduler, or a LocalCluster started on demand."""


import os
from typing import Any

import dagster as dg
from pydantic import PrivateAttr


class DaskResource(dg.ConfigurableResource):
    """Connects to `scheduler_address` (or $DASK_SCHEDULER_ADDRESS), else starts a LocalCluster.

    Assets submit their heavy work through `client`; only small results come back to
    the Dagster process. One cluster lives for the whole run (the jobs use the
    in-process executor, so steps share it instead of each paying a cluster start).
    """

    scheduler_address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "4GiB"
    #: Dask's statistical profiler on the local workers (the dashboard's Profile tab); off: ~10 % of task time
    profile: bool = False

    _client: Any = PrivateAttr(default=None)
    _cluster: Any = PrivateAttr(default=None)

    def _resolved_address(self) -> str | None:
        return self.scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS") or None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Connect a client to the configured scheduler, or start a LocalCluster and connect to it."""
        from distributed import Client

        from .local_cluster import start_local_cluster

        address = self._resolved_address()
        if address:
            self._client = Client(address, timeout="20s")
        else:
            self._cluster = start_local_cluster(self.n_workers, self.threads_per_worker, self.memory_limit,
                                                profile=self.profile)
            self._client = Client(self._cluster)
        if context.log:
            context.log.info(f"Dask client connected to {self._client.scheduler.address}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the client and any LocalCluster this resource started."""
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    @property
    def client(self):
        """The distributed.Client (only valid while a run executes)."""
        if self._client is None:
            raise RuntimeError("DaskResource used outside of a run: no client")
        return self._client

    @property
    def address(self) -> str:
        """The scheduler address the client talks to."""
        return self.client.scheduler.address

    def run_all(self, fn, items: list, *args, **kwargs) -> list:
        """Submit fn(item, *args) for every item as Dask tasks and gather the (small) results in order."""
        futures = [self.client.submit(fn, item, *args, pure=False, **kwargs) for item in items]
        return self.client.gather(futures)
