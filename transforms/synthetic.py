"""A seeded synthetic shop: catalog, shoppers and a time-ordered event stream.

The generator exists so that the pipeline, the demo and the benchmarks can run on
any volume of shop-like traffic without a real data set.  It is deterministic
for a seed (the same seed gives byte-identical output) and streams its events in
time-ordered chunks, so ten million events need only a few megabytes at a time.

Model, in the order the generator applies it:

* **Catalog.**  A fixed category tree (:data:`TAXONOMY`, eight top categories
  with four to six subcategories, paths such as ``"fashion/shoes"``).  Items are
  spread over subcategories in proportion to ``top_popularity * subcategory_share``;
  each top category has its own brands.  Price is lognormal:
  ``median_top * exp(m_sub) * exp(N(0, price_sigma))`` with ``m_sub ~ N(0, 0.35)``,
  in currency units rounded to cents.  Titles are ``"<adjective> <brand> <noun>"``.
  Most items exist before the simulated period (``created_at`` up to a year
  earlier); ``new_item_fraction`` arrive during it; ``sold_out_fraction`` go out
  of stock during it and get no events afterwards.
* **Popularity.**  Within a subcategory, item weight is Zipf in a random rank:
  ``w = (rank + 1) ** -zipf_exponent``.  Trending items add a Gaussian bump
  ``amp * exp(-((t - peak) / width)**2 / 2)``; new items add a novelty term
  ``amp * exp(-(t - created_at) / novelty_decay_ms)``.  Weights are re-evaluated
  for every time slice, so popularity shifts over the period.
* **Shoppers.**  Each user has a category taste ``~ Dirichlet(taste_concentration *
  top_popularity)``, two favourite subcategories and two favourite brands drawn
  from that taste, and an activity level ``~ LogNormal(0, activity_sigma)``
  that sets how often the user starts a session.
* **Sessions.**  Session starts follow a daily cycle with intensity
  ``1 + day_amplitude * cos(2 pi (t - peak_hour) / 1 day)``.  A session picks a
  subcategory (a favourite one with probability ``p_favourite_subcategory``, else
  a top category from the taste and a subcategory by its share), views
  ``min(Geometric(1 / mean_views), max_views)`` items from the subcategory's
  popularity (brand-loyal sessions take a share of views from the user's
  favourite brand), then runs the funnel: click a viewed item with ``p_click``,
  add a clicked item to the cart with ``p_cart``, favourite a clicked item with
  ``p_favorite``, buy a carted item with ``p_purchase`` at checkout, and remove a
  carted, unbought item with ``p_remove``.  The defaults give
  view : click : cart : purchase ~ 100 : 30 : 8 : 3.
* **Time.**  Views are seconds apart (clipped exponential gaps), each click,
  cart and favourite follows its cause by a few seconds, removals follow the
  cart addition, and purchases share one checkout time after the session's other
  events.  Purchases carry the item price and a quantity ``min(Geometric(0.75), 10)``.

Exactly ``events`` events are produced: the period is cut into slices of at
most one hour, each slice gets ``round(events * Lambda(end_k)) - round(events *
Lambda(start_k))`` events where ``Lambda`` is the normalised integral of the
daily intensity, and the last session of a slice is cut after its first events
if it would overshoot.  Events that fall after their slice's end (sessions
running over the boundary) are carried into the next slice, so the output is in
non-decreasing time order.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson

from transforms.catalog import CatalogItem
from transforms.events import (
    ADD_TO_CART,
    CLICK,
    EVENT_TYPES,
    FAVORITE,
    MAX_TS_MS,
    MIN_TS_MS,
    PURCHASE,
    REMOVE_FROM_CART,
    VIEW,
    EventBatch,
)

log = logging.getLogger(__name__)

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# (top category, median price, relative popularity, attribute words,
#  ((subcategory, (nouns...)), ...)).  Category paths are "<top>/<subcategory>".
TAXONOMY: tuple[tuple[str, float, float, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("electronics", 120.0, 1.2, ("wireless", "bluetooth", "usb-c", "4k", "noise-cancelling", "waterproof"), (
        ("phones", ("Smartphone", "Phone", "Flip Phone")),
        ("laptops", ("Laptop", "Notebook", "Ultrabook")),
        ("audio", ("Headphones", "Speaker", "Earbuds", "Soundbar")),
        ("cameras", ("Camera", "Action Camera", "Lens")),
        ("accessories", ("Charger", "Cable", "Phone Case", "Power Bank")),
        ("wearables", ("Smartwatch", "Fitness Tracker")),
    )),
    ("fashion", 45.0, 1.6, ("black", "white", "navy", "red", "cotton", "linen", "leather", "wool"), (
        ("shoes", ("Sneakers", "Boots", "Sandals", "Loafers")),
        ("dresses", ("Dress", "Maxi Dress", "Midi Dress")),
        ("shirts", ("Shirt", "T-Shirt", "Blouse", "Polo")),
        ("jackets", ("Jacket", "Coat", "Parka", "Blazer")),
        ("bags", ("Backpack", "Handbag", "Tote", "Wallet")),
        ("accessories", ("Scarf", "Belt", "Hat", "Sunglasses")),
    )),
    ("home", 40.0, 1.0, ("oak", "ceramic", "steel", "glass", "cotton", "minimalist"), (
        ("kitchen", ("Frying Pan", "Knife Set", "Kettle", "Blender")),
        ("furniture", ("Chair", "Desk", "Bookshelf", "Side Table")),
        ("bedding", ("Duvet", "Pillow", "Sheet Set", "Blanket")),
        ("decor", ("Lamp", "Vase", "Mirror", "Candle")),
        ("storage", ("Storage Box", "Basket", "Shelf Unit")),
    )),
    ("sports", 35.0, 0.8, ("breathable", "lightweight", "waterproof", "reflective", "ergonomic"), (
        ("running", ("Running Shoes", "Running Jacket", "Running Shorts")),
        ("fitness", ("Dumbbells", "Yoga Mat", "Kettlebell", "Resistance Bands")),
        ("cycling", ("Helmet", "Bike Light", "Cycling Jersey")),
        ("outdoor", ("Tent", "Sleeping Bag", "Hiking Backpack")),
        ("team-sports", ("Football", "Basketball", "Shin Guards")),
    )),
    ("beauty", 18.0, 1.0, ("vegan", "fragrance-free", "spf", "hydrating", "sensitive-skin"), (
        ("skincare", ("Moisturizer", "Serum", "Cleanser", "Face Mask")),
        ("makeup", ("Lipstick", "Mascara", "Foundation", "Eyeshadow Palette")),
        ("haircare", ("Shampoo", "Conditioner", "Hair Oil")),
        ("fragrance", ("Perfume", "Eau de Toilette", "Body Mist")),
    )),
    ("books", 14.0, 0.7, ("paperback", "hardcover", "bestseller", "illustrated", "award-winning"), (
        ("fiction", ("Novel", "Short Stories", "Thriller")),
        ("non-fiction", ("Biography", "Essays", "History")),
        ("children", ("Picture Book", "Bedtime Stories")),
        ("cooking", ("Cookbook", "Baking Book")),
        ("science", ("Science Guide", "Astronomy Book", "Field Guide")),
        ("comics", ("Graphic Novel", "Comic Collection")),
    )),
    ("toys", 25.0, 0.6, ("educational", "wooden", "battery-free", "3+", "8+"), (
        ("building", ("Building Set", "Construction Kit")),
        ("dolls", ("Doll", "Dollhouse", "Plush Toy")),
        ("games", ("Board Game", "Puzzle", "Card Game")),
        ("outdoor-play", ("Kite", "Scooter", "Water Blaster")),
        ("baby", ("Rattle", "Teether", "Activity Gym")),
    )),
    ("grocery", 6.0, 1.2, ("organic", "fair-trade", "gluten-free", "family-size", "sugar-free"), (
        ("coffee-tea", ("Coffee Beans", "Ground Coffee", "Green Tea", "Herbal Tea")),
        ("snacks", ("Crackers", "Chocolate Bar", "Trail Mix")),
        ("pantry", ("Olive Oil", "Pasta", "Rice", "Peanut Butter")),
        ("beverages", ("Sparkling Water", "Orange Juice", "Kombucha")),
        ("breakfast", ("Granola", "Oat Milk", "Honey")),
    )),
)

ADJECTIVES: tuple[str, ...] = (
    "Classic", "Modern", "Compact", "Premium", "Lightweight", "Essential", "Ultra", "Vintage",
    "Everyday", "Pro", "Deluxe", "Eco", "Smart", "Soft", "Bold", "Slim", "Travel", "Urban",
    "Signature", "Studio",
)
# Brand names are invented from these syllables (prefix + suffix), distinct across top categories.
BRAND_PREFIXES: tuple[str, ...] = (
    "Nor", "Vel", "Axi", "Lum", "Kora", "Zen", "Bri", "Tal", "Orv", "Mira", "Sol", "Fen",
    "Quil", "Ast", "Dra", "Pel", "Ryn", "Cal",
)
BRAND_SUFFIXES: tuple[str, ...] = (
    "vik", "ora", "tek", "lux", "ano", "ix", "ette", "wood", "field", "stone", "line", "co", "ia", "ara", "on",
)

# Characters that would need escaping in a JSON string; ids free of them are written verbatim.
_JSON_UNSAFE = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')


@dataclass(frozen=True)
class ShopParams:
    """Knobs of the synthetic shop; the defaults give the funnel and mix described in the module doc.

    Probabilities are per event of the previous funnel step; times are milliseconds.
    """

    zipf_exponent: float = 1.1
    price_sigma: float = 0.5
    new_item_fraction: float = 0.10
    sold_out_fraction: float = 0.02
    trending_fraction: float = 0.03
    # Trending bump: amplitude relative to the most popular item of the subcategory (weight 1).
    trending_amplitude: tuple[float, float] = (1.0, 3.0)
    trending_width_ms: tuple[int, int] = (6 * HOUR_MS, 36 * HOUR_MS)
    novelty_amplitude: tuple[float, float] = (0.3, 1.5)
    novelty_decay_ms: int = 3 * DAY_MS
    max_item_age_ms: int = 365 * DAY_MS
    taste_concentration: float = 0.4
    activity_sigma: float = 1.0
    p_favourite_subcategory: float = 0.35
    p_brand_loyal_session: float = 0.3
    p_brand_view: float = 0.6
    mean_views: float = 5.0
    max_views: int = 30
    view_gap_ms: float = 35 * SECOND_MS  # mean of the exponential gap between views
    view_gap_clip_ms: tuple[int, int] = (3 * SECOND_MS, 3 * MINUTE_MS)
    p_click: float = 0.30
    p_cart: float = 0.267
    p_favorite: float = 0.05
    p_purchase: float = 0.375
    p_remove: float = 0.30
    click_delay_ms: tuple[int, int] = (1 * SECOND_MS, 10 * SECOND_MS)
    cart_delay_ms: tuple[int, int] = (5 * SECOND_MS, 60 * SECOND_MS)
    favorite_delay_ms: tuple[int, int] = (2 * SECOND_MS, 30 * SECOND_MS)
    remove_delay_ms: tuple[int, int] = (30 * SECOND_MS, 10 * MINUTE_MS)
    checkout_delay_ms: tuple[int, int] = (30 * SECOND_MS, 5 * MINUTE_MS)
    p_extra_quantity: float = 0.25  # quantity ~ Geometric(1 - p_extra_quantity), capped at 10
    day_amplitude: float = 0.6
    peak_hour_utc: float = 20.0
    max_slice_ms: int = HOUR_MS
    chunk_events: int = 50_000

    def max_session_ms(self) -> int:
        """Upper bound of a session's span from its first to its last event (ms)."""
        views = (self.max_views - 1) * self.view_gap_clip_ms[1]
        after_view = self.click_delay_ms[1] + self.cart_delay_ms[1] + max(self.remove_delay_ms[1], self.favorite_delay_ms[1])
        return views + after_view + self.checkout_delay_ms[1]

    def mean_events_per_session(self) -> float:
        """Expected events per session (ignoring the view cap), used to size session batches."""
        clicks = self.p_click
        carts = clicks * self.p_cart
        per_view = 1 + clicks + carts + clicks * self.p_favorite + carts * (self.p_purchase + (1 - self.p_purchase) * self.p_remove)
        return self.mean_views * per_view


