"""Tests for the seeded demo-data generator (small sizes, so they run in seconds)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featurecore import demo_data as dd
from featurecore.demo_data import DemoConfig, append_day, build_world, generate, generate_day_events, planted_signal

SMALL = DemoConfig(start="2026-09-01", days=8, users=400, products=80, events_per_day=2500, seed=11)
EVENT_COLUMNS = ["event_id", "user_id", "ts", "event_type", "product_id", "price", "quantity",
                 "device_type", "referrer", "session_id"]


def _read_events(landing: Path, day: str) -> pd.DataFrame:
    folder = landing / "events" / day
    parquet = folder / "part-0.parquet"
    if parquet.exists():
        return pd.read_parquet(parquet)
    df = pd.read_csv(folder / "part-0.csv", dtype={"quantity": "int64"})
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
    return df


def _all_events(landing: Path) -> pd.DataFrame:
    days = sorted(p.name for p in (landing / "events").iterdir())
    return pd.concat([_read_events(landing, d).assign(folder=d) for d in days], ignore_index=True)


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    """One small generated landing zone shared by the read-only tests."""
    root = tmp_path_factory.mktemp("landing")
    generate(root, SMALL)
    return root


@pytest.fixture(scope="module")
def events(landing) -> pd.DataFrame:
    """All event folders of the shared landing zone, with a `folder` column."""
    return _all_events(landing)


def test_layout_and_types(landing, events):
    days = sorted(p.name for p in (landing / "events").iterdir())
    assert days == pd.date_range(SMALL.start, periods=SMALL.days).strftime("%Y-%m-%d").tolist()
    assert all((landing / "events" / d / "part-0.parquet").exists() for d in days)
    assert list(events.columns[:-1]) == EVENT_COLUMNS
    assert str(events["ts"].dt.tz) == "UTC"
    assert events["event_id"].is_unique
    assert set(events["event_type"]) == {"view", "cart_add", "purchase"}
    assert set(events["device_type"]) <= {"mobile", "desktop", "tablet"}
    assert set(events["referrer"]) <= {"direct", "search", "social", "email", "ads"}
    assert events["user_id"].str.fullmatch(r"u\d{6}").all()
    assert events["product_id"].str.fullmatch(r"p\d{5}").all()
    assert events["price"].dtype == float and (events["price"] > 0).all()
    assert events["quantity"].dtype == np.int64 and (events["quantity"] >= 1).all()
    assert (events.loc[events["event_type"] != "purchase", "quantity"] == 1).all()
    assert (events["ts"].dt.strftime("%Y-%m-%d") == events["folder"]).all()

    users = pd.read_parquet(landing / "users" / "users.parquet")
    products = pd.read_parquet(landing / "products" / "products.parquet")
    assert list(users.columns) == ["user_id", "signup_date", "country", "age", "segment"]
    assert len(users) == SMALL.users and users["user_id"].is_unique
    assert set(users["segment"]) == {"bargain_hunter", "loyal", "browser", "new"}
    assert pd.api.types.is_integer_dtype(users["age"])
    assert list(products.columns) == ["product_id", "category", "brand", "price"]
    assert len(products) == SMALL.products and 8 <= products["category"].nunique() <= 15
    assert set(events["user_id"]) <= set(users["user_id"])
    assert set(events["product_id"]) <= set(products["product_id"])
    # Volume tracks events_per_day.
    assert 0.85 < len(events) / (SMALL.days * SMALL.events_per_day) < 1.15


def test_deterministic(tmp_path, landing):
    generate(tmp_path, SMALL)
    for rel in ("users/users.parquet", "products/products.parquet", "events/2026-09-03/part-0.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / rel), pd.read_parquet(landing / rel))
        assert (tmp_path / rel).read_bytes() == (landing / rel).read_bytes()
    users, products = build_world(replace(SMALL, seed=SMALL.seed + 1))
    other = generate_day_events(replace(SMALL, seed=SMALL.seed + 1), users, products, "2026-09-03")
    assert not other["user_id"].equals(_read_events(landing, "2026-09-03")["user_id"])


def test_funnel_consistency(events):
    views = events[events["event_type"] == "view"][["session_id", "product_id", "ts"]]
    carts = events[events["event_type"] == "cart_add"][["session_id", "product_id", "ts"]]
    buys = events[events["event_type"] == "purchase"][["event_id", "session_id", "product_id", "ts"]]
    assert len(buys) > 0
    for earlier, name in ((views, "view"), (carts, "cart_add")):
        m = buys.merge(earlier, on=["session_id", "product_id"], suffixes=("", "_prev"))
        ok = m[m["ts_prev"] < m["ts"]]["event_id"].unique()
        assert set(ok) == set(buys["event_id"]), f"purchase without an earlier {name} of the product"
    m = carts.reset_index().merge(views, on=["session_id", "product_id"], suffixes=("", "_v"))
    assert m[m["ts_v"] < m["ts"]]["index"].nunique() == len(carts)
    per_day = events.groupby([events["ts"].dt.date, "event_type"]).size().unstack(fill_value=0)
    assert (per_day["cart_add"] <= per_day["view"]).all()
    assert (per_day["purchase"] <= per_day["cart_add"]).all()
    # A session has one user, device and referrer, and never spans two days.
    g = events.groupby("session_id")
    assert (g[["user_id", "device_type", "referrer"]].nunique() == 1).all().all()
    assert (g["ts"].max().dt.date == g["ts"].min().dt.date).all()


def test_segments_behave_differently(landing, events):
    users = pd.read_parquet(landing / "users" / "users.parquet")
    ev = events.merge(users[["user_id", "segment"]], on="user_id")
    counts = ev.groupby(["segment", "event_type"]).size().unstack(fill_value=0)
    conversion = counts["purchase"] / counts["view"]
    assert conversion["loyal"] > 3 * conversion["browser"]
    assert conversion["bargain_hunter"] > conversion["browser"]
    views = ev[ev["event_type"] == "view"]
    views_per_session = views.groupby(["segment", "session_id"]).size().groupby("segment").mean()
    assert views_per_session["browser"] > views_per_session["loyal"]
    # Bargain hunters buy cheaper items than loyal users.
    buys = ev[ev["event_type"] == "purchase"]
    median_price = buys.groupby("segment")["price"].median()
    assert median_price["bargain_hunter"] < median_price["loyal"]


def test_activity_and_popularity_are_skewed(events):
    per_user = events.groupby("user_id").size().sort_values(ascending=False)
    top = per_user.iloc[: max(1, len(per_user) // 10)].sum() / per_user.sum()
    assert top > 0.3  # top 10% of users produce a large share of events
    per_product = events["product_id"].value_counts()
    assert per_product.iloc[:8].sum() / per_product.sum() > 0.15


def test_seasonality_is_mild(events):
    hour = events["ts"].dt.hour.value_counts().sort_index()
    assert hour.loc[2:5].mean() < 0.3 * hour.loc[18:22].mean()
    daily = events.groupby(events["ts"].dt.date).size()
    assert daily.max() / daily.min() < 1.3
    by_day = events.groupby(events["ts"].dt.date)
    mobile = by_day["device_type"].apply(lambda s: (s == "mobile").mean())
    assert mobile.max() - mobile.min() < 0.12
    # Loose: with a few hundred users, a heavy buyer moves one small day's rate a lot.
    conv = by_day["event_type"].apply(lambda s: (s == "purchase").mean())
    assert conv.max() / conv.min() < 2.5


def test_past_purchases_predict_future_purchases():
    cfg = replace(SMALL, days=21, users=600, events_per_day=3000)
    users, products = build_world(cfg)
    days = pd.date_range(cfg.start, periods=cfg.days).strftime("%Y-%m-%d")
    ev = pd.concat([generate_day_events(cfg, users, products, d) for d in days], ignore_index=True)
    cut = pd.Timestamp(days[13], tz="UTC") + pd.Timedelta(days=1)
    past = ev[(ev["ts"] < cut) & (ev["event_type"] == "purchase")].groupby("user_id").size()
    future = set(ev[(ev["ts"] >= cut) & (ev["event_type"] == "purchase")]["user_id"])
    buyers = users["user_id"].isin(past[past >= 2].index)
    label = users["user_id"].isin(future)
    assert label[buyers].mean() > 2 * label[~buyers].mean()


def test_append_day_matches_generate(tmp_path):
    cfg = replace(SMALL, days=5, late_fraction=0.05)
    full, partial = tmp_path / "full", tmp_path / "partial"
    generate(full, replace(cfg, days=6))
    generate(partial, cfg)
    out = append_day(partial, cfg, "2026-09-06")
    assert out["events"] > 0
    for day in ("2026-09-03", "2026-09-06"):
        append_day(tmp_path / "alone", cfg, day)  # no generate first: static tables get written
        pd.testing.assert_frame_equal(_read_events(partial, day), _read_events(full, day))
        pd.testing.assert_frame_equal(_read_events(tmp_path / "alone", day), _read_events(full, day))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "alone" / "users" / "users.parquet"),
                                  pd.read_parquet(full / "users" / "users.parquet"))


def test_csv_option(tmp_path, landing):
    cfg = replace(SMALL, days=2, file_format="csv")
    generate(tmp_path, cfg)
    assert (tmp_path / "events" / "2026-09-01" / "part-0.csv").exists()
    assert not list((tmp_path / "events").rglob("*.parquet"))
    got = _read_events(tmp_path, "2026-09-02")
    want = _read_events(landing, "2026-09-02")
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    # Rewriting in parquet replaces the csv instead of leaving both.
    generate(tmp_path, replace(cfg, file_format="parquet"))
    assert [p.name for p in (tmp_path / "events" / "2026-09-02").iterdir()] == ["part-0.parquet"]


def test_wide_option(tmp_path):
    cfg = replace(SMALL, days=1, wide_columns=120)
    summary = generate(tmp_path, cfg)
    wide = pd.read_parquet(summary["paths"]["users_wide"])
    assert wide.shape == (cfg.users, 121) and wide["user_id"].is_unique
    assert list(wide.columns[1:4]) == ["attr_0000", "attr_0001", "attr_0002"]
    sig = planted_signal(120)["wide"]
    assert len(sig["informative"]) == 5
    assert all(wide[c].nunique() == 1 for c in sig["constant"]) and sig["constant"]
    assert all(wide[c].dtype == object for c in sig["categorical_noise"]) and sig["categorical_noise"]
    assert all(0.2 < wide[c].isna().mean() < 0.4 for c in sig["missing_noise"])
    # Informative columns track the hidden propensity; noise columns do not.
    _, _, latent = dd._world(cfg.seed, cfg.users, cfg.products, cfg.start)
    z = pd.Series(latent.propensity)
    numeric_inf = [c for c in sig["informative"] if c not in sig["informative_categorical"]]
    assert all(abs(wide[c].corr(z)) > 0.2 for c in numeric_inf)
    tier = wide[sig["informative_categorical"][0]]
    assert z[tier == "tier_a"].mean() > z[tier == "tier_c"].mean()
    noise = [c for c in sig["noise"] if wide[c].dtype != object]
    assert np.mean([abs(wide[c].corr(z)) for c in noise]) < 0.08
    assert "users_wide" not in generate(tmp_path / "narrow", replace(cfg, wide_columns=0))["paths"]


def test_late_fraction(tmp_path):
    cfg = replace(SMALL, days=4, late_fraction=0.1)
    generate(tmp_path, cfg)
    ev = _all_events(tmp_path)
    ev["ts_day"] = ev["ts"].dt.strftime("%Y-%m-%d")
    late = ev[ev["ts_day"] != ev["folder"]]
    assert (late["ts_day"] < late["folder"]).all()
    assert (pd.to_datetime(late["folder"]) - pd.to_datetime(late["ts_day"]) == pd.Timedelta(days=1)).all()
    assert late.empty is False and "2026-09-01" not in set(late["folder"])
    on_day2 = ev[ev["ts_day"] == "2026-09-02"]
    assert 0.08 < (on_day2["folder"] == "2026-09-03").mean() < 0.12
    # Lateness clusters at the end of the day.
    assert late["ts"].dt.hour.mean() > ev["ts"].dt.hour.mean()
    # Nothing is lost: every event of a day that has a successor folder is somewhere.
    users, products = build_world(cfg)
    assert len(ev[ev["ts_day"] == "2026-09-02"]) == len(generate_day_events(cfg, users, products, "2026-09-02"))


def test_shift_day(tmp_path):
    cfg = replace(SMALL, days=3, shift_day="2026-09-02")
    users, products = build_world(cfg)
    days = {d: generate_day_events(cfg, users, products, d) for d in ("2026-09-01", "2026-09-02", "2026-09-03")}
    normal = pd.concat([days["2026-09-01"], days["2026-09-03"]])
    shifted = days["2026-09-02"]
    ratio = shifted["price"].median() / normal["price"].median()
    assert 1.5 < ratio < 2.2
    assert (shifted["device_type"] == "mobile").mean() > (normal["device_type"] == "mobile").mean() + 0.1
    assert (shifted["event_type"] == "purchase").mean() > (normal["event_type"] == "purchase").mean()
    # Other days are untouched by the shift.
    base = generate_day_events(replace(cfg, shift_day=None), users, products, "2026-09-03")
    pd.testing.assert_frame_equal(base, days["2026-09-03"])


def test_generate_day_events_is_pure_and_within_day():
    users, products = build_world(SMALL)
    a = generate_day_events(SMALL, users, products, "2026-09-05")
    b = generate_day_events(SMALL, users.copy(), products.copy(), "2026-09-05")
    pd.testing.assert_frame_equal(a, b)
    assert (a["ts"] >= pd.Timestamp("2026-09-05", tz="UTC")).all()
    assert (a["ts"] < pd.Timestamp("2026-09-06", tz="UTC")).all()
    assert a["ts"].is_monotonic_increasing


def test_planted_signal_documents_columns():
    sig = planted_signal()
    assert len(sig["wide"]["informative"]) == 5
    assert all(c.startswith("attr_") for c in sig["wide"]["informative"])
    assert "country" in sig["users"]["noise"] and "segment" in sig["users"]["informative"]


def test_cli_append_and_generate(tmp_path, capsys):
    args = ["--landing", str(tmp_path), "--days", "2", "--users", "200", "--products", "50",
            "--events-per-day", "500", "--seed", "3"]
    out = dd.main(args)
    assert out["days"] == 2 and "generated" in capsys.readouterr().out
    dd.main(args + ["--append-day", "2026-09-03"])
    assert (tmp_path / "events" / "2026-09-03" / "part-0.parquet").exists()
