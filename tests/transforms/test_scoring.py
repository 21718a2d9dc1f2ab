"""The hybrid scorer on a hand-built model: blended scores, explanations, filters and cart complements.

The model (half-life huge, now = landmark = 0, so decayed interests equal the stored values):

    user interests: A 2.0 (viewed), B 1.0 (clicked)
    facts (top category, in stock): A, C, E, G books; B, D, F toys; H garden; all in stock
    CF neighbours:      A -> C 0.5, D 0.25        B -> C 0.5, E 1.0
    content neighbours: A -> F 0.8                B -> D 0.6
    trending by category: books -> G 4, C 2       toys -> D 10
    trending global: H 8, G 4

Components (each divided by its maximum over the candidates):
    cf   = sum v_i sim(i, j):  C = 2*0.5 + 1*0.5 = 1.5, D = 2*0.25 = 0.5, E = 1*1 = 1   -> C 1, D 1/3, E 2/3
    ct   = sum v_i csim(i, j): F = 2*0.8 = 1.6, D = 1*0.6 = 0.6                         -> F 1, D 0.375
    cat  : category interests books 2 (A), toys 1 (B); scale = interest / max = 1 and 0.5;
           books: G = 1 * 4/4 = 1, C = 1 * 2/4 = 0.5; toys: D = 0.5 * 10/10 = 0.5
    pop  = trend / max: H 1, G 0.5
Blend with w_cf 1, w_content 0.3, w_category 0.2, w_popularity 0.05, w_recent 0:
    C = 1 + 0.2*0.5                    = 1.1        because you viewed A   (cf part 1.0 is the largest)
    E = 2/3                            = 0.666667   because you clicked B
    D = 1/3 + 0.3*0.375 + 0.2*0.5      = 0.545833   because you viewed A   (parts: cf 0.333, content 0.1125, category 0.1)
    F = 0.3*1                          = 0.3        similar to A
    G = 0.2*1 + 0.05*0.5               = 0.225      trending in books
    H = 0.05*1                         = 0.05       popular now
"""

from __future__ import annotations

import numpy as np
import pytest

from transforms.config import ModelConfig
from transforms.events import ADD_TO_CART, CLICK, FAVORITE, PURCHASE, RATING, VIEW
from transforms.profile import UserProfile
from transforms.reasons import reason
from transforms.scoring import ScoredItem, ScoringModel, category_interests, score_user

CONFIG = ModelConfig(half_life_ms=10**12, weight_cf=1.0, weight_content=0.3, weight_category=0.2, weight_popularity=0.05, weight_recent=0.0)


def nb(*pairs):
    return (np.array([p[0] for p in pairs], dtype=object), np.array([p[1] for p in pairs], dtype=np.float64))


def make_model(**changes) -> ScoringModel:
    facts = {i: ("books", True) for i in "ACEG"} | {i: ("toys", True) for i in "BDF"} | {"H": ("garden", True)}
    values = dict(
        neighbours={"A": nb(("C", 0.5), ("D", 0.25)), "B": nb(("C", 0.5), ("E", 1.0))},
        content={"A": nb(("F", 0.8)), "B": nb(("D", 0.6))},
        trending_global=nb(("H", 8.0), ("G", 4.0)),
        trending_by_category={"books": nb(("G", 4.0), ("C", 2.0)), "toys": nb(("D", 10.0))},
        facts=facts,
    )
    values.update(changes)
    return ScoringModel(**values)


def make_profile(**changes) -> UserProfile:
    values = dict(landmark_ms=0, last_ts=0, interests={"A": 2.0, "B": 1.0}, last_action={"A": VIEW, "B": CLICK})
    values.update(changes)
    return UserProfile(**values)


def rounded(items):
    return [(i.item, round(i.score, 9), i.reason.text if i.reason else "") for i in items]


