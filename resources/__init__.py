"""Dagster resources: the Dask cluster, the landing zone and the offline store."""

from .dask_cluster import DaskResource
from .stores import LandingZone, OfflineStore

__all__ = ["DaskResource", "LandingZone", "OfflineStore"]
