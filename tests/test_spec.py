"""The declaration vocabulary: windows, filters, naming, validation, planning."""

from __future__ import annotations

from datetime import timedelta

import pytest

from featurecore.groups import GROUPS, get_group
from featurecore.spec import (
    ALL_TIME, Aggregation as A, Derived, FeatureGroup, Window, normalize_where, parse_duration, where_label,
)

P = ("event_type", "==", "purchase")


def test_windows_normalize_and_compare():
    assert Window("7d") == Window(7) == Window.days(7) == Window(timedelta(days=7)) == Window("1w")
    assert Window("all") == Window(None) == ALL_TIME and ALL_TIME.is_all_time and ALL_TIME.n_days is None
    assert Window("30d").n_days == 30 and Window("30d").label == "30d" and ALL_TIME.label == "all"
    assert sorted([ALL_TIME, Window(30), Window(1)], key=Window.sort_key) == [Window(1), Window(30), ALL_TIME]
    for bad in ("12h", 0, -3, "x", "1.5d", True):
        with pytest.raises(ValueError):
            Window(bad)


def test_durations():
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("36h") == timedelta(hours=36)
    assert parse_duration(timedelta(minutes=5)) == timedelta(minutes=5)
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")


def test_filters_and_labels():
    assert normalize_where(P) == (P,)
    assert normalize_where([("event_type", "in", ["view", "cart_add"])]) == (("event_type", "in", ("view", "cart_add")),)
    assert normalize_where(("referrer", "notnull")) == (("referrer", "notnull", None),)
    assert where_label(normalize_where(P)) == "purchase"
    assert where_label(normalize_where(("event_type", "in", ("view", "cart_add")))) == "view_or_cart_add"
    assert where_label(normalize_where(("event_type", "!=", "view"))) == "not_view"
    assert where_label(normalize_where((P, ("price", ">", 10)))) == "purchase_and_price_gt_10"
    assert where_label(normalize_where(("device_type", "==", "mobile"))) == "device_type_mobile"
    for bad in (("event_type", "~", "x"), ("event_type", "in", "view"), ("event_type", "==", ("a", "b")),
                ("event_type", "=="), (1, "==", 2)):
        with pytest.raises(ValueError):
            normalize_where(bad)


def test_feature_names_are_readable_and_stable():
    g = FeatureGroup("demo", aggregations=[
        A("count", where=P, windows=("7d", ALL_TIME)),
        A("count", where=("event_type", "==", "view"), windows=("30d",)),
        A("sum", column="amount", windows=("30d",)),
        A("distinct", column="product_id", windows=("30d",)),
        A("quantile", column="price", windows=("7d",), quantiles=(0.5, 0.9, 0.995)),
        A("share", column="device_type", windows=("30d",), categories=("mobile", "desktop")),
        A("mean", column="price", windows=("7d",), name="avg_price"),
        A("active_days", windows=("30d",), name="active_days"),
    ], derived=[
        Derived.ratio("purchases_per_view_30d", "purchase_count_all", "view_count_30d"),
        Derived.recency(where=P),
        Derived.recency(),
        Derived.frequency("30d", where=P),
        Derived.ema("7d", where=P),
        Derived.ema("12h", column="price", mode="mean"),
    ])
    assert g.feature_names() == [
        "purchase_count_7d", "purchase_count_all", "view_count_30d", "amount_sum_30d",
        "product_id_distinct_30d", "price_p50_7d", "price_p90_7d", "price_p99_5_7d",
        "device_type_share_mobile_30d", "device_type_share_desktop_30d", "device_type_share_other_30d",
        "avg_price_7d", "active_days_30d", "purchases_per_view_30d", "seconds_since_last_purchase",
        "seconds_since_last_event", "purchase_frequency_30d", "purchase_ema_hl7d", "price_ema_mean_hl12h",
    ]
    desc = g.feature_descriptions()
    assert set(desc) == set(g.feature_names()) and all(isinstance(v, str) and v for v in desc.values())
    assert "[t-7d, t)" in desc["purchase_count_7d"] and "ddof" not in desc["purchase_count_7d"]
    assert g.max_window_days == 30 and g.has_all_time
    assert g.windows == (Window(7), Window(30), ALL_TIME)
    assert g.tile_columns[:2] == ("asof", "event__n")
    assert "product_id__hll" in g.tile_columns and "price__kll" in g.tile_columns
    assert "device_type__cnt_mobile" in g.tile_columns and "purchase__ema_hl7d" in g.tile_columns
    assert "price__emaw_hl12h" in g.tile_columns
    assert len(set(g.tile_columns)) == len(g.tile_columns)
    # window -> needed tile columns: 7d reads no sketch of the 30d features
    assert "product_id__hll" not in g.tile_columns_for(Window(7))
    assert "purchase__last_ts" in g.tile_columns_for(ALL_TIME)
    assert set(g.required_columns) >= {"user_id", "ts", "event_type", "price", "quantity", "product_id", "device_type"}
    assert g.feature_dtypes()["purchase_count_7d"] == "float64"