BASE_HOME = [
    ("C", 1.1, "because you viewed A"),
    ("E", round(2 / 3, 9), "because you clicked B"),
    ("D", round(1 / 3 + 0.3 * 0.375 + 0.2 * 0.5, 9), "because you viewed A"),
    ("F", 0.3, "similar to A"),
    ("G", 0.225, "trending in books"),
    ("H", 0.05, "popular now"),
]


def test_blended_scores_and_explanations():
    lists = score_user(make_profile(), 0, make_model(), CONFIG)
    assert rounded(lists.home) == BASE_HOME
    assert lists.interests == [("A", 2.0), ("B", 1.0)]
    assert lists.categories == {"books": 2.0, "toys": 1.0}
    assert lists.cart == [] and lists.in_cart == [] and lists.purchased == []


def test_decay_to_now_scales_the_summary_not_the_ranking():
    config = CONFIG.replace(half_life_ms=1000)
    lists = score_user(make_profile(), 1000, make_model(), config)
    assert lists.interests == [("A", 1.0), ("B", 0.5)]  # one half-life later
    assert lists.categories == {"books": 1.0, "toys": 0.5}
    assert rounded(lists.home) == BASE_HOME  # every component is normalised per list


def test_top_n():
    assert [i.item for i in score_user(make_profile(), 0, make_model(), CONFIG, n=2).home] == ["C", "E"]
    assert [i.item for i in score_user(make_profile(), 0, make_model(), CONFIG.replace(top_n=3)).home] == ["C", "E", "D"]


def test_recent_component():
    lists = score_user(make_profile(), 0, make_model(), CONFIG.replace(weight_recent=0.5))
    # recent = interests / max: A 1, B 0.5 -> parts 0.5 and 0.25
    got = {i.item: (round(i.score, 9), i.reason.text) for i in lists.home}
    assert got["A"] == (0.5, "you viewed this recently")
    assert got["B"] == (0.25, "you clicked this recently")
    # exclude_seen removes the user's own items again.
    seen = score_user(make_profile(), 0, make_model(), CONFIG.replace(weight_recent=0.5, exclude_seen=True))
    assert rounded(seen.home) == BASE_HOME


@pytest.mark.parametrize(
    "code, verb", [(VIEW, "viewed"), (CLICK, "clicked"), (ADD_TO_CART, "added to cart"), (FAVORITE, "saved"), (PURCHASE, "bought"), (RATING, "rated")]
)
def test_explanation_verbs(code, verb):
    lists = score_user(make_profile(last_action={"A": code, "B": CLICK}), 0, make_model(), CONFIG)
    assert lists.home[0].reason.text == f"because you {verb} A" and lists.home[0].reason.item == "A"


def test_cold_start_gets_trending_now():
    for profile in (None, make_profile(interests={}, last_action={})):
        lists = score_user(profile, 0, make_model(), CONFIG)
        assert rounded(lists.home) == [("H", 1.0, "trending now"), ("G", 0.5, "trending now")]
        assert lists.interests == [] and lists.categories == {}
    # Only negative interest: still a cold start, and the disliked item is not offered.
    lists = score_user(make_profile(interests={"H": -1.0}, last_action={}), 0, make_model(), CONFIG)
    assert rounded(lists.home) == [("G", 0.5, "trending now")]


def test_purchased_items_are_excluded_unless_repeatable():
    profile = make_profile(purchased={"C": 0, "F": 0})
    lists = score_user(profile, 0, make_model(), CONFIG)
    assert [i.item for i in lists.home] == ["E", "D", "G", "H"]
    assert lists.purchased == ["C", "F"]
    repeat = score_user(profile, 0, make_model(), CONFIG.replace(repeat_purchase_categories=("books",)))
    assert [i.item for i in repeat.home] == ["C", "E", "D", "G", "H"]  # C (books) may be bought again; F (toys) not


def test_negative_interest_excludes_the_item():
    lists = score_user(make_profile(interests={"A": 2.0, "B": 1.0, "E": -0.5}), 0, make_model(), CONFIG)
    assert [i.item for i in lists.home] == ["C", "D", "F", "G", "H"]


