"""Landing zone and offline store resources, both built from the source configuration."""


from dataclasses import replace

import dagster as dg

from featurecore.config import SourceConfig, load_source_config


class LandingZone(dg.ConfigurableResource):
    """Where raw files arrive; format and column mapping come from the source config file."""

    config_path: str | None = None
    landing_root: str | None = None  # overrides the config file

    def source_config(self) -> SourceConfig:
        """The effective SourceConfig (file + environment + this resource's overrides)."""
        cfg = load_source_config(self.config_path)
        return replace(cfg, landing_root=self.landing_root) if self.landing_root else cfg


class OfflineStore(dg.ConfigurableResource):
    """Root of the partitioned Parquet offline store."""

    root: str | None = None  # default: store_root of the source config

    def path(self, landing: LandingZone | None = None) -> str:
        """The store root as a string path or fsspec URL."""
        return self.root or (landing or LandingZone()).source_config().store_root
