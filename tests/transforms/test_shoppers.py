"""The behaviour model of simulated shoppers: clicks rise with fit, fall with position; deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.shoppers import BehaviourParams, Reaction, Shoppers, click_probability
from transforms.synthetic import build_shop

START_MS = 1_700_000_000_000


@pytest.fixture(scope="module")
def shoppers() -> Shoppers:
    return Shoppers(build_shop(users=50, items=400, seed=3, start_ms=START_MS), seed=11, available_at=START_MS)


def test_click_probability_is_the_examination_formula():
    params = BehaviourParams(click_max=0.5, fit_power=2.0, position_decay=1.0)
    assert click_probability(np.array([1.0, 0.5, 0.0]), np.array([0, 0, 0]), params) == pytest.approx([0.5, 0.125, 0.0])
    assert click_probability(np.array([1.0, 1.0, 1.0]), np.array([0, 1, 3]), params) == pytest.approx([0.5, 0.25, 0.125])
    assert click_probability(np.array([2.0, -1.0]), np.array([0, 0]), params) == pytest.approx([0.5, 0.0]), "fit is clipped to [0, 1]"


def test_fit_follows_the_latent_taste(shoppers):
    shop = shoppers.shop
    user = str(shop.user_ids[0])
    fit = shoppers.fit(user, list(shop.item_ids))
    assert fit.min() >= 0 and fit.max() <= 1
    favourite = np.isin(shop.item_sub, shop.user_fav_sub[0])
    assert fit[favourite].min() >= BehaviourParams().subcategory_weight
    top = shop.sub_top[shop.item_sub]
    best, worst = np.argmax(shop.user_taste[0]), np.argmin(shop.user_taste[0])
    plain = ~favourite
    assert fit[plain & (top == best)].mean() > fit[plain & (top == worst)].mean()
    assert shoppers.fit(user, ["no-such-item"]).tolist() == [0.0]


def _clicks(shoppers: Shoppers, user: str, shown: list[str], visits: int) -> np.ndarray:
    """Clicks per position over many visits shown the same list."""
    counts = np.zeros(len(shown))
    for visit in range(visits):
        for reaction in shoppers.respond(user, shown, list(range(len(shown))), shoppers.rng(user, visit)):
            if reaction.event_type == "click":
                counts[reaction.position] += 1
    return counts


def test_better_fitting_lists_get_more_clicks(shoppers):
    user = str(shoppers.shop.user_ids[1])
    items = list(shoppers.shop.item_ids)
    order = np.argsort(shoppers.fit(user, items))
    good = [items[i] for i in order[-10:]]
    bad = [items[i] for i in order[:10]]
    assert _clicks(shoppers, user, good, 2000).sum() > 3 * max(_clicks(shoppers, user, bad, 2000).sum(), 1)


def test_lower_positions_get_fewer_clicks(shoppers):
    user = str(shoppers.shop.user_ids[2])
    items = list(shoppers.shop.item_ids)
    fit = shoppers.fit(user, items)
    best = [items[int(np.argmax(fit))]]
    # The same item shown alone at each position in turn: only the position differs.
    by_position = [sum(r.event_type == "click" for visit in range(3000) for r in shoppers.respond(user, best, [position], shoppers.rng(user, visit))) for position in (0, 4, 9)]
    expected = click_probability(np.array([fit.max()] * 3), np.array([0, 4, 9]), shoppers.params) * 3000
    assert by_position[0] > by_position[1] > by_position[2]
    assert np.allclose(by_position, expected, rtol=0.2)


def test_carts_and_purchases_follow_clicks(shoppers):
    user = str(shoppers.shop.user_ids[3])
    items = list(shoppers.shop.item_ids)
    top = [items[i] for i in np.argsort(shoppers.fit(user, items))[-10:]]
    reactions = [r for visit in range(1000) for r in shoppers.respond(user, top, list(range(10)), shoppers.rng(user, visit))]
    kinds = [r.event_type for r in reactions]
    assert kinds.count("click") > kinds.count("add_to_cart") > kinds.count("purchase") > 0
    seen: set[tuple[str, int]] = set()
    for r in reactions:  # (within a visit a cart follows its click, a purchase its cart)
        if r.event_type == "click":
            seen.add((r.item, r.position))
        else:
            assert (r.item, r.position) in seen


def test_reactions_are_deterministic_per_seed_and_visit(shoppers):
    user = str(shoppers.shop.user_ids[4])
    shown = list(shoppers.shop.item_ids[:10])
    a = shoppers.respond(user, shown, list(range(10)), shoppers.rng(user, 7))
    again = Shoppers(shoppers.shop, seed=11, available_at=START_MS)
    assert again.respond(user, shown, list(range(10)), again.rng(user, 7)) == a
    assert all(isinstance(r, Reaction) for r in a)
    views = [shoppers.browse(user, shoppers.rng(user, v)) for v in range(30)]
    assert views == [again.browse(user, again.rng(user, v)) for v in range(30)]
    other = Shoppers(shoppers.shop, seed=12, available_at=START_MS)
    assert views != [other.browse(user, other.rng(user, v)) for v in range(30)]


def test_organic_browsing_follows_taste(shoppers):
    shop = shoppers.shop
    top_of = dict(zip(shop.item_ids, shop.sub_top[shop.item_sub]))
    index = {item: k for k, item in enumerate(shop.item_ids)}
    for u in range(5):
        user = str(shop.user_ids[u])
        viewed = [item for v in range(400) for item in shoppers.browse(user, shoppers.rng(user, v))]
        assert viewed and all(shoppers.browse_weights[index[i]] > 0 for i in viewed)
        share = np.bincount([top_of[i] for i in viewed], minlength=shop.user_taste.shape[1]) / len(viewed)
        # Views land where the taste is: more in the favourite top category than the shop's mix puts there.
        favourite = int(np.argmax(shop.user_taste[u]))
        assert share[favourite] > shop.top_popularity[favourite]


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="probability"):
        BehaviourParams(click_max=1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        BehaviourParams(taste_weight=0.9)