def test_exclude_argument():
    lists = score_user(make_profile(), 0, make_model(), CONFIG, exclude={"C", "H"})
    assert [i.item for i in lists.home] == ["E", "D", "F", "G"]
    # C being excluded does not change the normalisation of the others.
    assert rounded(lists.home)[0] == BASE_HOME[1]


def test_out_of_stock():
    model = make_model()
    model.facts["C"] = ("books", False)
    assert "C" not in [i.item for i in score_user(make_profile(), 0, model, CONFIG).home]
    kept = score_user(make_profile(), 0, model, CONFIG.replace(exclude_out_of_stock=False))
    assert rounded(kept.home) == BASE_HOME


def test_allow_and_deny_categories():
    allowed = score_user(make_profile(), 0, make_model(), CONFIG.replace(allow_categories=("toys",)))
    assert [i.item for i in allowed.home] == ["D", "F"]
    denied = score_user(make_profile(), 0, make_model(), CONFIG.replace(deny_categories=("books",)))
    assert [i.item for i in denied.home] == ["D", "F", "H"]
    # An item without catalog facts has no category: an allow list drops it, a deny list keeps it.
    model = make_model()
    del model.facts["H"]
    assert "H" not in [i.item for i in score_user(make_profile(), 0, model, CONFIG.replace(allow_categories=("toys", "books"))).home]
    assert "H" in [i.item for i in score_user(make_profile(), 0, model, CONFIG.replace(deny_categories=("books",))).home]


def test_max_per_category():
    lists = score_user(make_profile(), 0, make_model(), CONFIG.replace(max_per_category=1))
    assert [i.item for i in lists.home] == ["C", "D", "H"]  # best of books, toys, garden
    two = score_user(make_profile(), 0, make_model(), CONFIG.replace(max_per_category=2, top_n=3))
    assert [i.item for i in two.home] == ["C", "E", "D"]


def test_cart_complements():
    lists = score_user(make_profile(cart={"A": 5}), 0, make_model(), CONFIG)
    # Each list divided by its maximum: neighbours of A with weight_cf 1 (C 0.5/0.5, D 0.25/0.5),
    # content with weight_content 0.3 (F 0.8/0.8 * 0.3).
    assert rounded(lists.cart) == [("C", 1.0, "goes with A in your cart"), ("D", 0.5, "goes with A in your cart"), ("F", 0.3, "goes with A in your cart")]
    assert lists.cart[0].reason.fields() == {"code": "goes_with", "item": "A"}
    assert lists.in_cart == ["A"]
    both = score_user(make_profile(cart={"A": 5, "B": 6}), 0, make_model(), CONFIG)
    # C = 1.0 + 0.5 (A's term is larger), E = 1.0, D = 0.5 + 0.3 * 0.6/0.6, F = 0.3.
    assert rounded(both.cart) == [("C", 1.5, "goes with A in your cart"), ("E", 1.0, "goes with B in your cart"), ("D", 0.8, "goes with A in your cart"), ("F", 0.3, "goes with A in your cart")]
    # Cart complements obey the same exclusions (purchased C) and never list cart items themselves.
    model = make_model(neighbours={"A": nb(("B", 0.9), ("C", 0.5)), "B": nb(("A", 0.9))})
    excluded = score_user(make_profile(cart={"A": 5, "B": 6}, purchased={"C": 1}), 0, model, CONFIG)
    assert [(i.item, round(i.score, 9)) for i in excluded.cart] == [("D", 0.3), ("F", 0.3)]


def test_ties_are_broken_by_id():
    model = make_model(neighbours={"A": nb(("Z", 0.5), ("Y", 0.5), ("X", 0.5))}, content={}, trending_global=nb(), trending_by_category={})
    lists = score_user(make_profile(), 0, model, CONFIG)
    assert [i.item for i in lists.home] == ["X", "Y", "Z"]
    assert all(i.score == 1.0 for i in lists.home)


