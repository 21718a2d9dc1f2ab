"""Read endpoints against hand-written lists in a real Redis, over real HTTP.

Expected responses are worked out by hand from the lists written here and the
documented formulas (api.ranking); weights come from the default ModelConfig.
"""

from __future__ import annotations

import math

import httpx
import numpy as np
import orjson
import pytest

from api.browse import BrowseCatalog
from flowrec.config import Settings
from flowrec.localredis import free_port
from state.keys import KeyKind
from state.store import Write
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.recid import decode_rec_id
from transforms.profile import UserProfile
from transforms.scoring import ScoringModel, score_user
from state.writes import Ttls, neighbour_write, user_writes

from .conftest import API_KEY, NOW_MS, assert_problem, assert_unavailable, put_list

CATEGORIES = {
    "i1": "fashion/shoes",
    "i2": "home/kitchen",
    "i3": "fashion/bags",
    "f1": "fashion/shoes",
    "f2": "fashion",
    "t1": "toys",
    "t2": "home",
    "n1": "home/garden",
    "n3": "fashion/hats",
    "new1": "fashion/shoes",
}


@pytest.fixture
def shop(store):
    """A small shop: u1 has a list, a profile and a cart list; u2 has only a profile with a cart; u3 an empty cart."""
    put_list(store, KeyKind.USER_RECS, "u1", 1000, [("i1", 0.9, "because you viewed i9"), ("i2", 0.6, "similar to i8"), ("i3", 0.3, "trending in fashion")])
    put_list(store, KeyKind.TRENDING_GLOBAL, None, 2000, [("t1", 50.0), ("i1", 40.0), ("t2", 30.0)])
    put_list(store, KeyKind.TRENDING_CATEGORY, "fashion", 3000, [("f1", 9.0), ("f2", 8.0)])
    put_list(store, KeyKind.PROFILE, "u1", 1500, [("i1", 5.0), ("i2", 2.0)], categories={"fashion": 4.0, "home": 1.0}, cart=["i1"], purchased=["n2"])
    put_list(store, KeyKind.COMPLEMENTS, "u1", 1600, [("c1", 0.8, "goes with i1"), ("i1", 0.7, "in the cart already"), ("c2", 0.5, "goes with i1")])
    put_list(store, KeyKind.PROFILE, "u2", 1700, [("a", 1.0)], categories={}, cart=["a", "b"], purchased=["z"])
    put_list(store, KeyKind.ITEM_NEIGHBOURS, "a", 10, [("x", 4.0), ("y", 2.0), ("b", 1.0)])
    put_list(store, KeyKind.ITEM_NEIGHBOURS, "b", 20, [("y", 3.0), ("z", 1.5)])
    put_list(store, KeyKind.PROFILE, "u3", 1800, [("i2", 1.0)], categories={"home": 1.0}, cart=[], purchased=[])
    put_list(store, KeyKind.ITEM_NEIGHBOURS, "i1", 100, [("n1", 2.0), ("n2", 1.0)])
    put_list(store, KeyKind.CONTENT_NEIGHBOURS, "i1", 200, [("n2", 0.5), ("n3", 0.25)])
    store.write([Write(KeyKind.ITEM, item, CatalogItem(item, title=f"Item {item}", category=category).to_json()) for item, category in CATEGORIES.items()])


def nb(*pairs):
    return (np.array([p[0] for p in pairs], dtype=object), np.array([p[1] for p in pairs], dtype=np.float64))


