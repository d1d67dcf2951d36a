"""The project's Definitions: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from resources import DaskResource, LandingZone, OfflineStore

from . import feature_groups, ingestion
from .automation import daily_job, daily_schedule, dimensions_job, landing_sensor, late_data_sensor


def build_defs(**resources) -> dg.Definitions:
    """The Definitions with default resources, any of which a caller (a test, a script) may replace."""
    defaults = {
        "dask": DaskResource(scheduler_address=dg.EnvVar("DASK_SCHEDULER_ADDRESS").get_value() or None),
        "landing": LandingZone(),
        "store": OfflineStore(),
    }
    return dg.Definitions(
        assets=[
            ingestion.raw_events,
            ingestion.users,
            ingestion.products,
            feature_groups.feature_tiles,
            feature_groups.feature_groups,
        ],
        jobs=[daily_job, dimensions_job],
        schedules=[daily_schedule],
        sensors=[landing_sensor, late_data_sensor],
        resources={**defaults, **resources},
        # Heavy work runs on Dask; steps in one process share one cluster instead of each starting one.
        executor=dg.in_process_executor,
    )


defs = build_defs()