def test_category_interests():
    model = make_model()
    assert category_interests([("A", 1.0), ("C", 2.0), ("B", 0.5), ("unknown", 9.0)], model) == {"books": 3.0, "toys": 0.5}


def test_scored_item_to_dict():
    assert ScoredItem("a", 1.5, reason("similar_to", item="b")).to_dict() == {"item": "a", "score": 1.5, "reason": "similar to b", "why": {"code": "similar_to", "item": "b"}}
    assert ScoredItem("a", 1.5).to_dict() == {"item": "a", "score": 1.5}


def test_exclude_purchased_false_keeps_purchases():
    lists = score_user(make_profile(purchased={"C": 0}), 0, make_model(), CONFIG.replace(exclude_purchased=False))
    assert rounded(lists.home) == BASE_HOME


def test_cart_complements_with_zero_content_weight():
    lists = score_user(make_profile(cart={"A": 5}), 0, make_model(), CONFIG.replace(weight_content=0.0))
    assert rounded(lists.cart) == [("C", 1.0, "goes with A in your cart"), ("D", 0.5, "goes with A in your cart")]


def test_filters_reach_past_the_first_cut():
    # A's 60 neighbours score 60, 59, ... 1; the 45 best are out of stock or in a denied
    # category, so the list (n=5, with a cap of 2 per category) is cut well past its first
    # partition: the scorer must widen the cut until the filtered, capped list is complete.
    items = [f"n{k:02d}" for k in range(60)]
    facts = {"A": ("books", True)}
    for k, item in enumerate(items):
        category = ("denied", "toys", "games", "garden")[k % 4]
        facts[item] = (category, k >= 30 or category == "denied")
    model = make_model(neighbours={"A": nb(*[(item, float(60 - k)) for k, item in enumerate(items)])}, content={}, trending_global=nb(), trending_by_category={}, facts=facts)
    config = CONFIG.replace(deny_categories=("denied",), max_per_category=2, weight_content=0.0, weight_category=0.0, weight_popularity=0.0)
    lists = score_user(make_profile(interests={"A": 1.0}, last_action={"A": VIEW}), 0, model, config, n=5)
    # Allowed: in stock (k >= 30) and not denied (k % 4 != 0); then at most two per category, best first.
    allowed = [k for k in range(60) if k >= 30 and k % 4 != 0]
    capped: list[int] = []
    per_category: dict[str, int] = {}
    for k in allowed:
        category = facts[items[k]][0]
        if per_category.get(category, 0) < 2:
            per_category[category] = per_category.get(category, 0) + 1
            capped.append(k)
    assert [i.item for i in lists.home] == [items[k] for k in capped[:5]]
    assert [round(i.score, 9) for i in lists.home] == [round((60 - k) / 60, 9) for k in capped[:5]]
    assert all(i.reason.text == "because you viewed A" for i in lists.home)


@pytest.mark.parametrize("seed", range(6))
def test_batched_cart_lists_equal_the_one_cart_formula(seed):
    """The scorer's cart lists, scored as one batch, equal cart_complements (the API's formula) per user:
    random lists with ties, zero and negative similarities, missing lists, overlapping carts."""
    from transforms.complements import cart_complements, ranked
    from transforms.scoring import score_users

    rng = np.random.default_rng(seed)
    items = [f"i{k:02d}" for k in range(40)]
    facts = {i: (("books", "toys")[k % 2], True) for k, i in enumerate(items)}

    def table():
        out = {}
        for item in items:
            if rng.random() < 0.2:
                continue  # no list
            partners = rng.choice(items, size=int(rng.integers(0, 8)), replace=False)
            sims = np.round(rng.uniform(-0.2, 1.0, len(partners)), 1)  # rounded: ties, zeros, negatives
            order = np.argsort(-sims, kind="stable")
            out[item] = (np.array(partners[order], dtype=object), sims[order])
        return out

    model = make_model(neighbours=table(), content=table(), trending_global=nb(), trending_by_category={}, facts=facts)
    config = CONFIG.replace(weight_content=float(rng.choice([0.0, 0.3, 1.0])), top_n=40, exclude_seen=False)
    profiles = []
    for _ in range(30):
        cart = {str(i): 1 for i in rng.choice(items, size=int(rng.integers(0, 5)), replace=False)}
        profiles.append(make_profile(cart=cart, interests={"A": 1.0}, last_action={"A": VIEW}))
    batch = score_users(profiles, 0, model, config)
    for profile, lists in zip(profiles, batch):
        scores, sources = cart_complements(list(profile.cart), model.neighbours, model.content, config.weight_cf, config.weight_content)
        expected = [(j, round(scores[j], 9), f"goes with {sources[j]} in your cart") for j in ranked(scores)]
        assert rounded(lists.cart) == expected


