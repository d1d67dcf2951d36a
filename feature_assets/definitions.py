"""The project's Definitions: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from resources import DaskResource, LandingZone, OfflineStore

from resources.online_store import OnlineStoreResource

from . import candidates, feature_groups, ingestion, quality, serving
from .automation import daily_job, daily_schedule, dimensions_job, landing_sensor, late_data_sensor
from . import selection


def build_defs(**resources) -> dg.Definitions:
    """The Definitions with default resources, any of which a caller (a test, a script) may replace."""
    defaults = {
        "dask": DaskResource(scheduler_address=dg.EnvVar("DASK_SCHEDULER_ADDRESS").get_value() or None),
        "landing": LandingZone(),
        "store": OfflineStore(),
        "online_store": OnlineStoreResource(),
        "quality": quality.QualityConfig(),
    }
    return dg.Definitions(
        assets=[
            ingestion.raw_events,
            ingestion.users,
            ingestion.products,
            feature_groups.feature_tiles,
            feature_groups.feature_groups,
            serving.user_recent_items,
            serving.online_features,
            *candidates.CANDIDATE_ASSETS,
            *selection.SELECTION_ASSETS,
            quality.feature_monitoring,
        ],
        asset_checks=[*quality.quality_checks, quality.freshness_checks, quality.compat_checks],
        jobs=[daily_job, dimensions_job, selection.selection_job],
        schedules=[daily_schedule],
        sensors=[landing_sensor, late_data_sensor, quality.freshness_sensor],
        resources={**defaults, **resources},
        # Heavy work runs on Dask; steps in one process share one cluster instead of each starting one.
        executor=dg.in_process_executor,
    )


defs = build_defs()
