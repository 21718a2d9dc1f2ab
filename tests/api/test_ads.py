"""The ad slot over real HTTP against a real Redis: the job's ads list re-checked against the
catalog as it is now, campaigns whose budget is spent today skipped, and the cold-start fallback.

Hand-made data (NOW_MS is 2023-11-14T22:13:20Z, so today's ads hash is metrics:ads:1699920000000):

    stored ads list of u1 (relevance): a1 0.9, a2 0.5, a3 0.4, a4 0.3, a5 0.2
    catalog now: a1 bid 1 (campaign c1, budget 10), a2 bid 4 (c2, budget 5), a3 bid 1 (no campaign),
                 a4 no longer sponsored, a5 bid 10 but out of stock
    => relevance x bid now: a2 2.0, a1 0.9, a3 0.4  (a4 and a5 dropped)
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from state.keys import KeyKind
from state.metrics import ads_field, day_start
from state.store import Write
from state.writes import Ttls, catalog_write, encode_ads, user_writes
from tests.transforms.test_scoring import CONFIG as SCORING_CONFIG, make_model, make_profile
from transforms.ads import AdPick
from transforms.catalog import CatalogItem
from transforms.recid import decode_rec_id
from transforms.scoring import score_user

from .conftest import NOW_MS, put_list

TODAY = str(day_start(NOW_MS))
YESTERDAY = str(day_start(NOW_MS) - 86_400_000)

CATALOG = [
    CatalogItem("a1", category="toys", sponsored=True, bid=1.0, campaign="c1", budget=10.0),
    CatalogItem("a2", category="toys", sponsored=True, bid=4.0, campaign="c2", budget=5.0),
    CatalogItem("a3", category="books", sponsored=True, bid=1.0),
    CatalogItem("a4", category="toys", bid=2.0),
    CatalogItem("a5", category="toys", sponsored=True, bid=10.0, in_stock=False),
    CatalogItem("p1", category="toys"),
]
STORED = [("a1", 0.9), ("a2", 0.5), ("a3", 0.4), ("a4", 0.3), ("a5", 0.2)]


@pytest.fixture
def shop(store):
    store.write([catalog_write(item) for item in CATALOG])
    # The scores stored are relevance x the bids at scoring time; the API re-ranks with the bids of now.
    store.write([Write(KeyKind.ADS, "u1", encode_ads(NOW_MS - 1000, [AdPick(i, r, r, 1.0) for i, r in STORED]))])
    return store


def ads(api: httpx.Client, user: str = "u1", **params) -> dict:
    response = api.get(f"/v1/users/{user}/recommendations", params={"context": "ads", **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert decode_rec_id(body["rec_id"], user).context == "ads"  # frontends report ad impressions with it
    return body


def rows(body: dict) -> list[tuple]:
    return [(i["item"], round(i["score"], 9), i["relevance"], i["bid"], i["campaign"]) for i in body["items"]]


def test_ads_rerank_by_current_bid_and_drop_unservable_items(api, shop):
    body = ads(api)
    assert (body["context"], body["ts"], body["cold_start"]) == ("ads", NOW_MS - 1000, False)
    assert rows(body) == [("a2", 2.0, 0.5, 4.0, "c2"), ("a1", 0.9, 0.9, 1.0, "c1"), ("a3", 0.4, 0.4, 1.0, None)]
    assert body["items"][0]["why"] == {"code": "sponsored"} and body["items"][0]["reason"] == "sponsored"
    assert "empty_reason" not in body
    assert [i["item"] for i in ads(api, n=2)["items"]] == ["a2", "a1"]
    assert [i["item"] for i in ads(api, exclude="a2")["items"]] == ["a1", "a3"]
    assert [i["item"] for i in ads(api, category="books")["items"]] == ["a3"]


def test_purchased_items_are_never_advertised(api, shop):
    put_list(shop, KeyKind.PROFILE, "u1", NOW_MS, [], categories={}, cart=[], purchased=["a2"])
    assert [i["item"] for i in ads(api)["items"]] == ["a1", "a3"]


def test_campaign_with_budget_spent_today_is_not_served(api, shop, redis_client):
    day_key = shop.key(KeyKind.METRICS_ADS, TODAY)
    redis_client.hset(day_key, mapping={ads_field("c2", "spend"): "4.99", ads_field("c1", "spend"): "3"})
    assert [i["item"] for i in ads(api)["items"]] == ["a2", "a1", "a3"]  # 4.99 < 5: still serving
    redis_client.hset(day_key, ads_field("c2", "spend"), "5")
    assert [i["item"] for i in ads(api)["items"]] == ["a1", "a3"]  # c2 reached its budget of 5
    redis_client.hset(day_key, ads_field("c1", "spend"), "12.5")
    assert [i["item"] for i in ads(api)["items"]] == ["a3"]  # a3 has no campaign: never capped


def test_yesterdays_spend_does_not_count(api, shop, redis_client, clock):
    redis_client.hset(shop.key(KeyKind.METRICS_ADS, YESTERDAY), ads_field("c2", "spend"), "100")
    assert [i["item"] for i in ads(api)["items"]][0] == "a2"
    clock.now_ms = NOW_MS - 86_400_000  # the day that spend belongs to
    assert "a2" not in [i["item"] for i in ads(api)["items"]]


def test_every_campaign_spent_gives_an_empty_list_with_a_reason(api, store, redis_client):
    store.write([catalog_write(CATALOG[0]), Write(KeyKind.ADS, "u1", encode_ads(NOW_MS, [AdPick("a1", 0.9, 0.9, 1.0)]))])
    redis_client.hset(store.key(KeyKind.METRICS_ADS, TODAY), ads_field("c1", "spend"), "10")
    body = ads(api)
    assert body["items"] == [] and body["empty_reason"] == "budgets_spent"


def test_empty_stored_list_means_nothing_relevant(api, store):
    store.write([Write(KeyKind.ADS, "u1", encode_ads(NOW_MS, []))])
    body = ads(api)
    assert (body["items"], body["empty_reason"], body["cold_start"]) == ([], "none_relevant", False)


def test_cold_user_gets_sponsored_trending_items_by_bid(api, shop):
    # relevance = trending / top trending: p1 1.0 (not sponsored), a3 0.5, a1 0.25, a2 0.05 (below the floor 0.1)
    put_list(shop, KeyKind.TRENDING_GLOBAL, None, NOW_MS - 5, [("p1", 20.0), ("a3", 10.0), ("a1", 5.0), ("a2", 1.0)])
    body = ads(api, user="new-user")
    assert (body["cold_start"], body["ts"]) == (True, NOW_MS - 5)
    assert rows(body) == [("a3", 0.5, 0.5, 1.0, None), ("a1", 0.25, 0.25, 1.0, "c1")]
    assert body["items"][0]["reason"] == "sponsored (no history yet)"


def test_cold_user_without_sponsored_trending_items(api, store):
    put_list(store, KeyKind.TRENDING_GLOBAL, None, NOW_MS, [("p1", 3.0)])
    store.write([catalog_write(CATALOG[-1])])
    body = ads(api, user="new-user")
    assert (body["items"], body["empty_reason"], body["cold_start"]) == ([], "no_sponsored_items", True)
    assert ads(api, user="nobody-at-all")["empty_reason"] == "no_sponsored_items"  # not even trending yet


def test_the_scorers_list_is_what_the_api_serves(api, store):
    """End to end through the job's own writes: score_user -> user_writes -> GET ?context=ads."""
    bids = {"D": 2.0, "F": 3.0, "E": 1.0}
    lists = score_user(make_profile(), 0, make_model(sponsored=bids), SCORING_CONFIG)
    store.write(user_writes("u9", NOW_MS, lists, Ttls()))
    store.write([catalog_write(CatalogItem(i, category="toys", sponsored=True, bid=b, campaign="c9")) for i, b in bids.items()])
    body = ads(api, user="u9")
    assert [(i["item"], i["score"], i["relevance"]) for i in body["items"]] == [(a.item, a.score, a.relevance) for a in lists.ads]
    assert [i["item"] for i in body["items"]] == ["D", "F", "E"]


def test_unreadable_ads_list_is_empty_not_an_error(api, store, redis_client):
    redis_client.set(store.key(KeyKind.ADS, "u1"), b"{not json")
    body = ads(api)
    assert body["items"] == [] and body["empty_reason"] == "none_relevant"


def test_sponsored_upserts_are_checked_by_the_catalog_rule(api, auth, spool_dir):
    response = api.post(
        "/v1/items",
        json=[
            {"item_id": "s1", "sponsored": True, "bid": 0.4, "campaign": "spring", "budget": 50},
            {"item_id": "s2", "sponsored": True, "bid": -1},
            {"item_id": "s3", "sponsored": True, "bid": 1, "budget": 5},
            {"item_id": "s4", "sponsored": "yes"},
        ],
        headers=auth,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejections"]] == [(1, "bad_sponsorship"), (2, "bad_sponsorship"), (3, "bad_sponsorship")]
    stored = api.get("/v1/items/s1").json()
    assert (stored["sponsored"], stored["bid"], stored["campaign"], stored["budget"]) == (True, 0.4, "spring", 50.0)
