"""Engine outputs -> Redis writes: shapes, TTLs, deletes for forgotten users, and a real write."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from state.keys import KeyKind
from state.store import RedisStore, ScoredItem, Write, decode_list, encode_list
from state.writes import Ttls, catalog_write, final_writes, keyable, neighbour_write, trending_write, user_writes, window_writes
from transforms.catalog import CatalogItem
from transforms.engine import FinalState, ReferenceEngine, WindowOutput
from transforms.config import ModelConfig
from transforms.events import batch_from_columns
from transforms.complements import goes_with
from transforms.reasons import because_you, reason
from transforms.scoring import UserLists

T = 1_700_000_000_200
TTLS = Ttls(user_s=100, item_s=200)


def nb(*pairs):
    return (np.array([p[0] for p in pairs], dtype=object), np.array([p[1] for p in pairs], dtype=np.float64))


def user_lists(cart=()):
    return UserLists(
        home=[ScoredItem("b", 1.25, because_you("view", "a")), ScoredItem("c", 0.5, reason("popular_now"))],
        cart=[ScoredItem(i, 0.75, goes_with("a")) for i in cart],
        interests=[("a", 2.0), ("d", 0.5)],
        categories={"books": 2.5},
        in_cart=["a"] if cart else [],
        purchased=["z"],
    )


def test_user_writes():
    writes = user_writes("u1", T, user_lists(), TTLS)
    assert [(w.kind, w.part, w.ttl_s) for w in writes] == [(KeyKind.USER_RECS, "u1", 100), (KeyKind.COMPLEMENTS, "u1", None), (KeyKind.PROFILE, "u1", 100)]
    assert writes[0].value == encode_list(T, user_lists().home, experiment="~", variant="~")
    assert writes[1].value is None  # an empty cart list deletes a stale one
    assert decode_list(writes[2].value) == (
        T,
        [ScoredItem("a", 2.0), ScoredItem("d", 0.5)],
        {"categories": {"books": 2.5}, "cart": [], "purchased": ["z"]},
    )
    with_cart = user_writes("u1", T, user_lists(cart=["x"]), TTLS)
    assert with_cart[1] == Write(KeyKind.COMPLEMENTS, "u1", encode_list(T, [ScoredItem("x", 0.75, goes_with("a"))], experiment="~", variant="~"), 100)
    assert decode_list(with_cart[2].value)[2]["cart"] == ["a"]


def test_lists_name_the_variant_that_computed_them():
    lists = dataclasses.replace(user_lists(cart=["x"]), home_from=("exp1", "treatment"), cart_from=("~", "~"))
    home, cart, _ = user_writes("u1", T, lists, TTLS)
    assert decode_list(home.value)[2] == {"experiment": "exp1", "variant": "treatment"}
    assert decode_list(cart.value)[2] == {"experiment": "~", "variant": "~"}


def test_forgotten_user_is_deleted():
    # The key older releases wrote the complements under goes too.
    assert user_writes("u1", T, None, TTLS) == [Write(kind, "u1", None) for kind in (KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE, KeyKind.LEGACY_CART, KeyKind.ADS)]


def test_zero_ttl_means_none():
    writes = user_writes("u1", T, user_lists(), Ttls(user_s=0, item_s=0))
    assert [w.ttl_s for w in writes] == [None, None, None]
    assert neighbour_write(KeyKind.ITEM_NEIGHBOURS, "i", T, nb(("j", 1.0)), 0).ttl_s is None


def test_neighbour_trending_and_catalog_writes():
    w = neighbour_write(KeyKind.CONTENT_NEIGHBOURS, "i1", T, nb(("i2", 0.5), ("i3", 0.25)), 200)
    assert (w.kind, w.part, w.ttl_s) == (KeyKind.CONTENT_NEIGHBOURS, "i1", 200)
    assert decode_list(w.value) == (T, [ScoredItem("i2", 0.5), ScoredItem("i3", 0.25)], {})
    g = trending_write(None, T, nb(("i1", 3.0)))
    assert (g.kind, g.part, g.ttl_s) == (KeyKind.TRENDING_GLOBAL, None, None)
    c = trending_write("books", T, nb(("i1", 3.0)))
    assert (c.kind, c.part, c.ttl_s) == (KeyKind.TRENDING_CATEGORY, "books", None)
    item = CatalogItem("i1", title="A", category="books/novels", price=3.5)
    assert catalog_write(item) == Write(KeyKind.ITEM, "i1", item.to_json())


def test_window_writes_order_and_content():
    out = WindowOutput(
        window_end_ms=T,
        neighbours={"i1": nb(("i2", 1.0))},
        content={"i3": nb(("i4", 0.5))},
        catalog=[CatalogItem("i5")],
        trending_global=nb(("i1", 2.0)),
        trending_by_category={"books": nb(("i1", 2.0))},
        users={"u1": user_lists(), "u2": None},
    )
    writes = window_writes(out, TTLS)
    assert [(w.kind, w.part) for w in writes] == [
        (KeyKind.ITEM, "i5"),
        (KeyKind.CONTENT_NEIGHBOURS, "i3"),
        (KeyKind.ITEM_NEIGHBOURS, "i1"),
        (KeyKind.TRENDING_GLOBAL, None),
        (KeyKind.TRENDING_CATEGORY, "books"),
        (KeyKind.USER_RECS, "u1"), (KeyKind.COMPLEMENTS, "u1"), (KeyKind.PROFILE, "u1"),
        (KeyKind.USER_RECS, "u2"), (KeyKind.COMPLEMENTS, "u2"), (KeyKind.PROFILE, "u2"), (KeyKind.LEGACY_CART, "u2"), (KeyKind.ADS, "u2"),
    ]
    assert [w.value is None for w in writes[-5:]] == [True] * 5  # u2 was forgotten
    assert all(decode_list(w.value)[0] == T for w in writes[1:6])
    # A window without trending output writes no trending key.
    assert all(w.kind is not KeyKind.TRENDING_GLOBAL for w in window_writes(WindowOutput(window_end_ms=T), TTLS))


def test_final_writes_use_each_keys_own_window():
    final = FinalState()
    final.merge(WindowOutput(window_end_ms=100, neighbours={"i1": nb(("i2", 1.0))}, trending_global=nb(("i1", 1.0)), users={"u1": user_lists(), "u2": user_lists()}))
    final.merge(WindowOutput(window_end_ms=200, neighbours={"i2": nb(("i1", 1.0))}, users={"u2": None}))
    writes = {(w.kind, w.part): w for w in final_writes(final, TTLS)}
    assert decode_list(writes[(KeyKind.ITEM_NEIGHBOURS, "i1")].value)[0] == 100
    assert decode_list(writes[(KeyKind.ITEM_NEIGHBOURS, "i2")].value)[0] == 200
    assert decode_list(writes[(KeyKind.TRENDING_GLOBAL, None)].value)[0] == 100
    assert decode_list(writes[(KeyKind.USER_RECS, "u1")].value)[0] == 100
    assert all(writes[(k, "u2")].value is None for k in (KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE))


def test_window_and_final_writes_reach_redis(redis_url, redis_client):
    t0 = 1_700_000_000_000
    catalog = [CatalogItem("A", title="alpha", category="books", ts=t0 - 1000), CatalogItem("B", title="beta", category="books", ts=t0 - 1000)]
    events = batch_from_columns(["u1", "u1", "u2", "u2", "u1"], ["A", "B", "A", "B", ""], ["view", "add_to_cart", "view", "view", "forget"], [t0 + 10, t0 + 20, t0 + 30, t0 + 40, t0 + 150])
    config = ModelConfig(window_ms=100, model_refresh_ms=100)
    store = RedisStore.from_url(redis_url)
    final = FinalState()

    def sink(out):
        final.merge(out)
        store.write(window_writes(out, TTLS))

    engine = ReferenceEngine(config, catalog, on_window=sink)
    engine.process(events)
    engine.finish()
    live = {k: redis_client.get(k) for k in redis_client.keys()}
    # u1 was scored in window 0, then forgotten in window 1: every per-user key is gone.
    assert not [k for k in live if b":u1" in k]
    assert decode_list(live[b"flowrec:v1:rec:u2"])[1][0].item == "B"
    assert 0 < redis_client.ttl("flowrec:v1:rec:u2") <= 100 and 0 < redis_client.ttl("flowrec:v1:sim:A") <= 200
    assert orjson.loads(live[b"flowrec:v1:item:A"])["category"] == "books"
    assert {b"flowrec:v1:trend:global", b"flowrec:v1:trend:cat:books", b"flowrec:v1:content:A"} <= set(live)
    # Writing the final state again over the live keys changes nothing (idempotent values).
    store.write(final_writes(final, TTLS))
    assert {k: redis_client.get(k) for k in redis_client.keys()} == live
    store.client.close()


def test_trending_of_any_valid_catalog_category_can_be_written(redis_url):
    out = WindowOutput(window_end_ms=T, trending_global=nb(("i1", 1.0)), trending_by_category={"Children's": nb(("i1", 1.0))})
    store = RedisStore.from_url(redis_url)
    try:
        assert store.write(window_writes(out, TTLS)) == 2
    finally:
        store.client.close()


def test_writes_whose_key_cannot_be_built_become_dead_letters(redis_url, redis_client):
    """The job's sink keeps going on a key restored from old state: the write is dead-lettered, the rest land."""
    good = Write(KeyKind.TRENDING_CATEGORY, "toys", b"{}")
    bad = Write(KeyKind.TRENDING_CATEGORY, "bad*cat", b"{}")
    ok, rejected = keyable([bad, good], "flowrec")
    assert ok == [good]
    assert [(r.reason, orjson.loads(r.raw)) for r in rejected] == [("invalid_key", {"key": "trend:cat", "part": "bad*cat"})]
    store = RedisStore.from_url(redis_url)
    store.write(ok)
    store.dead_letter([r.to_json() for r in rejected])
    assert redis_client.keys("*trend*") == [b"flowrec:v1:trend:cat:toys"]
    assert redis_client.xlen("flowrec:v1:deadletter") == 1