def recs(api: httpx.Client, user: str, **params) -> dict:
    response = api.get(f"/v1/users/{user}/recommendations", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def minted(body: dict, user: str) -> dict:
    """``body`` without its rec_id, after checking the rec_id was issued to ``user`` (tests/api/test_recids.py checks its parts)."""
    body = dict(body)
    decode_rec_id(body.pop("rec_id"), user)
    return body


def pairs(body: dict) -> list[tuple[str, float, str | None]]:
    return [(i["item"], i["score"], i.get("reason")) for i in body["items"]]


# -- context=home -----------------------------------------------------------------------


def test_home_list_is_served_as_stored(api, shop):
    assert minted(recs(api, "u1", n=2), "u1") == {
        "user_id": "u1",
        "context": "home",
        "ts": 1000,
        "cold_start": False,
        "items": [{"item": "i1", "score": 0.9, "reason": "because you viewed i9"}, {"item": "i2", "score": 0.6, "reason": "similar to i8"}],
    }


def test_short_home_list_is_topped_up_with_trending(api, shop):
    body = recs(api, "u1")  # n defaults to 10; the list has 3 items
    assert pairs(body) == [
        ("i1", 0.9, "because you viewed i9"),
        ("i2", 0.6, "similar to i8"),
        ("i3", 0.3, "trending in fashion"),
        ("t1", 50.0, "trending now"),  # i1 is trending too but already listed
        ("t2", 30.0, "trending now"),
    ]
    assert body["ts"] == 1000 and body["cold_start"] is False


def test_shortcut_and_full_route_give_the_same_answer(api, shop):
    # `?n=2` takes the hot-path shortcut; an empty exclude= sends the same request through FastAPI's route.
    for n in (1, 2, 3, 10):
        fast = api.get("/v1/users/u1/recommendations", params={"n": n})
        full = api.get("/v1/users/u1/recommendations", params={"n": n, "exclude": "", "context": "home"})
        assert fast.status_code == full.status_code == 200
        assert fast.json()["rec_id"] != full.json()["rec_id"]
        assert minted(fast.json(), "u1") == minted(full.json(), "u1")
        assert fast.headers["content-type"] == full.headers["content-type"]
    cold_fast = api.get("/v1/users/nobody/recommendations")
    cold_full = api.get("/v1/users/nobody/recommendations", params={"exclude": ""})
    assert minted(cold_fast.json(), "nobody") == minted(cold_full.json(), "nobody")


def test_exclude_drops_items_from_the_list_and_the_top_up(api, shop):
    assert [i["item"] for i in recs(api, "u1", exclude="i2,t1")["items"]] == ["i1", "i3", "t2"]


def test_cold_start_user_gets_global_trending_with_reason(api, shop):
    body = recs(api, "nobody", n=5)
    assert body["cold_start"] is True
    assert body["ts"] == 2000
    assert pairs(body) == [("t1", 50.0, "trending now (no history yet)"), ("i1", 40.0, "trending now (no history yet)"), ("t2", 30.0, "trending now (no history yet)")]


def test_cold_start_user_gets_category_trending_with_reason(api, shop):
    body = recs(api, "nobody", category="fashion")
    assert body["cold_start"] is True and body["ts"] == 3000
    assert pairs(body) == [("f1", 9.0, "trending in fashion (no history yet)"), ("f2", 8.0, "trending in fashion (no history yet)")]


def test_category_filter_keeps_items_in_the_category_and_below(api, shop):
    body = recs(api, "u1", category="fashion")
    assert pairs(body) == [
        ("i1", 0.9, "because you viewed i9"),  # fashion/shoes
        ("i3", 0.3, "trending in fashion"),  # fashion/bags; i2 is home/kitchen
        ("f1", 9.0, "trending in fashion"),
        ("f2", 8.0, "trending in fashion"),
    ]
    # A sub-category narrows both the list and the trending top-up (f2 is plain "fashion").
    assert [i["item"] for i in recs(api, "u1", category="fashion/shoes")["items"]] == ["i1", "f1"]


# -- context=cart -----------------------------------------------------------------------


def test_cart_context_serves_the_precomputed_cart_list(api, shop):
    body = recs(api, "u1", context="cart", n=4)
    # i1 is in the cart, so it is dropped from both the cart list and the top-up.
    assert pairs(body) == [("c1", 0.8, "goes with i1"), ("c2", 0.5, "goes with i1"), ("t1", 50.0, "trending now"), ("t2", 30.0, "trending now")]
    assert body["ts"] == 1600 and body["cold_start"] is False


def test_cart_context_computes_complements_when_the_job_has_no_cart_list(api, shop):
    # u2's cart is [a, b]; max-normalised neighbours: a -> x 1.0, y 0.5, (b 0.25: in the cart);
    # b -> y 1.0, z 0.5 (z is purchased).  Totals: y 1.5 (mostly from b), x 1.0 (from a).
    body = recs(api, "u2", context="cart", n=3)
    assert pairs(body) == [("y", 1.5, "goes with b in your cart"), ("x", 1.0, "goes with a in your cart"), ("t1", 50.0, "trending now")]
    assert body["ts"] == 1700


def test_cart_complements_the_api_computes_equal_the_jobs_list(api, store):
    """One formula (transforms.complements): before the job has scored a cart, the API serves what the
    job's scorer will write for it, collaborative and content neighbours included, reasons and all."""
    neighbours = {"a": nb(("x", 4.0), ("y", 2.0), ("b", 1.0)), "b": nb(("y", 3.0), ("z", 1.5))}
    content = {"a": nb(("z", 0.9), ("w", 0.3)), "b": nb(("x", 0.6), ("v", 0.2))}
    profile = UserProfile(landmark_ms=0, last_ts=0, interests={"a": 4.0, "b": 2.0}, last_action={"a": 2, "b": 0}, cart={"a": 1, "b": 2})
    model = ScoringModel(neighbours=neighbours, content=content, facts={})
    lists = score_user(profile, 1000, model, ModelConfig())
    assert len(lists.cart) == 5 and {i.reason.item for i in lists.cart} == {"a", "b"}
    writes = [neighbour_write(KeyKind.ITEM_NEIGHBOURS, i, 1000, nbs) for i, nbs in neighbours.items()]
    writes += [neighbour_write(KeyKind.CONTENT_NEIGHBOURS, i, 1000, nbs) for i, nbs in content.items()]
    writes += [w for w in user_writes("u7", 1000, lists, Ttls()) if w.kind is KeyKind.PROFILE]  # no complements list yet
    store.write(writes)

    body = recs(api, "u7", context="cart", n=10)

    assert body["items"] == [i.to_dict() for i in lists.cart]
    assert body["items"][0]["why"]["code"] == "goes_with"


def test_cart_context_with_an_empty_cart_says_so(api, shop):
    body = recs(api, "u3", context="cart", n=2)
    assert pairs(body) == [("t1", 50.0, "trending now (your cart is empty)"), ("i1", 40.0, "trending now (your cart is empty)")]
    assert body["cold_start"] is False
    cold = recs(api, "nobody", context="cart", n=1)
    assert cold["cold_start"] is True and pairs(cold) == [("t1", 50.0, "trending now (no history yet)")]


def test_cart_context_with_a_category(api, store, shop):
    store.write([Write(KeyKind.ITEM, "c2", CatalogItem("c2", category="fashion/shoes").to_json())])
    # c1 has no catalog entry, so only c2 is known to be in fashion; the top-up is fashion's trending.
    assert pairs(recs(api, "u1", context="cart", category="fashion")) == [("c2", 0.5, "goes with i1"), ("f1", 9.0, "trending in fashion"), ("f2", 8.0, "trending in fashion")]
    # A sub-category narrows the trending top-up as well (f2 is plain "fashion").
    assert [i["item"] for i in recs(api, "u1", context="cart", category="fashion/shoes")["items"]] == ["c2", "f1"]


# -- context=item -----------------------------------------------------------------------


def test_item_context_blends_neighbours_for_a_cold_user(api, shop):
    w = ModelConfig()
    body = recs(api, "nobody", context="item", item_id="i1")
    # cf i1: n1 2.0 -> 1.0, n2 1.0 -> 0.5; content i1: n2 0.5 -> 1.0, n3 0.25 -> 0.5.
    expected = [
        ("n1", w.weight_cf * 1.0, "often together with i1"),
        ("n2", w.weight_cf * 0.5 + w.weight_content * 1.0, "similar to and often together with i1"),
        ("n3", w.weight_content * 0.5, "similar to i1"),
    ]
    expected.sort(key=lambda e: -e[1])
    assert [(i, pytest.approx(s), r) for i, s, r in pairs(body)] == expected
    assert body["ts"] == 200 and body["cold_start"] is True


def test_item_context_lifts_items_in_the_users_favourite_categories(api, shop):
    w = ModelConfig()
    body = recs(api, "u1", context="item", item_id="i1")
    # u1 likes fashion 4.0 (-> 1.0) and home 1.0 (-> 0.25); n2 is purchased, so dropped.
    # n1 (home/garden): 1.0 * (1 + 0.25); n3 (fashion/hats): 0.5 * content * (1 + 1.0).
    n1 = w.weight_cf * 1.0 * 1.25
    n3 = w.weight_content * 0.5 * 2.0
    assert pairs(body) == [
        ("n1", pytest.approx(n1), "often together with i1, matches your interest in home"),
        ("n3", pytest.approx(n3), "similar to i1, matches your interest in fashion"),
    ]
    assert body["cold_start"] is False


def test_item_context_for_a_new_item_falls_back_to_its_category(api, shop):
    body = recs(api, "u1", context="item", item_id="new1")
    assert pairs(body) == [("f1", 9.0, "trending in fashion (no items like new1 yet)"), ("f2", 8.0, "trending in fashion (no items like new1 yet)")]


def test_item_context_needs_an_item(api, shop):
    assert_problem(api.get("/v1/users/u1/recommendations", params={"context": "item"}), 422, "validation")


# -- context=search ---------------------------------------------------------------------


def test_search_context_reranks_candidates_by_interest(api, shop):
    body = recs(api, "u1", context="search", candidates="t1,i3,i2")
    # priors 1/log2(rank+2): t1 1.0, i3 0.6309, i2 0.5.  Personal signals (max-normalised):
    # t1 none; i3 category fashion 1.0; i2 max(item 2/5, home 0.25, list 0.6/0.9) = 0.6667.
    prior = [1.0, 1 / math.log2(3), 0.5]
    assert pairs(body) == [
        ("i3", pytest.approx(prior[1] + 1.0), "matches your interest in fashion"),
        ("i2", pytest.approx(prior[2] + 0.6 / 0.9), "also in your recommendations"),
        ("t1", pytest.approx(prior[0]), "search order"),
    ]
    assert [i["item"] for i in recs(api, "u1", context="search", candidates="t1,i3,i2", exclude="i2")["items"]] == ["i3", "t1"]


def test_search_context_for_a_cold_user_leans_on_trending(api, shop):
    body = recs(api, "nobody", context="search", candidates="t2,t1,x9")
    # trending max-normalised: t1 1.0, t2 0.6; x9 is not trending.
    assert pairs(body) == [
        ("t1", pytest.approx(1 / math.log2(3) + 1.0), "trending now (no history yet)"),
        ("t2", pytest.approx(1.0 + 0.6), "trending now (no history yet)"),
        ("x9", pytest.approx(0.5), "search order"),
    ]
    assert body["cold_start"] is True


def test_search_context_needs_candidates(api, shop):
    assert_problem(api.get("/v1/users/u1/recommendations", params={"context": "search"}), 422, "validation")


# -- similar, trending, items, stats ----------------------------------------------------


def test_similar_blends_collaborative_and_content_neighbours(api, shop):
    w = ModelConfig()
    response = api.get("/v1/items/i1/similar", params={"n": 2})
    assert response.status_code == 200
    body = response.json()
    assert body["item_id"] == "i1" and body["ts"] == 200
    assert [(i["item"], pytest.approx(i["score"])) for i in body["items"]] == [("n1", w.weight_cf), ("n2", w.weight_cf * 0.5 + w.weight_content)]


def test_similar_for_a_new_item_is_trending_in_its_category(api, shop):
    body = api.get("/v1/items/new1/similar").json()
    assert pairs(body) == [("f1", 9.0, "trending in fashion (new item: no neighbours yet)"), ("f2", 8.0, "trending in fashion (new item: no neighbours yet)")]


def test_similar_for_an_unknown_item_is_404(api, shop):
    assert_problem(api.get("/v1/items/never-seen/similar"), 404, "unknown-item")


def test_trending_global_and_per_category(api, shop):
    assert minted(api.get("/v1/trending").json(), "~") == {
        "category": None,
        "ts": 2000,
        "items": [{"item": item, "score": score, "reason": "trending now", "why": {"code": "trending_now"}} for item, score in (("t1", 50.0), ("i1", 40.0), ("t2", 30.0))],
    }
    assert [i["item"] for i in api.get("/v1/trending", params={"n": 1}).json()["items"]] == ["t1"]
    assert pairs(api.get("/v1/trending", params={"category": "fashion"}).json()) == [("f1", 9.0, "trending in fashion"), ("f2", 8.0, "trending in fashion")]
    assert [i["item"] for i in api.get("/v1/trending", params={"category": "fashion/shoes"}).json()["items"]] == ["f1"]
    assert minted(api.get("/v1/trending", params={"category": "garden"}).json(), "~") == {"category": "garden", "ts": 0, "items": []}


def test_item_lookups_read_redis(api, shop):
    response = api.get("/v1/items/i1")
    assert response.status_code == 200
    assert response.content == CatalogItem("i1", title="Item i1", category="fashion/shoes").to_json()
    assert_problem(api.get("/v1/items/zz"), 404, "unknown-item")
    batch = api.get("/v1/items", params={"ids": "i2,zz"}).json()
    assert batch == {"items": {"i2": orjson.loads(CatalogItem("i2", title="Item i2", category="home/kitchen").to_json()), "zz": None}}


def test_stats_reports_counters_and_freshness(api, store, clock):
    store.client.hset(store.key(KeyKind.STATS), mapping={"events": "1200", "dead_letters": "3", "late_events": "7", "last_window_ts": str(NOW_MS - 1500)})
    body = api.get("/v1/stats").json()
    assert body == {"now_ms": NOW_MS, "freshness_ms": 1500, "counters": {"events": 1200, "dead_letters": 3, "late_events": 7, "last_window_ts": NOW_MS - 1500}}
    clock.now_ms = NOW_MS + 250
    assert api.get("/v1/stats").json()["freshness_ms"] == 1750


def test_stats_before_the_job_ran(api):
    assert api.get("/v1/stats").json() == {"now_ms": NOW_MS, "freshness_ms": None, "counters": {}}


def test_catalog_browse_from_the_loaded_file(serve):
    catalog = BrowseCatalog([CatalogItem("a1", title="A", category="fashion/shoes"), CatalogItem("a2", category="home"), CatalogItem("a3", category="fashion")])
    with httpx.Client(base_url=serve(catalog=catalog)) as client:
        assert client.get("/v1/catalog/categories").json() == [{"category": "fashion", "items": 2}, {"category": "home", "items": 1}]
        page = client.get("/v1/catalog", params={"category": "fashion", "limit": 1, "offset": 1}).json()
        assert page["total"] == 2 and page["offset"] == 1 and [i["item_id"] for i in page["items"]] == ["a3"]
        assert client.get("/v1/catalog").json()["total"] == 3


def test_corrupt_stored_value_reads_as_missing(api, store, shop):
    store.client.set(store.key(KeyKind.USER_RECS, "u9"), b"{not json")
    body = recs(api, "u9", n=1)
    assert body["cold_start"] is False and pairs(body) == [("t1", 50.0, "trending now")]


# -- health -----------------------------------------------------------------------------


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}


def test_redis_down_gives_503_problems_not_500(serve, spool_dir, auth):
    dead = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", spool_dir=spool_dir, api_keys=(API_KEY,))
    with httpx.Client(base_url=serve(dead), timeout=10) as client:
        assert_unavailable(client.post("/v1/items", json={"item_id": "i1"}, headers=auth))
        assert_unavailable(client.delete("/v1/users/u1", headers=auth))
        # Events need no Redis: they still reach the job.
        assert client.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event_type": "click"}, headers=auth).status_code == 202
        assert client.get("/healthz").status_code == 200
        assert_unavailable(client.get("/readyz"))
        assert_unavailable(client.get("/v1/users/u1/recommendations"))  # shortcut path
        assert_unavailable(client.get("/v1/users/u1/recommendations", params={"context": "cart"}))
        assert_unavailable(client.get("/v1/trending"))
