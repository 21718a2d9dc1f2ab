"""Shoppers who respond to what they are shown: a behaviour model over the synthetic shop's latent tastes.

:mod:`transforms.synthetic` draws each shopper's taste (a distribution over
top categories), two favourite subcategories and two favourite brands.  Here
those tastes decide how a shopper reacts to a served list, so two recommenders
can be compared by the clicks and purchases they earn (``flowrec simulate``):

* **Fit** of item ``i`` to shopper ``u``, in [0, 1]::

      fit = taste_weight * taste[u, top(i)] / max(taste[u])
          + subcategory_weight * [sub(i) is a favourite subcategory of u]
          + brand_weight * [brand(i) is a favourite brand of u]

* **Click** on the item shown at 0-based ``position`` (an examination model:
  the shopper looks at a position with a probability falling with it, and
  clicks what they look at with a probability rising with the fit)::

      P(click) = click_max * fit ** fit_power * (1 + position) ** -position_decay

* **Cart** a clicked item with ``p_cart * fit``, **buy** a carted one with
  ``p_purchase``.
* **Organic browsing**, the shopper's own navigation, so a recommender can
  learn the taste: a subcategory (a favourite one with
  ``p_favourite_subcategory``, else a top category by taste and a subcategory
  by its share of it), then ``1 + Poisson(organic_views - 1)`` views of its
  available items by popularity.  Only views: an organic click or purchase of
  an item some list showed would be attributed to that list (last touch), and
  the comparison is about what the lists earn.

Everything is deterministic given the seed: each (shopper, visit) has its own
random stream (:meth:`Shoppers.rng`), so the outcome does not depend on the
order in which a simulation happens to serve its shoppers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from transforms.synthetic import Shop, ShopParams


@dataclass(frozen=True)
class BehaviourParams:
    """Knobs of the behaviour model (probabilities per shown or clicked item)."""

    click_max: float = 0.5
    fit_power: float = 2.0
    position_decay: float = 0.7
    p_cart: float = 0.4
    p_purchase: float = 0.5
    taste_weight: float = 0.6
    subcategory_weight: float = 0.3
    brand_weight: float = 0.1
    organic_views: float = 4.0
    p_favourite_subcategory: float = 0.35

    def __post_init__(self) -> None:
        for name in ("click_max", "p_cart", "p_purchase", "p_favourite_subcategory"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability")
        if self.fit_power <= 0 or self.position_decay < 0 or self.organic_views < 1:
            raise ValueError("fit_power must be > 0, position_decay >= 0 and organic_views >= 1")
        weights = (self.taste_weight, self.subcategory_weight, self.brand_weight)
        if min(weights) < 0 or not np.isclose(sum(weights), 1.0):
            raise ValueError("the fit weights must be >= 0 and sum to 1")


@dataclass(frozen=True)
class Reaction:
    """What a shopper did with one shown item: ``event_type`` is click, add_to_cart or purchase."""

    item: str
    position: int
    event_type: str


def click_probability(fit: np.ndarray, positions: np.ndarray, params: BehaviourParams) -> np.ndarray:
    """P(click) of items with these fits shown at these 0-based positions (see the module doc)."""
    fit = np.clip(np.asarray(fit, dtype=np.float64), 0.0, 1.0)
    examined = (1.0 + np.asarray(positions, dtype=np.float64)) ** -params.position_decay
    return params.click_max * fit**params.fit_power * examined


class Shoppers:
    """The shoppers of a :class:`~transforms.synthetic.Shop`, reacting by :class:`BehaviourParams`.

    Shoppers and items are named by their ids; an id the shop does not know
    has fit 0 (never clicked) or, for a shopper, raises ``KeyError``.
    ``available_at`` (epoch ms) leaves out of organic browsing the items not
    yet created or already sold out then.
    """

    def __init__(self, shop: Shop, seed: int, params: BehaviourParams | None = None, available_at: int | None = None, shop_params: ShopParams | None = None) -> None:
        self.shop = shop
        self.seed = seed
        self.params = params or BehaviourParams()
        self.user_index = {user: k for k, user in enumerate(shop.user_ids)}
        self.item_index = {item: k for k, item in enumerate(shop.item_ids)}
        self.item_top = shop.sub_top[shop.item_sub]
        self.item_brand_local = shop.item_brand_group % shop.brands_per_top
        weights = shop.item_base.copy()
        if available_at is not None:
            session_ms = (shop_params or ShopParams()).max_session_ms()
            weights[(shop.item_created > available_at) | (shop.item_gone < available_at + session_ms)] = 0.0
        self.browse_weights = weights

    @property
    def user_ids(self) -> Sequence[str]:
        return self.shop.user_ids

    def rng(self, user: str, visit: int) -> np.random.Generator:
        """The random stream of one visit of one shopper."""
        return np.random.default_rng([self.seed, self.user_index[user], visit])

    def fit(self, user: str, items: Sequence[str]) -> np.ndarray:
        """Fit in [0, 1] of each item to the shopper's latent taste (0 for unknown items)."""
        p = self.params
        u = self.user_index[user]
        index = np.array([self.item_index.get(i, -1) for i in items], dtype=np.int64)
        known = index >= 0
        fit = np.zeros(len(index))
        if not known.any():
            return fit
        k = index[known]
        taste = self.shop.user_taste[u]
        top = self.item_top[k]
        score = p.taste_weight * taste[top] / taste.max()
        score = score + p.subcategory_weight * np.isin(self.shop.item_sub[k], self.shop.user_fav_sub[u])
        favourite_brand = np.zeros(len(k), dtype=bool)
        for top_b, local_b in zip(self.shop.user_fav_brand_top[u], self.shop.user_fav_brand_local[u]):
            favourite_brand |= (top == top_b) & (self.item_brand_local[k] == local_b)
        fit[known] = score + p.brand_weight * favourite_brand
        return fit

    def respond(self, user: str, shown: Sequence[str], positions: Sequence[int], rng: np.random.Generator) -> list[Reaction]:
        """The shopper's clicks, carts and purchases on a shown list, in that order per item."""
        p = self.params
        fit = self.fit(user, shown)
        clicked = rng.random(len(shown)) < click_probability(fit, np.asarray(positions), p)
        carted = clicked & (rng.random(len(shown)) < p.p_cart * fit)
        bought = carted & (rng.random(len(shown)) < p.p_purchase)
        out: list[Reaction] = []
        for k in np.flatnonzero(clicked):
            item, position = shown[k], int(positions[k])
            out.append(Reaction(item, position, "click"))
            if carted[k]:
                out.append(Reaction(item, position, "add_to_cart"))
            if bought[k]:
                out.append(Reaction(item, position, "purchase"))
        return out

    def browse(self, user: str, rng: np.random.Generator) -> list[str]:
        """Items the shopper views on their own: one subcategory picked by taste, items by popularity."""
        shop, p = self.shop, self.params
        u = self.user_index[user]
        if rng.random() < p.p_favourite_subcategory:
            sub = int(shop.user_fav_sub[u][rng.integers(0, shop.user_fav_sub.shape[1])])
        else:
            top = int(rng.choice(len(shop.user_taste[u]), p=shop.user_taste[u] / shop.user_taste[u].sum()))
            members = np.flatnonzero(shop.sub_top == top)
            sub = int(rng.choice(members, p=shop.sub_share[members] / shop.sub_share[members].sum()))
        candidates = np.flatnonzero((shop.item_sub == sub) & (self.browse_weights > 0))
        if len(candidates) == 0:
            return []
        views = 1 + int(rng.poisson(p.organic_views - 1))
        weights = self.browse_weights[candidates]
        chosen = rng.choice(candidates, size=views, p=weights / weights.sum())
        return [str(shop.item_ids[i]) for i in chosen]
