"""Seeded generator of a synthetic e-commerce world written in the landing layout.

Layout (the contract other code reads)::

    <landing>/events/<YYYY-MM-DD>/part-0.parquet|csv   one folder per arrival day
    <landing>/users/users.parquet
    <landing>/products/products.parquet
    <landing>/users_wide/users_wide.parquet             only with ``wide_columns > 0``

Events of day D depend only on (seed, D) and on the static world (users, products and
each user's hidden latent state), which depends only on the seed and the table sizes.
So any day can be produced on its own: memory stays flat however many days are
generated, and ``append_day`` writes exactly what ``generate`` would have written.

Users, products and the wide table are always written as parquet; ``file_format``
only applies to the event folders.
"""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

EVENT_TYPES = np.array(["view", "cart_add", "purchase"], dtype=object)
DEVICES = np.array(["mobile", "desktop", "tablet"], dtype=object)
REFERRERS = np.array(["direct", "search", "social", "email", "ads"], dtype=object)
SEGMENTS = np.array(["bargain_hunter", "loyal", "browser", "new"], dtype=object)
COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "IN", "JP", "CA"], dtype=object)
COUNTRY_P = np.array([0.30, 0.10, 0.10, 0.08, 0.06, 0.06, 0.04, 0.04, 0.07, 0.07, 0.04, 0.04])
# (name, median price): categories differ in price level, which interacts with bargain hunters.
CATEGORIES = (
    ("electronics", 180.0), ("computers", 450.0), ("phones", 320.0), ("home", 45.0),
    ("kitchen", 35.0), ("garden", 40.0), ("fashion", 38.0), ("shoes", 65.0),
    ("beauty", 18.0), ("sports", 55.0), ("toys", 25.0), ("books", 14.0), ("grocery", 8.0),
)
N_BRANDS = 80

# Per-segment behaviour, indexed like SEGMENTS. Logit shifts are on the cart/purchase
# scale; "views" is the mean number of views per session.
SEG_SHARE = np.array([0.30, 0.15, 0.30, 0.25])
SEG_ACTIVITY = np.array([1.0, 1.4, 1.5, 0.8])
SEG_PROPENSITY = np.array([0.0, 1.3, -1.6, -0.4])
SEG_VIEWS = np.array([5.0, 3.0, 7.5, 4.0])
SEG_CAT_FOCUS = np.array([0.35, 0.80, 0.30, 0.40])  # share of sessions in a preferred category
SEG_PRICE_SENS = np.array([0.9, 0.15, 0.3, 0.3])  # purchase logit per log(price ratio)
SEG_DISCOUNT = np.array([1.4, 0.2, 0.3, 0.4])  # purchase logit bonus when the item is on discount
SEG_QTY = np.array([0.30, 0.35, 0.05, 0.10])  # extra-quantity Poisson rate on purchases
SEG_CHURN_DAYS = np.array([220.0, 700.0, 180.0, 90.0])  # mean time to churn
SEG_WEEKEND = np.array([1.05, 0.95, 1.15, 1.0])  # activity multiplier on Sat/Sun
# Referrer mix per segment (columns follow REFERRERS).
SEG_REFERRER_P = np.array([
    [0.20, 0.25, 0.10, 0.20, 0.25],
    [0.45, 0.15, 0.05, 0.30, 0.05],
    [0.20, 0.30, 0.35, 0.05, 0.10],
    [0.15, 0.40, 0.15, 0.05, 0.25],
])
DEVICE_P = np.array([0.55, 0.35, 0.10])
DEVICE_EFFECT = np.array([-0.2, 0.25, 0.0])
REFERRER_EFFECT = np.array([0.2, 0.1, -0.35, 0.3, 0.0])

# Hour-of-day profiles (weekday, weekend): quiet nights, lunch and evening peaks; the
# weekend wakes up later. Volume per weekday is mild so days look alike to drift checks.
_HOURS_WEEKDAY = np.array([0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.5, 0.9, 1.2, 1.3, 1.35, 1.4,
                           1.55, 1.5, 1.35, 1.3, 1.35, 1.5, 1.75, 2.0, 2.15, 2.05, 1.65, 1.1])
_HOURS_WEEKEND = np.array([0.8, 0.5, 0.3, 0.2, 0.15, 0.18, 0.3, 0.5, 0.8, 1.15, 1.45, 1.6,
                           1.7, 1.7, 1.6, 1.55, 1.55, 1.6, 1.75, 1.95, 2.05, 1.95, 1.6, 1.15])