def test_item_codes_pool_reads_each_items_current_list_across_refreshes_and_compactions():
    """The pooled lists equal the table's lists after every change: new, replaced, emptied and removed
    lists, over enough churn to compact the pool many times (about 30k entries written against a
    live size near 1k: a compaction whenever the pool passes twice the live entries plus 4,096)."""
    from transforms.scoring import ItemCodes

    rng = np.random.default_rng(3)
    codes = ItemCodes()
    names = [f"item{k}" for k in range(60)]
    table: dict = {}
    for step in range(400):
        for name in rng.choice(names, size=int(rng.integers(1, 8)), replace=False).tolist():
            roll = rng.random()
            if roll < 0.15:
                table.pop(name, None)
            elif roll < 0.25:
                table[name] = (np.empty(0, dtype=object), np.empty(0))
            else:
                size = int(rng.integers(1, 40))
                table[name] = (np.array(rng.choice(names, size=size).tolist(), dtype=object), rng.random(size).astype(np.float32))
        asked = rng.choice(names, size=int(rng.integers(1, 30))).tolist()
        items = codes.of(asked)
        pool_codes, pool_values, start, length = codes.lists(table, 0, items)
        ids = codes.vocab.array()
        for name, s, n in zip(asked, start.tolist(), length.tolist()):
            want_ids, want_values = table.get(name, (np.empty(0, dtype=object), np.empty(0)))
            assert ids[pool_codes[s : s + n]].tolist() == list(want_ids)
            assert pool_values[s : s + n].tolist() == np.asarray(want_values, dtype=np.float64).tolist()


def test_item_codes_keep_no_replaced_neighbour_list_alive():
    """A list the table replaced is freed once nothing else holds it: the pool keeps codes, not the list
    objects it read (a shop's lists are refreshed all day, and a cache of them grew with the catalog
    times the refreshes).  Trending lists are the ones cached per list object, and at most
    MAX_CACHED_LISTS of them."""
    import gc
    import weakref

    from transforms.scoring import MAX_CACHED_LISTS, ItemCodes

    codes = ItemCodes()
    names = [f"item{k}" for k in range(50)]
    items = codes.of(names)
    replaced = []
    for refresh in range(20):
        table = {name: (np.array(names[k + 1 :] + names[: k + 1], dtype=object), np.linspace(1.0, 0.1, len(names))) for k, name in enumerate(names)}
        codes.lists(table, 0, items)
        replaced += [weakref.ref(ids) for ids, _ in table.values()]
        del table
    gc.collect()
    alive = sum(ref() is not None for ref in replaced)
    assert alive == len(names)  # the last refresh's lists, held by the pool's current entries; no earlier one

    trending = [np.array(names, dtype=object) for _ in range(MAX_CACHED_LISTS + 10)]
    refs = [weakref.ref(ids) for ids in trending]
    for ids in trending:
        assert codes.of_list(ids).tolist() == items.tolist()
    del trending, ids
    gc.collect()
    assert sum(ref() is not None for ref in refs) <= MAX_CACHED_LISTS