@dataclass
class Shop:
    """The static part of a shop as arrays indexed by item, subcategory and user (see :func:`build_shop`).

    The shoppers' latent tastes (``user_taste``, favourite subcategories and
    brands) are what the event stream is drawn from; :mod:`transforms.shoppers`
    uses them to make simulated shoppers respond to the lists they are shown.
    """

    catalog: list[CatalogItem]
    item_ids: np.ndarray  # object[str]
    item_sub: np.ndarray  # int, subcategory index
    item_brand_group: np.ndarray  # int, sub * brands_per_top + local brand
    item_price: np.ndarray  # float64
    item_created: np.ndarray  # int64 ms
    item_gone: np.ndarray  # int64 ms; out of stock from then on (int64 max when never)
    item_base: np.ndarray  # float64 Zipf weight
    trend_items: np.ndarray
    trend_peak: np.ndarray
    trend_width: np.ndarray
    trend_amp: np.ndarray
    new_items: np.ndarray
    new_amp: np.ndarray
    sub_top: np.ndarray  # int, top index of each subcategory
    sub_share: np.ndarray  # float, share of the subcategory within its top
    top_popularity: np.ndarray
    brands_per_top: int
    user_ids: np.ndarray  # object[str]
    user_taste: np.ndarray  # (users, tops) float64, rows sum to 1
    user_fav_sub: np.ndarray  # (users, 2) int
    user_fav_brand_top: np.ndarray  # (users, 2) int
    user_fav_brand_local: np.ndarray  # (users, 2) int
    user_activity_cum: np.ndarray  # cumulative activity weights