WEEKDAY_VOLUME = np.array([0.97, 0.96, 0.96, 0.98, 1.02, 1.07, 1.04])  # Mon..Sun

SIZE_PRESETS = {
    "small": dict(days=14, users=500, products=120, events_per_day=3000),
    "default": dict(days=60, users=3000, products=500, events_per_day=20000),
    # A little over 100k a day so the total clears 10M whatever the seed.
    "large": dict(days=100, users=100_000, products=5000, events_per_day=102_000),
}

# RNG stream tags, so streams never overlap and adding one never perturbs another.
_TAG_WORLD, _TAG_DAY, _TAG_LATE, _TAG_WIDE = 1, 2, 3, 4
# Planted wide columns: weight of the whole (standardized) propensity per column, and of
# a part of the propensity's hidden term that only that column sees (see build_users_wide).
# Without the unique parts all five measured one latent that the behaviour features also
# reveal: next to them and each other, two of the five added ~0.001 AUC in held-out CV but
# showed no permutation importance above the noise of a 60-day, 3,000-user selection.
WIDE_SHARED = (0.5, 0.35, 0.3, 0.45, 0.35)
WIDE_UNIQUE = 0.6


@dataclass
class DemoConfig:
    """Shape and knobs of the generated world."""

    start: str = "2026-09-01"  # first day (UTC)
    days: int = 60
    users: int = 3000
    products: int = 500
    events_per_day: int = 20000  # average; the actual count varies with weekly seasonality
    seed: int = 7
    file_format: str = "parquet"  # or "csv" (event folders only)
    wide_columns: int = 0  # >0 adds a users_wide table with that many raw columns
    shift_day: str | None = None  # a day with shifted distribution (prices x1.8, more mobile, more purchases)
    late_fraction: float = 0.0  # share of a day's events that arrive in the NEXT day's folder


@dataclass(frozen=True)
class _Latent:
    """Hidden per-user state; never written, it only drives behaviour."""

    activity: np.ndarray  # Zipf-like base session rate
    propensity: np.ndarray  # persistent purchase logit offset
    drift: np.ndarray  # slow change of propensity per 60 days
    signup_t: np.ndarray  # signup day relative to start (float days)
    churn_t: np.ndarray  # day the user stops, relative to start
    device: np.ndarray  # preferred device code
    pref_cats: np.ndarray  # (n, 2) preferred category codes
    popularity: np.ndarray  # Zipf-like product popularity (per product, not per user)


def _rng(seed: int, tag: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag, *map(int, extra)]))


