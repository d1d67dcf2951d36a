"""The online store resource: SQLite inside the offline store by default, Redis when a URL says so."""

import dagster as dg

from featurecore.online import backend_kind, default_store_url, redact


class OnlineStoreResource(dg.ConfigurableResource):
    """Where online values go: `url` (sqlite:///<path> or redis://host:port/db), else $ONLINE_STORE_URL,
    else $REDIS_URL, else `<offline store root>/online/online.sqlite`.

    `skew_sample` entities per feature set are compared online vs offline after each
    materialization; the check fails when a feature's mismatch rate exceeds `skew_threshold`.
    """

    url: str | None = None
    skew_sample: int = 200
    skew_threshold: float = 0.01

    def resolved_url(self, store_root: str) -> str:
        """The effective store URL for an offline store root."""
        url = self.url or default_store_url(store_root)
        backend_kind(url)  # fail early on a malformed URL
        return url

    def describe(self, store_root: str) -> str:
        """The URL without credentials, for metadata and logs."""
        return redact(self.resolved_url(store_root))