def _id_width(count: int) -> int:
    return max(6, len(str(count)))


def _sample_rows(weights: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Index drawn from each row's categorical distribution ``weights[i] / sum(weights[i])``.

    ``r`` holds one uniform [0, 1) number per row.  Rows whose sampled entry has
    zero weight (floating-point edge) fall back to the row's largest weight.
    """
    cum = np.cumsum(weights, axis=1)
    target = r * cum[:, -1]
    index = np.minimum((cum <= target[:, None]).sum(axis=1), weights.shape[1] - 1)
    rows = np.arange(len(index))
    bad = weights[rows, index] <= 0
    if bad.any():
        index[bad] = np.argmax(weights[bad], axis=1)
    return index


class _GroupedSampler:
    """Draw an element of a given group with probability proportional to its weight.

    Elements are sorted by group; ``keys = group + (cumulative weight within the
    group / group total)`` is then non-decreasing, and the element for group
    ``g`` and uniform ``r`` is the first whose key exceeds ``g + r``.  One
    ``searchsorted`` serves any number of draws.  Callers must only ask for
    groups whose total weight is positive (see :attr:`totals`).
    """

    def __init__(self, groups: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(groups, kind="stable")
        self.sorted_groups = groups[self.order]
        self.n_groups = n_groups
        self.keys = np.zeros(len(groups))
        self.totals = np.zeros(n_groups)
        # Last position of each non-empty group, where the key is set to exactly g + 1.
        counts = np.bincount(self.sorted_groups, minlength=n_groups)
        self._last = np.cumsum(counts) - 1
        self._nonempty = counts > 0

    def reweight(self, weights: np.ndarray) -> None:
        """Install new element weights (indexed like the ``groups`` given at construction)."""
        w = weights[self.order]
        self.totals = np.bincount(self.sorted_groups, weights=w, minlength=self.n_groups)
        offsets = np.concatenate(([0.0], np.cumsum(self.totals)[:-1]))
        within = np.cumsum(w) - offsets[self.sorted_groups]
        totals = self.totals[self.sorted_groups]
        fraction = np.divide(within, totals, out=np.ones_like(within), where=totals > 0)
        fraction = np.clip(fraction, 0.0, 1.0)
        fraction[self._last[self._nonempty]] = 1.0
        self.keys = self.sorted_groups + fraction

    def sample(self, groups: np.ndarray, r: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.keys, groups + r, side="right")
        return self.order[np.minimum(position, len(self.order) - 1)]


def _brand_names(rng: np.random.Generator, count: int) -> list[str]:
    combos = len(BRAND_PREFIXES) * len(BRAND_SUFFIXES)
    if count > combos:
        raise ValueError(f"at most {combos} brands can be named")
    picks = rng.choice(combos, size=count, replace=False)
    return [BRAND_PREFIXES[p // len(BRAND_SUFFIXES)] + BRAND_SUFFIXES[p % len(BRAND_SUFFIXES)] for p in picks]


def _build_shop(users: int, items: int, seed: int, start_ms: int, end_ms: int, params: ShopParams) -> Shop:
    """Catalog and shoppers; draws from its own child streams so events never shift them."""
    catalog_seed, user_seed = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(catalog_seed)
    n_top = len(TAXONOMY)
    top_names = [t[0] for t in TAXONOMY]
    top_median = np.array([t[1] for t in TAXONOMY])
    top_popularity = np.array([t[2] for t in TAXONOMY])
    top_popularity = top_popularity / top_popularity.sum()
    sub_top_list, sub_paths, sub_nouns = [], [], []
    for t, (top, _, _, _, subs) in enumerate(TAXONOMY):
        for sub, nouns in subs:
            sub_top_list.append(t)
            sub_paths.append(f"{top}/{sub}")
            sub_nouns.append(nouns)
    sub_top = np.array(sub_top_list)
    n_sub = len(sub_top)
    sub_share = np.empty(n_sub)
    for t in range(n_top):
        members = np.flatnonzero(sub_top == t)
        sub_share[members] = rng.dirichlet(np.full(len(members), 2.0))
    sub_price_factor = np.exp(rng.normal(0.0, 0.35, size=n_sub))

    # Items over subcategories in proportion to the shop's category mix.
    item_sub = rng.choice(n_sub, size=items, p=top_popularity[sub_top] * sub_share)
    item_top = sub_top[item_sub]
    brands_per_top = int(np.clip(items // 60, 3, 12))
    brand_names = np.array(_brand_names(rng, n_top * brands_per_top), dtype=object).reshape(n_top, brands_per_top)
    brand_share = rng.dirichlet(np.ones(brands_per_top), size=n_top)
    item_brand_local = np.zeros(items, dtype=np.int64)
    for t in range(n_top):
        members = np.flatnonzero(item_top == t)
        item_brand_local[members] = rng.choice(brands_per_top, size=len(members), p=brand_share[t])
    item_price = np.maximum(
        np.round(top_median[item_top] * sub_price_factor[item_sub] * np.exp(rng.normal(0.0, params.price_sigma, size=items)), 2),
        0.5,
    )
    adjective = rng.integers(0, len(ADJECTIVES), size=items)
    noun_count = np.array([len(sub_nouns[s]) for s in range(n_sub)])
    noun = (rng.random(items) * noun_count[item_sub]).astype(np.int64)
    attribute_count = np.array([len(t[3]) for t in TAXONOMY])
    attribute = (rng.random(items) * attribute_count[item_top]).astype(np.int64)

    # Zipf popularity in a random rank within each subcategory.
    tiebreak = rng.random(items)
    order = np.lexsort((tiebreak, item_sub))
    counts = np.bincount(item_sub, minlength=n_sub)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(items, dtype=np.int64)
    rank[order] = np.arange(items) - first[item_sub[order]]
    item_base = (rank + 1.0) ** -params.zipf_exponent

    # Which items arrive late, sell out or trend (disjoint; at least one item stays plain).
    period = end_ms - start_ms
    n_new = int(params.new_item_fraction * items)
    n_sold = int(params.sold_out_fraction * items)
    n_trend = min(int(params.trending_fraction * items), items - n_new - n_sold)
    roles = rng.permutation(items)
    new_items = np.sort(roles[:n_new])
    sold_items = np.sort(roles[n_new:n_new + n_sold])
    trend_items = np.sort(roles[n_new + n_sold:n_new + n_sold + n_trend])
    item_created = start_ms - rng.integers(DAY_MS, params.max_item_age_ms, size=items, endpoint=True)
    last_arrival = end_ms - DAY_MS if period > 2 * DAY_MS else end_ms - period // 2
    item_created[new_items] = rng.integers(start_ms, max(last_arrival, start_ms + 1), size=n_new)
    never = np.iinfo(np.int64).max
    item_gone = np.full(items, never, dtype=np.int64)
    item_gone[sold_items] = rng.integers(start_ms + period // 5, end_ms, size=n_sold)
    lo, hi = params.trending_amplitude
    trend_amp = rng.uniform(lo, hi, size=n_trend)
    trend_peak = rng.integers(start_ms, end_ms, size=n_trend).astype(np.float64)
    trend_width = rng.integers(*params.trending_width_ms, size=n_trend).astype(np.float64)
    lo, hi = params.novelty_amplitude
    new_amp = rng.uniform(lo, hi, size=n_new)

    width = _id_width(items)
    item_ids = np.array([f"i{i + 1:0{width}d}" for i in range(items)], dtype=object)
    catalog = []
    for i in range(items):
        top, sub = int(item_top[i]), int(item_sub[i])
        brand = brand_names[top, item_brand_local[i]]
        adj = ADJECTIVES[adjective[i]]
        gone = int(item_gone[i])
        catalog.append(
            CatalogItem(
                item_id=item_ids[i],
                title=f"{adj} {brand} {sub_nouns[sub][noun[i]]}",
                category=sub_paths[sub],
                brand=brand,
                price=float(item_price[i]),
                tags=(top_names[top], sub_paths[sub].split("/", 1)[1], adj.lower(), TAXONOMY[top][3][attribute[i]]),
                created_at=int(item_created[i]),
                # The catalog is the final state: a sold-out item's current version dates from its sell-out.
                in_stock=gone == never,
                ts=int(item_created[i]) if gone == never else gone,
            )
        )

    # Shoppers.
    urng = np.random.default_rng(user_seed)
    taste = urng.dirichlet(params.taste_concentration * n_top * top_popularity, size=users)
    empty = taste.sum(axis=1) <= 0  # all-underflow rows from tiny Dirichlet draws
    taste[empty] = top_popularity
    fav_top = np.stack([_sample_rows(taste, urng.random(users)) for _ in range(2)], axis=1)
    sub_sampler = _GroupedSampler(sub_top, n_top)
    sub_sampler.reweight(sub_share)
    fav_sub = np.stack([sub_sampler.sample(fav_top[:, j], urng.random(users)) for j in range(2)], axis=1)
    fav_brand_top = np.stack([_sample_rows(taste, urng.random(users)) for _ in range(2)], axis=1)
    fav_brand_local = np.stack([_sample_rows(brand_share[fav_brand_top[:, j]], urng.random(users)) for j in range(2)], axis=1)
    activity = urng.lognormal(0.0, params.activity_sigma, size=users)
    width = _id_width(users)
    user_ids = np.array([f"u{u + 1:0{width}d}" for u in range(users)], dtype=object)

    return Shop(
        catalog=catalog,
        item_ids=item_ids,
        item_sub=item_sub,
        item_brand_group=item_sub * brands_per_top + item_brand_local,
        item_price=item_price,
        item_created=item_created,
        item_gone=item_gone,
        item_base=item_base,
        trend_items=trend_items,
        trend_peak=trend_peak,
        trend_width=trend_width,
        trend_amp=trend_amp,
        new_items=new_items,
        new_amp=new_amp,
        sub_top=sub_top,
        sub_share=sub_share,
        top_popularity=top_popularity,
        brands_per_top=brands_per_top,
        user_ids=user_ids,
        user_taste=taste,
        user_fav_sub=fav_sub,
        user_fav_brand_top=fav_brand_top,
        user_fav_brand_local=fav_brand_local,
        user_activity_cum=np.cumsum(activity),
    )


def _item_weights(shop: Shop, slice_start: int, slice_end: int, params: ShopParams) -> np.ndarray:
    """Item popularity during one slice (evaluated at its midpoint); 0 for unavailable items.

    An item is available when it exists at the slice start and stays in stock
    until every session started in the slice has ended, so no event ever
    precedes an item's ``created_at`` or follows its sell-out.
    """
    t = (slice_start + slice_end) / 2.0
    w = shop.item_base.copy()
    if len(shop.trend_items):
        z = (t - shop.trend_peak) / shop.trend_width
        w[shop.trend_items] += shop.trend_amp * np.exp(-0.5 * z * z)
    if len(shop.new_items):
        age = np.maximum(t - shop.item_created[shop.new_items], 0.0)
        w[shop.new_items] += shop.new_amp * np.exp(-age / params.novelty_decay_ms)
    available = (shop.item_created <= slice_start) & (shop.item_gone >= slice_end + params.max_session_ms())
    w[~available] = 0.0
    return w


@dataclass
class _Rows:
    """Events as integer columns (indices into the shop), cheap to merge and sort."""

    session: np.ndarray  # int64 global session number
    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray  # int8
    ts: np.ndarray  # int64 ms
    quantity: np.ndarray  # float64, NaN when absent
    price: np.ndarray  # float64, NaN when absent

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, index: np.ndarray | slice) -> "_Rows":
        return _Rows(**{k: v[index] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list["_Rows"]) -> "_Rows":
        return _Rows(**{k: np.concatenate([vars(p)[k] for p in parts]) for k in vars(parts[0])})

    @staticmethod
    def empty() -> "_Rows":
        i = np.empty(0, dtype=np.int64)
        f = np.empty(0)
        return _Rows(session=i, user=i, item=i, etype=np.empty(0, dtype=np.int8), ts=i, quantity=f, price=f)


def _uniform_ms(rng: np.random.Generator, bounds: tuple[int, int], size: int) -> np.ndarray:
    return rng.integers(bounds[0], bounds[1], size=size, endpoint=True)


def _sessions(
    rng: np.random.Generator,
    shop: Shop,
    params: ShopParams,
    count: int,
    slice_start: int,
    slice_ms: int,
    items: _GroupedSampler,
    brands: _GroupedSampler,
    subs: _GroupedSampler,
) -> tuple[_Rows, np.ndarray]:
    """``count`` sessions starting uniformly in the slice; rows sorted by (session, ts).

    Session numbers are local (0..count-1); also returns events per session.
    """
    user = np.searchsorted(shop.user_activity_cum, rng.random(count) * shop.user_activity_cum[-1], side="right")
    user = np.minimum(user, len(shop.user_ids) - 1)
    sub_available = items.totals > 0
    top_available = subs.totals > 0
    taste = shop.user_taste[user] * top_available
    top = _sample_rows(taste, rng.random(count))
    lost = ~top_available[top]  # users whose every liked top category is empty right now
    if lost.any():
        top[lost] = _sample_rows(np.tile(shop.top_popularity * top_available, (int(lost.sum()), 1)), rng.random(int(lost.sum())))
    sub = subs.sample(top, rng.random(count))
    favourite = shop.user_fav_sub[user, rng.integers(0, 2, size=count)]
    use_favourite = (rng.random(count) < params.p_favourite_subcategory) & sub_available[favourite]
    sub = np.where(use_favourite, favourite, sub)
    top = shop.sub_top[sub]
    # Brand-loyal sessions draw part of their views from a favourite brand of this top category.
    brand_group = np.full(count, -1, dtype=np.int64)
    for j in (1, 0):  # the first favourite wins when both brands belong to this top
        match = shop.user_fav_brand_top[user, j] == top
        brand_group[match] = sub[match] * shop.brands_per_top + shop.user_fav_brand_local[user[match], j]
    loyal = (brand_group >= 0) & (rng.random(count) < params.p_brand_loyal_session)
    loyal[loyal] = brands.totals[brand_group[loyal]] > 0

    views = np.minimum(rng.geometric(1.0 / params.mean_views, size=count), params.max_views)
    n_views = int(views.sum())
    view_session = np.repeat(np.arange(count), views)
    first_view = np.concatenate(([0], np.cumsum(views)[:-1]))
    from_brand = loyal[view_session] & (rng.random(n_views) < params.p_brand_view)
    r = rng.random(n_views)
    view_item = items.sample(sub[view_session], r)
    if from_brand.any():
        view_item[from_brand] = brands.sample(brand_group[view_session[from_brand]], r[from_brand])
    gap = np.clip(rng.exponential(params.view_gap_ms, size=n_views), *params.view_gap_clip_ms).astype(np.int64)
    gap[first_view] = 0
    elapsed = np.cumsum(gap)
    start = slice_start + (rng.random(count) * slice_ms).astype(np.int64)
    view_ts = start[view_session] + elapsed - elapsed[first_view][view_session]

    clicked = np.flatnonzero(rng.random(n_views) < params.p_click)
    click_ts = view_ts[clicked] + _uniform_ms(rng, params.click_delay_ms, len(clicked))
    carted_of_clicks = np.flatnonzero(rng.random(len(clicked)) < params.p_cart)
    carted = clicked[carted_of_clicks]
    cart_ts = click_ts[carted_of_clicks] + _uniform_ms(rng, params.cart_delay_ms, len(carted))
    faved_of_clicks = np.flatnonzero(rng.random(len(clicked)) < params.p_favorite)
    faved = clicked[faved_of_clicks]
    fav_ts = click_ts[faved_of_clicks] + _uniform_ms(rng, params.favorite_delay_ms, len(faved))
    bought_mask = rng.random(len(carted)) < params.p_purchase
    removed_mask = ~bought_mask & (rng.random(len(carted)) < params.p_remove)
    removed = carted[removed_mask]
    remove_ts = cart_ts[removed_mask] + _uniform_ms(rng, params.remove_delay_ms, len(removed))
    bought = carted[bought_mask]

    # Checkout comes after everything else the session did.
    pre_session = np.concatenate([view_session, view_session[clicked], view_session[carted], view_session[faved], view_session[removed]])
    pre_ts = np.concatenate([view_ts, click_ts, cart_ts, fav_ts, remove_ts])
    last = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, pre_session, pre_ts)
    checkout = last + _uniform_ms(rng, params.checkout_delay_ms, count)
    buy_ts = checkout[view_session[bought]]
    quantity = np.minimum(rng.geometric(1.0 - params.p_extra_quantity, size=len(bought)), 10).astype(np.float64)

    source = np.concatenate([np.arange(n_views), clicked, carted, faved, removed, bought])
    etype = np.concatenate([
        np.full(n_views, VIEW, dtype=np.int8),
        np.full(len(clicked), CLICK, dtype=np.int8),
        np.full(len(carted), ADD_TO_CART, dtype=np.int8),
        np.full(len(faved), FAVORITE, dtype=np.int8),
        np.full(len(removed), REMOVE_FROM_CART, dtype=np.int8),
        np.full(len(bought), PURCHASE, dtype=np.int8),
    ])
    ts = np.concatenate([pre_ts, buy_ts])
    session = view_session[source]
    item = view_item[source]
    n_rows = len(ts)
    qty = np.full(n_rows, np.nan)
    price = np.full(n_rows, np.nan)
    qty[n_rows - len(bought):] = quantity
    price[n_rows - len(bought):] = shop.item_price[item[n_rows - len(bought):]]
    order = np.lexsort((ts, session))
    rows = _Rows(session=session, user=user[session], item=item, etype=etype, ts=ts, quantity=qty, price=price).take(order)
    return rows, np.bincount(session, minlength=count)


def _slice_bounds(start_ms: int, end_ms: int, events: int, params: ShopParams) -> tuple[np.ndarray, np.ndarray]:
    """Slice boundaries (ms) and the exact number of events each slice must produce.

    ``Lambda(t) = (t - start) + (A / w) * (sin(w (t - peak)) - sin(w (start - peak)))``
    integrates the intensity ``1 + A cos(w (t - peak))`` with ``w = 2 pi / day``;
    slice ``k`` gets ``round(events * Lambda(b[k+1]) / Lambda(end)) - round(events * Lambda(b[k]) / Lambda(end))``.
    """
    period = end_ms - start_ms
    # Enough slices that a slice yields about half a chunk, and none longer than max_slice_ms.
    n_slices = max(math.ceil(period / params.max_slice_ms), math.ceil(2 * events / params.chunk_events), 1)
    bounds = start_ms + (np.arange(n_slices + 1) * period) // n_slices
    omega = 2 * math.pi / DAY_MS
    peak = params.peak_hour_utc * HOUR_MS
    phase0 = omega * ((start_ms - peak) % DAY_MS)
    x = (bounds - start_ms).astype(np.float64)
    cumulative = x + params.day_amplitude / omega * (np.sin(phase0 + omega * x) - math.sin(phase0))
    share = cumulative / cumulative[-1]
    targets = np.round(events * share).astype(np.int64)
    targets[0], targets[-1] = 0, events
    return bounds, np.diff(targets)


def _event_stream(shop: Shop, events: int, seed: int, start_ms: int, end_ms: int, params: ShopParams) -> Iterator[EventBatch]:
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    bounds, targets = _slice_bounds(start_ms, end_ms, events, params)
    n_items, n_sub, n_top = len(shop.item_ids), len(shop.sub_top), len(shop.top_popularity)
    items = _GroupedSampler(shop.item_sub, n_sub)
    brands = _GroupedSampler(shop.item_brand_group, n_sub * shop.brands_per_top)
    subs = _GroupedSampler(shop.sub_top, n_top)
    mean_events = params.mean_events_per_session()
    next_session = 0
    pending = _Rows.empty()
    ready: list[_Rows] = []
    ready_count = 0
    for k, need in enumerate(targets):
        slice_start, slice_end = int(bounds[k]), int(bounds[k + 1])
        parts: list[_Rows] = []
        if need > 0:
            weights = _item_weights(shop, slice_start, slice_end, params)
            items.reweight(weights)
            brands.reweight(weights)
            subs.reweight(shop.sub_share * (items.totals > 0))
            have = 0
            while have < need:
                count = int(math.ceil((need - have) / mean_events * 1.1)) + 1
                rows, per_session = _sessions(rng, shop, params, count, slice_start, slice_end - slice_start, items, brands, subs)
                # Cut at exactly `need` rows: whole sessions, then the time-prefix of the last one.
                take = min(len(rows), need - have)
                used = int(np.searchsorted(np.cumsum(per_session), take, side="left")) + 1
                rows = rows.take(slice(0, take))
                rows.session = rows.session + next_session
                next_session += min(used, count)
                parts.append(rows)
                have += take
        merged = _Rows.concat([pending, *parts]) if parts else pending
        merged = merged.take(np.argsort(merged.ts, kind="stable"))
        last_slice = k == len(targets) - 1
        cut = len(merged) if last_slice else int(np.searchsorted(merged.ts, slice_end, side="left"))
        ready.append(merged.take(slice(0, cut)))
        ready_count += cut
        pending = merged.take(slice(cut, None))
        while ready_count >= params.chunk_events or (last_slice and ready_count > 0):
            block = _Rows.concat(ready)
            size = min(params.chunk_events, len(block))
            yield _to_batch(shop, block.take(slice(0, size)))
            rest = block.take(slice(size, None))
            ready, ready_count = [rest], len(rest)


def _to_batch(shop: Shop, rows: _Rows) -> EventBatch:
    unique, inverse = np.unique(rows.session, return_inverse=True)
    names = np.array([f"s{s + 1:09d}" for s in unique.tolist()], dtype=object)
    return EventBatch(
        user=shop.user_ids[rows.user],
        item=shop.item_ids[rows.item],
        etype=rows.etype,
        ts=rows.ts,
        session=names[inverse],
        quantity=rows.quantity,
        price=rows.price,
    )


def generate_shop(
    users: int,
    items: int,
    events: int,
    seed: int,
    start_ms: int = 1_700_000_000_000,
    days: float = 14.0,
    params: ShopParams | None = None,
) -> tuple[list[CatalogItem], Iterator[EventBatch]]:
    """A synthetic shop: its catalog (one entry per item, final state) and its events.

    The iterator yields :class:`EventBatch` chunks of ``params.chunk_events``
    events (the last may be shorter) in non-decreasing ``ts`` order, exactly
    ``events`` in total, over ``[start_ms, start_ms + days)`` (sessions started
    near the end may run a little past it).  Catalog and events are fully
    determined by ``seed``.  Raises ``ValueError`` for impossible sizes.
    """
    params = params or ShopParams()
    if users < 1 or items < 1:
        raise ValueError("a shop needs at least one user and one item")
    if events < 0:
        raise ValueError("events must be >= 0")
    if not (days > 0 and math.isfinite(days)):
        raise ValueError("days must be a positive number")
    end_ms = start_ms + int(round(days * DAY_MS))
    if start_ms - params.max_item_age_ms < MIN_TS_MS or end_ms + DAY_MS > MAX_TS_MS:
        raise ValueError("the simulated period (and item creation dates a year before it) must lie within 2000..2100")
    if params.chunk_events < 1:
        raise ValueError("chunk_events must be >= 1")
    shop = build_shop(users, items, seed, start_ms, days, params)
    return shop.catalog, _event_stream(shop, events, seed, start_ms, end_ms, params)


def build_shop(users: int, items: int, seed: int, start_ms: int = 1_700_000_000_000, days: float = 14.0, params: ShopParams | None = None) -> Shop:
    """The catalog and shoppers of :func:`generate_shop` for the same arguments, without its events.

    Raises ``ValueError`` for impossible sizes or periods.
    """
    params = params or ShopParams()
    if users < 1 or items < 1:
        raise ValueError("a shop needs at least one user and one item")
    if not (days > 0 and math.isfinite(days)):
        raise ValueError("days must be a positive number")
    end_ms = start_ms + int(round(days * DAY_MS))
    if start_ms - params.max_item_age_ms < MIN_TS_MS or end_ms + DAY_MS > MAX_TS_MS:
        raise ValueError("the simulated period (and item creation dates a year before it) must lie within 2000..2100")
    return _build_shop(users, items, seed, start_ms, end_ms, params)


def events_to_jsonl(batch: EventBatch) -> bytes:
    """The batch as JSON lines, byte-identical to :meth:`EventBatch.to_jsonl` but several times faster.

    Rows with only the required fields and a session id are formatted directly
    when no id needs JSON escaping; every other row goes through ``orjson``.
    """
    n = len(batch)
    if n == 0:
        return b""
    names = np.array(EVENT_TYPES, dtype=object)[batch.etype]
    plain = (
        np.isnan(batch.quantity) & np.isnan(batch.price) & np.isnan(batch.rating)
        & (batch.query == "") & (batch.session != "")
    )
    safe = not any(_JSON_UNSAFE.search("".join(column)) for column in (batch.user, batch.item, batch.session))
    if not safe:
        plain[:] = False
    lines = [
        f'{{"user_id":"{u}","item_id":"{i}","event_type":"{e}","ts":{t},"session_id":"{s}"}}'
        for u, i, e, t, s in zip(batch.user.tolist(), batch.item.tolist(), names.tolist(), batch.ts.tolist(), batch.session.tolist())
    ] if plain.any() else [""] * n
    other = np.flatnonzero(~plain)
    if len(other):
        for index, record in zip(other.tolist(), batch.take(other).to_records()):
            lines[index] = orjson.dumps(record).decode()
    return ("\n".join(lines) + "\n").encode()


def _events_arrow(batch: EventBatch):
    import pyarrow as pa

    quantity_missing = np.isnan(batch.quantity)
    return pa.table(
        {
            "user_id": pa.array(batch.user, type=pa.string()),
            "item_id": pa.array(batch.item, type=pa.string()),
            "event_type": pa.array(np.array(EVENT_TYPES, dtype=object)[batch.etype], type=pa.string()),
            "ts": pa.array(batch.ts, type=pa.int64()),
            "session_id": pa.array(batch.session, type=pa.string()),
            "quantity": pa.array(np.where(quantity_missing, 0, batch.quantity).astype(np.int64), mask=quantity_missing, type=pa.int64()),
            "price": pa.array(batch.price, mask=np.isnan(batch.price), type=pa.float64()),
        }
    )


def _catalog_arrow(catalog: list[CatalogItem]):
    import pyarrow as pa

    schema = pa.schema([
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("tags", pa.list_(pa.string())),
        ("created_at", pa.int64()),
        ("in_stock", pa.bool_()),
        ("ts", pa.int64()),
    ])
    return pa.Table.from_pylist([item.to_dict() for item in catalog], schema=schema)


@dataclass(frozen=True)
class ShopSummary:
    """What :func:`write_shop` wrote and how long it took (wall-clock seconds, measured, not used)."""

    out_dir: Path
    users: int
    items: int
    events: int
    event_counts: dict[str, int]
    seconds: float
    files: tuple[Path, ...]

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.inf


def write_shop(
    out_dir: Path | str,
    users: int,
    items: int,
    events: int,
    seed: int,
    fmt: str = "jsonl",
    start_ms: int = 1_700_000_000_000,
    days: float = 14.0,
    params: ShopParams | None = None,
) -> ShopSummary:
    """Generate a shop and write ``catalog.jsonl`` and ``events.jsonl`` into ``out_dir``.

    With ``fmt="parquet"`` also ``catalog.parquet`` and ``events.parquet``
    (written incrementally, one row group per event chunk).  Files are
    overwritten.  Returns counts and timing.
    """
    if fmt not in ("jsonl", "parquet"):
        raise ValueError("fmt must be 'jsonl' or 'parquet'")
    began = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    catalog, stream = generate_shop(users, items, events, seed, start_ms=start_ms, days=days, params=params)
    files = [out / "catalog.jsonl", out / "events.jsonl"]
    with open(files[0], "wb") as fh:
        fh.write(b"".join(item.to_json() + b"\n" for item in catalog))
    writer = None
    counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    written = 0
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            files += [out / "catalog.parquet", out / "events.parquet"]
            pq.write_table(_catalog_arrow(catalog), files[2])
        with open(files[1], "wb") as fh:
            for batch in stream:
                fh.write(events_to_jsonl(batch))
                counts += np.bincount(batch.etype, minlength=len(EVENT_TYPES))
                written += len(batch)
                if fmt == "parquet":
                    table = _events_arrow(batch)
                    if writer is None:
                        writer = pq.ParquetWriter(files[3], table.schema)
                    writer.write_table(table)
        if fmt == "parquet" and writer is None:  # no events: still a readable, empty file
            pq.write_table(_events_arrow(EventBatch.empty()), files[3])
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - began
    summary = ShopSummary(
        out_dir=out,
        users=users,
        items=items,
        events=written,
        event_counts={name: int(c) for name, c in zip(EVENT_TYPES, counts) if c},
        seconds=seconds,
        files=tuple(files),
    )
    log.info("wrote %d events, %d items to %s in %.2f s", written, items, out, seconds)
    return summary