def _zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    # Zipf-Mandelbrot with an offset proportional to n so the head does not degenerate
    # into a single "bot" user when n is small; ranks are shuffled over ids.
    ranks = np.arange(1, n + 1, dtype=float)
    w = (ranks + 0.02 * n + 1.0) ** -s
    return w[rng.permutation(n)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@functools.lru_cache(maxsize=8)
def _world(seed: int, n_users: int, n_products: int, start: str) -> tuple[pd.DataFrame, pd.DataFrame, _Latent]:
    rng = _rng(seed, _TAG_WORLD, n_users, n_products)
    start_day = pd.Timestamp(start)

    # Products: price level from category and brand premium; popularity is Zipf-like.
    n_cat = len(CATEGORIES)
    cat_p = rng.dirichlet(np.full(n_cat, 4.0))
    cat = rng.choice(n_cat, size=n_products, p=cat_p)
    brand_p = (np.arange(N_BRANDS) + 8.0) ** -1.0  # a few big brands, a long tail
    brand = rng.choice(N_BRANDS, size=n_products, p=brand_p / brand_p.sum())
    brand_premium = np.exp(rng.normal(0.0, 0.3, size=N_BRANDS))
    cat_median = np.array([m for _, m in CATEGORIES])
    price = cat_median[cat] * brand_premium[brand] * np.exp(rng.normal(0.0, 0.45, size=n_products))
    products = pd.DataFrame({
        "product_id": [f"p{i:05d}" for i in range(n_products)],
        "category": np.array([c for c, _ in CATEGORIES], dtype=object)[cat],
        "brand": np.array([f"brand_{b:03d}" for b in range(N_BRANDS)], dtype=object)[brand],
        "price": np.round(np.maximum(price, 0.99), 2),
    })

    # Users: segment drives behaviour; age is weakly tied to propensity, country is noise.
    seg = rng.choice(len(SEGMENTS), size=n_users, p=SEG_SHARE)
    age = np.clip(np.round(rng.gamma(9.0, 4.3, size=n_users) + 12), 18, 85).astype(np.int64)
    country = rng.choice(len(COUNTRIES), size=n_users, p=COUNTRY_P)
    is_new = seg == 3
    signup_t = np.where(is_new, rng.uniform(-21.0, 45.0, n_users), -rng.uniform(30.0, 1500.0, n_users))
    signup_t = np.floor(signup_t)
    signup_date = (start_day + pd.to_timedelta(signup_t, unit="D")).date
    users = pd.DataFrame({
        "user_id": [f"u{i:06d}" for i in range(n_users)],
        "signup_date": signup_date,
        "country": COUNTRIES[country],
        "age": age,
        "segment": SEGMENTS[seg],
    })

    activity = _zipf_weights(n_users, 0.95, rng) * SEG_ACTIVITY[seg]
    propensity = (SEG_PROPENSITY[seg] + rng.normal(0.0, 0.8, n_users)
                  + 0.012 * (age - 40) + 0.15 * np.log(activity / np.median(activity)))
    drift = rng.normal(0.0, 0.3, n_users)
    churn_t = np.maximum(signup_t, 0.0) + rng.exponential(SEG_CHURN_DAYS[seg])
    device = rng.choice(3, size=n_users, p=DEVICE_P)
    first = rng.choice(n_cat, size=n_users, p=cat_p)
    second = (first + 1 + rng.integers(0, n_cat - 1, size=n_users)) % n_cat
    popularity = _zipf_weights(n_products, 1.0, rng)
    latent = _Latent(activity, propensity, drift, signup_t, churn_t, device, np.stack([first, second], 1), popularity)
    return users, products, latent


def build_world(cfg: DemoConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users and products tables for a config (deterministic; copies, safe to mutate)."""
    users, products, _ = _world(cfg.seed, cfg.users, cfg.products, cfg.start)
    return users.copy(), products.copy()


def _index_of(ids: pd.Series, n: int, what: str) -> np.ndarray:
    idx = ids.str.slice(1).astype(np.int64).to_numpy()
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{what} ids do not belong to this config's world (n={n})")
    return idx


class _ProductSampler:
    """Vectorised popularity sampling, globally or within a given category."""

    def __init__(self, weights: np.ndarray, cat: np.ndarray, n_cat: int):
        self.cdf = np.cumsum(weights)
        self.order = np.argsort(cat, kind="stable")
        w, c = weights[self.order], cat[self.order]
        cs = np.cumsum(w)
        first = np.searchsorted(c, np.arange(n_cat), side="left")
        last = np.searchsorted(c, np.arange(n_cat), side="right") - 1
        before = np.where(first > 0, cs[np.maximum(first - 1, 0)], 0.0)
        total = np.where(last >= first, cs[np.maximum(last, 0)] - before, 1.0)
        # key in (c, c+1] within category c, so searching c+u lands inside category c.
        self.key = c + (cs - before[c]) / total[c]

    def global_(self, u: np.ndarray) -> np.ndarray:
        """Product positions for uniforms `u`, by popularity over all products."""
        return np.minimum(np.searchsorted(self.cdf, u * self.cdf[-1], side="right"), len(self.cdf) - 1)

    def in_category(self, cat: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Product positions for uniforms `u`, by popularity within each row's category."""
        pos = np.minimum(np.searchsorted(self.key, cat + u, side="right"), len(self.key) - 1)
        return self.order[pos]


def _day_index(cfg: DemoConfig, day: str) -> int:
    return (date.fromisoformat(day[:10]) - date.fromisoformat(cfg.start[:10])).days


def generate_day_events(cfg: DemoConfig, users_df: pd.DataFrame, products_df: pd.DataFrame, day: str) -> pd.DataFrame:
    """All events whose ts falls on `day` (pure: depends only on cfg, the world and the day)."""
    day = str(day)[:10]
    d = date.fromisoformat(day)
    t = _day_index(cfg, day)
    _, _, lat = _world(cfg.seed, cfg.users, cfg.products, cfg.start)
    rng = _rng(cfg.seed, _TAG_DAY, d.toordinal())
    shifted = cfg.shift_day is not None and str(cfg.shift_day)[:10] == day
    weekend = d.weekday() >= 5

    uidx = _index_of(users_df["user_id"], cfg.users, "user")
    # Unknown labels (a hand-edited table) fall back to the first segment rather than fail.
    seg = pd.Categorical(users_df["segment"], categories=SEGMENTS).codes.astype(np.int64)
    seg[seg < 0] = 0
    pidx = _index_of(products_df["product_id"], cfg.products, "product")
    cat_names = [c for c, _ in CATEGORIES]
    pcat = pd.Categorical(products_df["category"], categories=cat_names).codes.astype(np.int64)
    pcat[pcat < 0] = 0
    base_price = products_df["price"].to_numpy(dtype=float)
    n_p, n_cat = len(products_df), len(cat_names)

    # Prices of the day: tiny jitter plus occasional discounts; the shift day inflates them.
    price_today = base_price * (1.0 + rng.normal(0.0, 0.015, n_p))
    discounted = rng.random(n_p) < 0.08
    price_today = np.where(discounted, price_today * rng.uniform(0.7, 0.9, n_p), price_today)
    # Price sensitivity sees the pre-shift price: the shift is a price-level change (e.g. a
    # currency mix-up) that must not dampen the day's extra purchases.
    log_rel_price = np.log(np.maximum(price_today, 0.5) / np.median(base_price))
    if shifted:
        price_today *= 1.8
    price_today = np.round(np.maximum(price_today, 0.5), 2)

    # Who is around today: new users only after signup (with an eager first weeks),
    # churners fade over ~10 days then stop. Propensity drifts slowly and smoothly.
    act = lat.activity[uidx]
    since = t - lat.signup_t[uidx]
    act = np.where(since < 0, 0.0, act * (1.0 + 1.5 * np.exp(-np.maximum(since, 0) / 7.0)))
    to_churn = lat.churn_t[uidx] - t
    act = act * np.clip(to_churn / 10.0, 0.0, 1.0)
    if weekend:
        act = act * SEG_WEEKEND[seg]
    prop = lat.propensity[uidx] + lat.drift[uidx] * (t / 60.0)

    # Session count from the day's target volume; expected events per session is fixed
    # by the segment mix, so the realised count tracks events_per_day closely.
    mean_len = float(np.sum(act * (SEG_VIEWS[seg] + 0.35)) / max(np.sum(act), 1e-12))
    volume = cfg.events_per_day * WEEKDAY_VOLUME[d.weekday()] * np.exp(rng.normal(0.0, 0.02))
    n_sess = int(round(volume / mean_len)) if act.sum() > 0 else 0
    if n_sess == 0 or n_p == 0:
        return _empty_events()

    cdf = np.cumsum(act)
    su = np.minimum(np.searchsorted(cdf, rng.random(n_sess) * cdf[-1], side="right"), len(act) - 1)
    sseg = seg[su]
    device = np.where(rng.random(n_sess) < 0.8, lat.device[uidx[su]], rng.choice(3, n_sess, p=DEVICE_P))
    # Drawn every day so the shift day differs only by its intended effects.
    force_mobile = rng.random(n_sess) < 0.5
    if shifted:
        device = np.where(force_mobile, 0, device)
    cum_ref = np.cumsum(SEG_REFERRER_P[sseg], axis=1)
    referrer = np.minimum((rng.random(n_sess)[:, None] > cum_ref).sum(1), len(REFERRERS) - 1)

    # Views: a session mostly browses one category (a preferred one for focused users);
    # bargain hunters' views are tilted towards cheap items.
    n_views = 1 + rng.poisson(SEG_VIEWS[sseg] - 1.0)
    focus = rng.random(n_sess) < SEG_CAT_FOCUS[sseg]
    pref = lat.pref_cats[uidx[su], rng.integers(0, 2, n_sess)]
    pop = lat.popularity[pidx]
    cat_w = np.bincount(pcat, weights=pop, minlength=n_cat) + 1e-12
    random_cat = np.searchsorted(np.cumsum(cat_w), rng.random(n_sess) * cat_w.sum(), side="right")
    random_cat = np.minimum(random_cat, n_cat - 1)
    s_cat = np.where(focus, pref, random_cat)

    normal = _ProductSampler(pop, pcat, n_cat)
    cheap = _ProductSampler(pop * np.exp(-0.8 * log_rel_price), pcat, n_cat)

    v_sess = np.repeat(np.arange(n_sess), n_views)
    n_v = len(v_sess)
    v_bargain = sseg[v_sess] == 0
    in_cat = rng.random(n_v) < 0.75
    u = rng.random(n_v)
    v_prod = np.where(in_cat, normal.in_category(s_cat[v_sess], u), normal.global_(u))
    v_prod = np.where(v_bargain, np.where(in_cat, cheap.in_category(s_cat[v_sess], u), cheap.global_(u)), v_prod)

    # Funnel: carts pick an item viewed in the session; purchases follow a cart.
    s_prop = prop[su]
    cart_logit = (-1.9 + s_prop + DEVICE_EFFECT[device] + REFERRER_EFFECT[referrer]
                  + 0.1 * weekend + 0.8 * shifted + 0.05 * (n_views - SEG_VIEWS[sseg]))
    c1 = rng.random(n_sess) < _sigmoid(cart_logit)
    c2 = c1 & (n_views >= 2) & (rng.random(n_sess) < 0.25)
    v_start = np.cumsum(n_views) - n_views
    pick1 = (rng.random(n_sess) * n_views).astype(np.int64)
    pick2 = (pick1 + 1 + (rng.random(n_sess) * np.maximum(n_views - 1, 1)).astype(np.int64)) % n_views
    cart_sess = np.concatenate([np.flatnonzero(c1), np.flatnonzero(c2)])
    cart_rank = np.concatenate([np.zeros(c1.sum(), np.int64), np.ones(c2.sum(), np.int64)])
    cart_view = v_start[cart_sess] + np.where(cart_rank == 0, pick1[cart_sess], pick2[cart_sess])
    cart_prod = v_prod[cart_view]
    cseg = sseg[cart_sess]
    buy_logit = (-0.5 + 0.7 * s_prop[cart_sess] - SEG_PRICE_SENS[cseg] * log_rel_price[cart_prod]
                 + SEG_DISCOUNT[cseg] * discounted[cart_prod] + 0.5 * shifted)
    bought = rng.random(len(cart_sess)) < _sigmoid(buy_logit)
    qty = 1 + rng.poisson(SEG_QTY[cseg])

    # Timing: views a few seconds to minutes apart, carts then purchases after the last
    # view; sessions are clamped inside the day so a session never spans two days.
    hours = _HOURS_WEEKEND if weekend else _HOURS_WEEKDAY
    hour = np.minimum(np.searchsorted(np.cumsum(hours), rng.random(n_sess) * hours.sum(), side="right"), 23)
    s_start = hour * 3600.0 + rng.random(n_sess) * 3600.0
    gaps = 2.0 + rng.exponential(40.0, n_v)
    gaps[v_start] = 0.0
    cum = np.cumsum(gaps)
    v_off = cum - cum[v_start][v_sess]
    last_view = v_off[v_start + n_views - 1]
    cart1 = last_view + 3.0 + rng.exponential(25.0, n_sess)
    cart2 = cart1 + 3.0 + rng.exponential(25.0, n_sess)
    last_cart = np.where(c2, cart2, cart1)
    cart_off = np.where(cart_rank == 0, cart1[cart_sess], cart2[cart_sess])
    buy_off = last_cart[cart_sess] + 5.0 + rng.exponential(40.0, len(cart_sess)) + 3.0 * cart_rank
    dur = np.where(c1, last_cart, last_view)
    np.maximum.at(dur, cart_sess[bought], buy_off[bought])
    s_start = np.clip(s_start, 0.0, np.maximum(86399.0 - dur, 0.0))

    b = np.flatnonzero(bought)
    sess = np.concatenate([v_sess, cart_sess, cart_sess[b]])
    etype = np.concatenate([np.zeros(n_v, np.int64), np.ones(len(cart_sess), np.int64), np.full(len(b), 2)])
    prod = np.concatenate([v_prod, cart_prod, cart_prod[b]])
    off = np.concatenate([v_off, cart_off, buy_off[b]])
    quantity = np.concatenate([np.ones(n_v + len(cart_sess), np.int64), qty[b]])
    sec = s_start[sess] + off
    micros = np.round(sec * 1e6).astype(np.int64)
    order = np.lexsort((etype, micros))  # etype breaks exact-tie order so a view precedes its cart
    sess, etype, prod, quantity, micros = sess[order], etype[order], prod[order], quantity[order], micros[order]

    n = len(order)
    stamp = d.strftime("%Y%m%d")
    session_ids = np.array([f"s{stamp}-{i:06d}" for i in range(n_sess)], dtype=object)
    day_us = np.int64(pd.Timestamp(day).value // 1000)
    ts = pd.DatetimeIndex((day_us + micros).astype("datetime64[us]")).tz_localize("UTC")
    product_ids = products_df["product_id"].to_numpy(dtype=object)
    user_ids = users_df["user_id"].to_numpy(dtype=object)
    return pd.DataFrame({
        "event_id": _ids(f"e{stamp}-", n),
        "user_id": user_ids[su[sess]],
        "ts": ts,
        "event_type": EVENT_TYPES[etype],
        "product_id": product_ids[prod],
        "price": price_today[prod],
        "quantity": quantity,
        "device_type": DEVICES[device[sess]],
        "referrer": REFERRERS[referrer[sess]],
        "session_id": session_ids[sess],
    })


def _ids(prefix: str, n: int) -> np.ndarray:
    # Fixed-width numpy string concatenation runs in C, unlike a per-row f-string.
    digits = np.char.zfill(np.arange(n).astype("U7"), 7)
    return np.char.add(prefix, digits).astype(object)


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": pd.Series([], dtype=object), "user_id": pd.Series([], dtype=object),
        "ts": pd.Series([], dtype="datetime64[us, UTC]"), "event_type": pd.Series([], dtype=object),
        "product_id": pd.Series([], dtype=object), "price": pd.Series([], dtype=float),
        "quantity": pd.Series([], dtype=np.int64), "device_type": pd.Series([], dtype=object),
        "referrer": pd.Series([], dtype=object), "session_id": pd.Series([], dtype=object),
    })


def _late_mask(cfg: DemoConfig, events: pd.DataFrame, day: str) -> np.ndarray:
    """Which of a day's events arrive late; late ones cluster near midnight, as real lag does."""
    n = len(events)
    k = int(round(cfg.late_fraction * n))
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    rng = _rng(cfg.seed, _TAG_LATE, date.fromisoformat(day).toordinal())
    frac_of_day = (events["ts"] - pd.Timestamp(day, tz="UTC")).dt.total_seconds().to_numpy() / 86400.0
    w = np.exp(6.0 * frac_of_day)
    # Efraimidis-Spirakis: top-k of u^(1/w) is a weighted sample without replacement.
    keys = np.log(rng.random(n)) / w
    mask[np.argpartition(-keys, k - 1)[:k]] = True
    return mask


def _arrival_events(cfg: DemoConfig, users: pd.DataFrame, products: pd.DataFrame, day: str,
                    cache: dict | None = None) -> pd.DataFrame:
    """What lands in folder `day`: the day's on-time events plus the previous day's late ones."""
    cache = {} if cache is None else cache

    def events_of(k: str) -> pd.DataFrame:
        if k not in cache:
            cache.clear()  # keep at most one day around: memory stays flat
            cache[k] = generate_day_events(cfg, users, products, k)
        return cache[k]

    prev = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    parts = []
    if cfg.late_fraction > 0 and _day_index(cfg, prev) >= 0:
        ev = events_of(prev)
        parts.append(ev[_late_mask(cfg, ev, prev)])
    ev = events_of(day)
    parts.append(ev[~_late_mask(cfg, ev, day)] if cfg.late_fraction > 0 else ev)
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    return out


def _write_events(landing: Path, cfg: DemoConfig, day: str, events: pd.DataFrame) -> Path:
    folder = landing / "events" / day
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("part-0.*"):  # a rerun in the other format must not leave both
        stale.unlink()
    if cfg.file_format == "csv":
        path = folder / "part-0.csv"
        events.to_csv(path, index=False)
    else:
        path = folder / "part-0.parquet"
        events.to_parquet(path, index=False)
    return path


def _wide_layout(n: int) -> dict[str, list[int]]:
    """Column indices by kind for a wide table of n columns (independent of the seed)."""
    informative = sorted(set(int(n * f) for f in (0.02, 0.21, 0.43, 0.67, 0.88)) & set(range(n)))
    rest = [i for i in range(n) if i not in informative]
    constant = [i for i in rest if i % 50 == 7]
    categorical = [i for i in rest if i % 25 == 11]
    missing = [i for i in rest if i % 10 == 5]
    return {"informative": informative, "constant": constant, "categorical": categorical, "missing": missing}


def _wide_name(i: int) -> str:
    return f"attr_{i:04d}"


def build_users_wide(cfg: DemoConfig) -> pd.DataFrame:
    """The `users_wide` table: mostly noise, a few columns tied to the hidden purchase propensity."""
    users, _, lat = _world(cfg.seed, cfg.users, cfg.products, cfg.start)
    n, m = len(users), cfg.wide_columns
    rng = _rng(cfg.seed, _TAG_WIDE, n, m)
    layout = _wide_layout(m)
    z = (lat.propensity - lat.propensity.mean()) / lat.propensity.std()
    unique = _hidden_components(cfg, users, lat, len(layout["informative"]))
    cols: dict[str, np.ndarray] = {"user_id": users["user_id"].to_numpy(dtype=object)}
    const, cat, miss = set(layout["constant"]), set(layout["categorical"]), set(layout["missing"])
    for i in range(m):  # a loop per column is fine; each column is one vectorised draw
        if i in layout["informative"]:
            k = layout["informative"].index(i)
            r = WIDE_SHARED[k % len(WIDE_SHARED)]
            # shared part (the whole propensity) + a part only this column sees + noise
            score = r * z + WIDE_UNIQUE * unique[:, k] + np.sqrt(1 - r * r - WIDE_UNIQUE**2) * rng.normal(size=n)
            if k == 3:  # an informative categorical: a noisy tier of the propensity
                col = np.array(["tier_c", "tier_b", "tier_a"], dtype=object)[np.digitize(score, [-0.5, 0.5])]
            else:
                col = score * 10.0 + 50.0 if k == 1 else score
                if k == 4:  # an informative column with gaps, so imputation matters
                    col = np.where(rng.random(n) < 0.3, np.nan, col)
        elif i in const:
            col = np.full(n, 1.0)
        elif i in cat:
            col = np.array(["a", "b", "c", "d", "e"], dtype=object)[rng.integers(0, 5, n)]
        else:
            col = rng.normal(size=n) if i % 2 == 0 else rng.uniform(0.0, 100.0, n)
            if i in miss:
                col = np.where(rng.random(n) < 0.3, np.nan, col)
        cols[_wide_name(i)] = col
    return pd.DataFrame(cols)


def _hidden_components(cfg: DemoConfig, users: pd.DataFrame, lat: _Latent, k: int) -> np.ndarray:
    """(n, k) standardized independent parts of the propensity's hidden term, summing to that term.

    The hidden term is the N(0, 0.8) draw of ``_world``: what no ``users`` column shows.
    It is split without touching the propensity (so the events stay as they are): with
    ``v_j`` iid N(0, s^2), ``s^2 = 0.64 / k``, the parts ``v_j + (e - sum v) / k`` are
    again iid N(0, s^2) and sum to ``e``. A column that sees one part carries
    information no other planted column has, so its value in a model that already holds
    the others and the behaviour is measurable rather than shared away.
    """
    if k == 0:
        return np.zeros((len(users), 0))
    seg = pd.Index(SEGMENTS).get_indexer(users["segment"])
    age = users["age"].to_numpy(dtype=float)
    e = (lat.propensity - SEG_PROPENSITY[seg] - 0.012 * (age - 40)
         - 0.15 * np.log(lat.activity / np.median(lat.activity)))
    s = 0.8 / np.sqrt(k)
    v = _rng(cfg.seed, _TAG_WIDE, len(users), cfg.wide_columns, 1).normal(0.0, s, size=(len(users), k))
    parts = v + ((e - v.sum(axis=1)) / k)[:, None]
    return parts / s


def planted_signal(wide_columns: int = 500) -> dict:
    """Which raw columns and behaviours carry signal about purchases in the next 7 days, and which are noise."""
    layout = _wide_layout(wide_columns)
    names = {k: [_wide_name(i) for i in v] for k, v in layout.items()}
    noise = [_wide_name(i) for i in range(wide_columns)
             if i not in set(layout["informative"]) | set(layout["constant"])]
    return {
        "label": "user makes >=1 purchase in the 7 days after the cutoff",
        "informative_behaviours": [
            "recent purchase count and recency (persistent latent propensity per user)",
            "cart_add -> purchase conversion rate (same latent propensity)",
            "activity trend: churners fade over ~10 days then stop",
            "segment (loyal >> bargain_hunter > new > browser in conversion)",
            "discount exposure for bargain_hunter users",
            "device (desktop > tablet > mobile) and referrer (email/direct > search > ads > social), mild",
            "days since signup (new users are eager in their first weeks)",
        ],
        "users": {"informative": ["segment", "signup_date"], "weak": ["age"], "noise": ["country"]},
        "products": {"informative": ["price", "category"], "noise": ["brand"]},
        "events": {
            "keys": ["event_id", "user_id", "product_id", "session_id"],
            "informative": ["event_type", "ts", "price"],
            "weak": ["device_type", "referrer", "quantity"],
        },
        "wide": {
            # each: WIDE_SHARED x the standardized propensity + WIDE_UNIQUE x a part of its hidden term
            # that only this column sees + noise (build_users_wide)
            "informative": names["informative"],
            "informative_categorical": [names["informative"][3]] if len(names["informative"]) > 3 else [],
            "informative_with_missing": [names["informative"][4]] if len(names["informative"]) > 4 else [],
            "constant": names["constant"],
            "categorical_noise": names["categorical"],
            "missing_noise": names["missing"],
            "noise": noise,
        },
        "shift": "shift_day: prices x1.8, ~half the sessions forced to mobile, higher cart/purchase rates",
        "late": "late_fraction: events near midnight arrive in the next day's folder; ts is unchanged",
    }


def _write_static(landing: Path, cfg: DemoConfig, only_missing: bool = False) -> dict[str, str]:
    users, products = build_world(cfg)
    paths = {"users": landing / "users" / "users.parquet", "products": landing / "products" / "products.parquet"}
    for key, df in (("users", users), ("products", products)):
        if not (only_missing and paths[key].exists()):
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(paths[key], index=False)
    if cfg.wide_columns > 0:
        paths["users_wide"] = landing / "users_wide" / "users_wide.parquet"
        if not (only_missing and paths["users_wide"].exists()):
            paths["users_wide"].parent.mkdir(parents=True, exist_ok=True)
            build_users_wide(cfg).to_parquet(paths["users_wide"], index=False)
    return {k: str(v) for k, v in paths.items()}


def _check(cfg: DemoConfig) -> None:
    if cfg.file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {cfg.file_format!r}")
    if not 0.0 <= cfg.late_fraction < 1.0:
        raise ValueError("late_fraction must be in [0, 1)")
    if cfg.users < 1 or cfg.products < 1 or cfg.days < 0:
        raise ValueError("users and products must be >= 1, days >= 0")


def generate(landing_root, cfg: DemoConfig) -> dict:
    """Write users, products, optional users_wide and `cfg.days` event folders; return a summary."""
    _check(cfg)
    t0 = time.perf_counter()
    landing = Path(landing_root)
    paths = _write_static(landing, cfg)
    users, products = build_world(cfg)
    days = [(date.fromisoformat(cfg.start[:10]) + timedelta(days=i)).isoformat() for i in range(cfg.days)]
    # The last day's late events have not "arrived" yet: append_day of the next day writes them.
    cache: dict = {}
    total = 0
    for day in days:
        events = _arrival_events(cfg, users, products, day, cache)
        _write_events(landing, cfg, day, events)
        total += len(events)
    return {
        "days": len(days), "first_day": days[0] if days else None, "last_day": days[-1] if days else None,
        "events": total, "users": len(users), "products": len(products),
        "paths": {**paths, "events": str(landing / "events")}, "seconds": round(time.perf_counter() - t0, 2),
    }


def append_day(landing_root, cfg: DemoConfig, day: str) -> dict:
    """Write one event folder for `day` (plus static tables if missing), identical to what generate writes."""
    _check(cfg)
    day = str(day)[:10]
    landing = Path(landing_root)
    paths = _write_static(landing, cfg, only_missing=True)
    users, products = build_world(cfg)
    events = _arrival_events(cfg, users, products, day)
    path = _write_events(landing, cfg, day, events)
    return {"day": day, "events": len(events), "path": str(path), "paths": paths}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m featurecore.demo_data", description=__doc__.splitlines()[0])
    p.add_argument("--landing", default="data/landing")
    p.add_argument("--size", choices=sorted(SIZE_PRESETS), default="default",
                   help="preset sizes; explicit flags override them (large = 10M events)")
    p.add_argument("--start")
    p.add_argument("--days", type=int)
    p.add_argument("--users", type=int)
    p.add_argument("--products", type=int)
    p.add_argument("--events-per-day", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--format", dest="file_format", choices=["parquet", "csv"])
    p.add_argument("--wide", dest="wide_columns", type=int)
    p.add_argument("--shift-day")
    p.add_argument("--late-fraction", type=float)
    p.add_argument("--append-day", help="write only this day's folder (drives a sensor)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point: generate the landing zone or append one day."""
    args = _parse_args(argv)
    cfg = DemoConfig(**SIZE_PRESETS[args.size])
    overrides = {f.name: getattr(args, f.name) for f in fields(DemoConfig)
                 if getattr(args, f.name, None) is not None}
    cfg = replace(cfg, **overrides)
    if args.append_day:
        out = append_day(args.landing, cfg, args.append_day)
        print(f"appended {out['day']}: {out['events']:,} events -> {out['path']}")
    else:
        out = generate(args.landing, cfg)
        print(f"generated {out['days']} days ({out['first_day']}..{out['last_day']}): {out['events']:,} events, "
              f"{out['users']:,} users, {out['products']:,} products in {out['seconds']}s -> {args.landing}")
    return out


if __name__ == "__main__":
    main()
