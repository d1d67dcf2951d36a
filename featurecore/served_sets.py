"""The feature sets the online store serves by default, and how the served list is resolved.

``user_core`` (``feature_sets.demo_feature_set()``) is the baseline from ``user_behavior``;
``user_realtime`` adds what streaming keeps fresh within the day: 1-day counts, EMAs,
recency, device/referrer mix and last-N product lists. Both are keyed by ``user_id``.
Sets published by selection (``<store>/feature_sets/<name>/v<version>.json``) are served
too: ``served_sets`` returns the defaults plus the latest version of every published set.
"""

from __future__ import annotations

from pathlib import Path

from .feature_sets import FeatureRef, FeatureSet, demo_feature_set, from_groups, load, save
from .recent_items import USER_RECENT_ITEMS


def realtime_feature_set() -> FeatureSet:
    """User features that streaming updates within the day (groups plus last-N lists)."""
    base = from_groups(
        "user_realtime",
        "1",
        {
            "user_behavior": [
                "purchase_count_1d", "view_count_1d", "purchase_count_7d", "view_count_30d",
                "purchase_amount_sum_7d", "purchase_amount_mean_30d", "purchase_amount_p50_30d",
                "view_product_id_distinct_30d", "view_category_share_electronics_30d", "conversion_rate_30d",
                "purchase_ema_hl7d", "purchase_amount_ema_rate_hl7d",
            ],
            "user_temporal": ["seconds_since_last_purchase", "seconds_since_last_event", "active_days_7d",
                              "purchase_frequency_30d"],
            "user_context": ["device_type_share_mobile_30d", "referrer_share_search_30d"],
        },
        "User features kept fresh by the streaming updater: windowed counts and sums, EMAs, recency, "
        "context shares and the last viewed/purchased products.",
    )
    spec = USER_RECENT_ITEMS
    recent = tuple(FeatureRef(spec.name, n, "list", d) for n, d in spec.feature_descriptions().items())
    return FeatureSet(base.name, base.version, base.entity_keys, base.features + recent, base.description,
                      {**base.ttl_seconds, spec.name: int(spec.ttl.total_seconds())})


def default_sets() -> list[FeatureSet]:
    """The sets served without any selection run."""
    return [demo_feature_set(), realtime_feature_set()]


def published_names(store_root: str) -> list[str]:
    """Names of the feature sets published in the offline store."""
    folder = Path(store_root) / "feature_sets"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("v*.json"))) if folder.is_dir() else []


def served_sets(store_root: str) -> list[FeatureSet]:
    """Defaults (published when absent) plus the latest version of every published set."""
    out: dict[str, FeatureSet] = {}
    for fs in default_sets():
        try:
            load(store_root, fs.name, fs.version)
        except KeyError:
            save(fs, store_root)
    for name in published_names(store_root):
        out[name] = load(store_root, name)
    return [out[n] for n in sorted(out)]