def test_window_only_group_has_no_all_time_state():
    g = FeatureGroup("w", aggregations=[A("count", windows=("1d", "7d"))])
    assert not g.has_all_time and g.max_window_days == 7


@pytest.mark.parametrize("make, message", [
    (lambda: A("median", column="price", windows=("7d",)), "unknown aggregation op"),
    (lambda: A("ema", column="price", windows=("7d",)), "Derived.ema"),
    (lambda: A("count"), "no window"),
    (lambda: A("sum", windows=("7d",)), "needs a column"),
    (lambda: A("share", column="device_type", windows=("7d",)), "categories"),
    (lambda: A("count", windows=("7d",), categories=("a",)), "only apply to op 'share'"),
    (lambda: A("quantile", column="price", windows=("7d",), quantiles=(1.5,)), "outside"),
    (lambda: A("count", windows=("12h",)), "whole number of days"),
    (lambda: A("count", windows=("7d",), name="Bad Name"), "must match"),
    (lambda: A("count", where=("event_type", "like", "x"), windows=("7d",)), "unknown filter op"),
    (lambda: Derived("lag"), "unknown derived kind"),
    (lambda: Derived.ratio("r", "a", None), "numerator and denominator"),
    (lambda: Derived.frequency(ALL_TIME), "finite window"),
    (lambda: Derived.ema("0d"), "positive"),
    (lambda: Derived.ema("7d", mode="median"), "mode"),
])
def test_declarations_are_validated_early(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_group_level_validation():
    with pytest.raises(ValueError, match="duplicate feature names"):
        FeatureGroup("g", aggregations=[A("count", windows=("7d",)), A("count", windows=("7d",))])
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureGroup("g", aggregations=[A("count", windows=("7d",))], derived=[Derived.ratio("r", "x", "event_count_7d")])
    with pytest.raises(ValueError, match="declare at least one"):
        FeatureGroup("g")
    with pytest.raises(ValueError, match="keys"):
        FeatureGroup("g", keys=(), aggregations=[A("count", windows=("7d",))])
    with pytest.raises(TypeError):
        FeatureGroup("g", aggregations=[("count", "7d")])
    with pytest.raises(ValueError, match="group name"):
        FeatureGroup("Group!", aggregations=[A("count", windows=("7d",))])


def test_declarations_are_frozen_and_hashable():
    a = A("count", where=P, windows=["7d"])
    assert a.windows == (Window(7),) and hash(a) == hash(A("count", where=[P], windows=("7d",)))
    with pytest.raises(Exception):
        a.op = "sum"
    g = FeatureGroup("g", keys="user_id", aggregations=[a])
    assert g.keys == ("user_id",) and isinstance(g.aggregations, tuple)
    assert g == FeatureGroup("g", keys=("user_id",), aggregations=(a,))


def test_seed_groups_declare_what_the_brief_asks():
    names = {n: set(g.feature_names()) for n, g in GROUPS.items()}
    assert set(GROUPS) == {"user_behavior", "user_temporal", "product_dynamic", "category_stats",
                           "brand_popularity", "user_product", "user_context"}
    ub = names["user_behavior"]
    for f in ("purchase_count_1d", "purchase_count_7d", "purchase_count_30d", "purchase_count_all",
              "view_count_1d", "view_count_7d", "view_count_30d", "cart_add_count_7d", "cart_add_count_30d",
              "purchase_amount_sum_7d", "purchase_amount_sum_30d", "purchase_amount_sum_all",
              "purchase_amount_mean_30d", "avg_order_value_all", "conversion_rate_30d",
              "view_product_id_distinct_30d", "purchase_amount_p50_30d", "purchase_amount_p90_30d",
              "view_category_share_books_30d", "purchase_ema_hl7d"):
        assert f in ub, f
    for f in ("seconds_since_last_purchase", "seconds_since_last_event", "purchase_frequency_30d",
              "active_days_30d", "dow_share_sat_30d", "hour_bucket_share_night_30d"):
        assert f in names["user_temporal"], f
    for f in ("view_count_1d", "cart_add_count_7d", "purchase_count_30d", "conversion_rate_7d", "price_mean_7d",
              "price_std_7d", "price_min_7d", "price_max_7d", "user_id_distinct_7d", "price_last_all",
              "popularity_hl7d"):
        assert f in names["product_dynamic"], f
    assert names["category_stats"] == {"price_mean_30d", "purchase_count_30d"}
    assert {"view_count_7d", "purchase_count_30d", "user_id_distinct_30d"} <= names["brand_popularity"]
    assert GROUPS["user_product"].keys == ("user_id", "product_id")
    assert "seconds_since_last_event" in names["user_product"] and "view_count_all" in names["user_product"]
    assert "device_type_share_mobile_30d" in names["user_context"]
    assert "referrer_share_search_30d" in names["user_context"]
    for g in GROUPS.values():
        assert g.version == "1" and g.ttl > timedelta(0) and g.description
    assert GROUPS["category_stats"].enrich == ("category",) and GROUPS["brand_popularity"].keys == ("brand",)
    assert get_group("user_context") is GROUPS["user_context"]
    with pytest.raises(KeyError, match="known"):
        get_group("nope")
