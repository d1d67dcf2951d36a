"""The LocalCluster this project starts when no scheduler is given (no Dagster imports: the benchmarks use it too)."""

from __future__ import annotations


def start_local_cluster(n_workers: int = 2, threads_per_worker: int = 1, memory_limit: str | None = "4GiB",
                        dashboard_address: str | None = None, profile: bool = False):
    """A process-based LocalCluster; Dask's statistical profiler is off unless `profile`.

    The profiler samples every task thread's stack each 10 ms; on the candidate
    workloads (deep Featuretools/pandas stacks) that cost about 10 % of the task time.
    Set ``profile=True`` to get the dashboard's Profile tab back.
    """
    import dask
    from distributed import LocalCluster

    kwargs = {} if memory_limit is None else {"memory_limit": memory_limit}
    # workers are spawned processes: their Nanny hands them this config
    with dask.config.set({"distributed.worker.profile.enabled": profile}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                            dashboard_address=dashboard_address, **kwargs)
