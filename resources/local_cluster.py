"""The LocalCluster this project starts when no scheduler is given (no Dagster imports: the benchmarks use it too)."""

from __future__ import annotations


def start_local_cluster(n_workers: int = 2, threads_per_worker: int = 1, memory_limit: str | None = "4GiB",
                        dashboard_address: str | None = None, profile: bool = False):
    """A process-based LocalCluster; Dask's statistical profiler is off unless `profile`, and
    workers keep glibc's default allocator settings.

    The profiler samples every task thread's stack each 10 ms; on the candidate
    workloads (deep Featuretools/pandas stacks) that cost about 10 % of the task time.
    Set ``profile=True`` to get the dashboard's Profile tab back.

    Dask's Nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so freed memory goes
    back to the OS sooner. Setting that variable at all switches off glibc's adaptive mmap
    threshold: every array over 128 KiB is then a fresh ``mmap`` and page-faults in again,
    which made the same pandas/Featuretools work 20-25 % slower in a worker than in a plain
    process (measured on DFS shards and a feature-group day). Workers here run like any
    Python process; a worker's RSS can stay higher between tasks instead.

    The scheduler, nannies and workers check their event loop's health every second instead
    of every 20 ms: each check wakes a thread that takes the GIL from the running task, and on
    two busy cores the 50 wake-ups a second per process halved the workers' context switches
    and cut DFS runs by ~3% (a loop blocked for longer than ~3 s, ``tick.limit``, is still logged).
    """
    import dask
    from distributed import LocalCluster

    kwargs = {} if memory_limit is None else {"memory_limit": memory_limit}
    environ = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ") or {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    # workers are spawned processes: their Nanny hands them this config
    with dask.config.set({"distributed.worker.profile.enabled": profile, "distributed.nanny.pre-spawn-environ": environ,
                          "distributed.admin.tick.interval": "1s"}):
        return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                            dashboard_address=dashboard_address, **kwargs)
