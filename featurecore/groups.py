"""The project's feature groups: one short declaration each (see ``spec.py``).

Category lists for ``share`` features are declared here (they match the demo world in
``demo_data.py``); values outside a list land in the ``..._other_<w>`` share, so a
dataset with other categories still gets meaningful (if coarser) features. To follow a
different catalogue, edit the tuple: a share feature's name is part of the schema, so
it is declared rather than discovered per day.
"""

from __future__ import annotations

from datetime import timedelta

from .spec import ALL_TIME, DOW_VALUES, HOUR_BUCKETS, Aggregation as A, Derived, FeatureGroup

PURCHASE = ("event_type", "==", "purchase")
VIEW = ("event_type", "==", "view")
CART = ("event_type", "==", "cart_add")

CATEGORIES = ("electronics", "computers", "phones", "home", "kitchen", "garden", "fashion", "shoes",
              "beauty", "sports", "toys", "books", "grocery")
DEVICES = ("mobile", "desktop", "tablet")
REFERRERS = ("direct", "search", "social", "email", "ads")

user_behavior = FeatureGroup(
    "user_behavior",
    keys=("user_id",),
    entity="user",
    enrich=("category",),
    ttl=timedelta(days=30),
    description="Counts, revenue, conversion, diversity, spend quantiles and category preferences of a user.",
    aggregations=[
        A("count", where=PURCHASE, windows=("1d", "7d", "30d", ALL_TIME)),
        A("count", where=VIEW, windows=("1d", "7d", "30d")),
        A("count", where=CART, windows=("7d", "30d")),
        A("sum", column="amount", where=PURCHASE, windows=("7d", "30d", ALL_TIME)),
        A("mean", column="amount", where=PURCHASE, windows=("30d",)),
        A("quantile", column="amount", where=PURCHASE, windows=("30d",), quantiles=(0.5, 0.9)),
        A("distinct", column="product_id", where=VIEW, windows=("30d",)),
        A("share", column="category", where=VIEW, windows=("30d",), categories=CATEGORIES),
    ],
    derived=[
        Derived.ratio("avg_order_value_all", "purchase_amount_sum_all", "purchase_count_all",
                      "Revenue per purchase event over all time (purchase amount sum / purchase count)"),
        Derived.ratio("conversion_rate_30d", "purchase_count_30d", "view_count_30d",
                      "Purchases per view over the 30 days before the cutoff"),
        Derived.ema("7d", where=PURCHASE),
        Derived.ema("7d", column="amount", where=PURCHASE, mode="rate"),
    ],
)

user_temporal = FeatureGroup(
    "user_temporal",
    keys=("user_id",),
    entity="user",
    ttl=timedelta(days=60),
    description="When a user is active: recency, purchase frequency, active days, weekday and hour-of-day mix.",
    aggregations=[
        A("active_days", windows=("7d", "30d"), name="active_days"),
        A("share", column="dow", windows=("30d",), categories=DOW_VALUES, other=False),
        A("share", column="hour_bucket", windows=("30d",), categories=tuple(HOUR_BUCKETS), other=False),
    ],
    derived=[
        Derived.recency(where=PURCHASE),
        Derived.recency(),
        Derived.frequency("30d", where=PURCHASE),
    ],
)

product_dynamic = FeatureGroup(
    "product_dynamic",
    keys=("product_id",),
    entity="product",
    ttl=timedelta(days=14),
    description="Demand, conversion, price dynamics and reach of a product.",
    aggregations=[
        A("count", where=VIEW, windows=("1d", "7d", "30d")),
        A("count", where=CART, windows=("1d", "7d", "30d")),
        A("count", where=PURCHASE, windows=("1d", "7d", "30d")),
        A("mean", column="price", windows=("7d",)),
        A("std", column="price", windows=("7d",)),
        A("min", column="price", windows=("7d",)),
        A("max", column="price", windows=("7d",)),
        A("last", column="price", windows=(ALL_TIME,)),
        A("distinct", column="user_id", windows=("7d",)),
    ],
    derived=[
        Derived.ratio("conversion_rate_7d", "purchase_count_7d", "view_count_7d",
                      "Purchases per view of the product over the 7 days before the cutoff"),
        Derived.ema("7d", name="popularity_hl7d",
                    description="Popularity: exponentially decayed count of all events on the product, "
                                "half-life 7 days, all time"),
    ],
)

category_stats = FeatureGroup(
    "category_stats",
    keys=("category",),
    entity="category",
    enrich=("category",),
    ttl=timedelta(days=30),
    description="Price level and demand of a product category (events enriched with the product's category).",
    aggregations=[
        A("mean", column="price", windows=("30d",)),
        A("count", where=PURCHASE, windows=("30d",)),
    ],
)

brand_popularity = FeatureGroup(
    "brand_popularity",
    keys=("brand",),
    entity="brand",
    enrich=("brand",),
    ttl=timedelta(days=30),
    description="Views, purchases and reach of a brand (events enriched with the product's brand).",
    aggregations=[
        A("count", where=VIEW, windows=("7d", "30d")),
        A("count", where=PURCHASE, windows=("7d", "30d")),
        A("distinct", column="user_id", windows=("30d",)),
    ],
)

user_product = FeatureGroup(
    "user_product",
    keys=("user_id", "product_id"),
    entity="user_product",
    ttl=timedelta(days=30),
    description="A user's interactions with one product.",
    aggregations=[
        A("count", where=VIEW, windows=("30d", ALL_TIME)),
        A("count", where=CART, windows=("30d", ALL_TIME)),
        A("count", where=PURCHASE, windows=("30d", ALL_TIME)),
    ],
    derived=[Derived.recency()],
)

user_context = FeatureGroup(
    "user_context",
    keys=("user_id",),
    entity="user",
    ttl=timedelta(days=30),
    description="Which devices and referrers a user comes through.",
    aggregations=[
        A("share", column="device_type", windows=("30d",), categories=DEVICES),
        A("share", column="referrer", windows=("30d",), categories=REFERRERS),
    ],
)

GROUPS: dict[str, FeatureGroup] = {
    g.name: g
    for g in (user_behavior, user_temporal, product_dynamic, category_stats, brand_popularity, user_product,
              user_context)
}


def get_group(name: str) -> FeatureGroup:
    """The feature group called ``name``; a KeyError listing the known groups if there is none."""
    try:
        return GROUPS[name]
    except KeyError:
        raise KeyError(f"unknown feature group {name!r}; known: {', '.join(GROUPS)}") from None