def test_ads_list_is_written_only_while_the_shop_has_sponsored_items():
    from dataclasses import replace

    from state.writes import encode_ads
    from transforms.ads import AdPick

    assert KeyKind.ADS not in [w.kind for w in user_writes("u1", T, user_lists(), TTLS)]  # ads None: no sponsored items
    picks = [AdPick("s1", 1.5, 0.75, 2.0), AdPick("s2", 0.2, 0.1, 2.0)]
    lists = replace(user_lists(), ads=picks, home_from=("exp1", "b"))
    [ads] = [w for w in user_writes("u1", T, lists, TTLS) if w.kind is KeyKind.ADS]
    assert (ads.part, ads.ttl_s) == ("u1", 100)
    ts, items, extra = decode_list(ads.value)
    assert ts == T and [(i.item, i.score, i.reason.code) for i in items] == [("s1", 1.5, "sponsored"), ("s2", 0.2, "sponsored")]
    assert extra == {"relevance": [0.75, 0.1], "experiment": "exp1", "variant": "b"}  # labelled like the home list it was scored with
    assert ads.value == encode_ads(T, picks, "exp1", "b")
    # A user with sponsored items in the shop but none relevant gets an empty list (not a cold start).
    [empty] = [w for w in user_writes("u1", T, replace(user_lists(), ads=[]), TTLS) if w.kind is KeyKind.ADS]
    assert decode_list(empty.value)[1] == []
