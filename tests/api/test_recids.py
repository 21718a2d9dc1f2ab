"""Every list the API returns carries a rec_id bound to its viewer, minted on the API's clock with the
variant that computed the list (api/recids.py)."""

from __future__ import annotations

import asyncio
from dataclasses import astuple

import httpx
import pytest

from api.recids import ANONYMOUS, RecIdIssuer, stored_assignment
from flowrec.config import Settings
from state.keys import KeyKind
from transforms.recid import BadRecId, RecId, decode_rec_id

from .conftest import API_KEY, NOW_MS, put_list

SECRET = "a-test-secret-of-32-characters!!"


@pytest.fixture
def shop(store):
    put_list(store, KeyKind.USER_RECS, "u1", NOW_MS - 5, [(f"i{k}", 1.0 - k / 100) for k in range(20)], experiment="exp1", variant="treatment")
    put_list(store, KeyKind.USER_RECS, "u2", NOW_MS - 5, [("i1", 0.9)])  # shorter than n: topped up (general path)
    put_list(store, KeyKind.USER_RECS, "u3", NOW_MS - 5, [(f"i{k}", 1.0) for k in range(12)])  # written before experiments
    put_list(store, KeyKind.TRENDING_GLOBAL, None, NOW_MS - 5, [("i5", 3.0), ("i6", 2.0), ("i7", 1.0)])
    put_list(store, KeyKind.ITEM_NEIGHBOURS, "i1", NOW_MS - 5, [("i2", 0.5), ("i3", 0.4)])
    put_list(store, KeyKind.COMPLEMENTS, "u1", NOW_MS - 5, [("i8", 0.5)], experiment="exp1", variant="treatment")
    put_list(store, KeyKind.PROFILE, "u1", NOW_MS - 5, [("i1", 1.0)], cart=["i1"])


@pytest.fixture
def client(serve, redis_url, spool_dir, shop):
    settings = Settings(redis_url=redis_url, spool_dir=spool_dir, api_keys=(API_KEY,), rec_id_secret=SECRET)

    async def variant_of(user: str, context: str) -> tuple[str, str]:
        return ("exp1", "control") if user == "u4" else ("~", "~")

    with httpx.Client(base_url=serve(settings, variant_of=variant_of), timeout=10) as c:
        yield c


def rec_of(body: dict, user: str) -> RecId:
    return decode_rec_id(body["rec_id"], user, SECRET)


def parts(token: str | dict, user: str) -> tuple:
    """(experiment, variant, context, served_ms, nonce) of a rec_id or of a response's."""
    return astuple(decode_rec_id(token["rec_id"] if isinstance(token, dict) else token, user, SECRET))


def test_home_lists_carry_the_stored_variant_and_the_api_clock(client, clock):
    clock.now_ms = NOW_MS + 1234
    fast = client.get("/v1/users/u1/recommendations").json()
    assert rec_of(fast, "u1") == RecId("exp1", "treatment", "home", NOW_MS + 1234, rec_of(fast, "u1").nonce)
    # The general path (a short list topped up with trending, a category, an exclusion) mints the same way.
    for path in ("/v1/users/u1/recommendations?exclude=i0", "/v1/users/u1/recommendations?n=50"):
        assert parts(client.get(path).json(), "u1")[:4] == ("exp1", "treatment", "home", NOW_MS + 1234)
    # A list written without the fields, and a cold-start user: the user's current assignment.
    assert parts(client.get("/v1/users/u3/recommendations").json(), "u3")[:3] == ("~", "~", "home")
    assert parts(client.get("/v1/users/u2/recommendations").json(), "u2")[:3] == ("~", "~", "home")
    assert parts(client.get("/v1/users/u4/recommendations").json(), "u4")[:3] == ("exp1", "control", "home")


def test_a_rec_id_is_bound_to_its_user_and_unique_per_response(client):
    bodies = [client.get("/v1/users/u1/recommendations").json() for _ in range(20)]
    assert len({b["rec_id"] for b in bodies}) == 20
    with pytest.raises(BadRecId) as caught:
        decode_rec_id(bodies[0]["rec_id"], "u2", SECRET)
    assert caught.value.reason == "unknown_rec_id"
    with pytest.raises(BadRecId):
        decode_rec_id(bodies[0]["rec_id"], "u1", "another-secret-of-32-characters!")


def test_every_context_carries_a_rec_id(client, store):
    cart = client.get("/v1/users/u1/recommendations?context=cart").json()
    assert parts(cart, "u1")[:3] == ("exp1", "treatment", "cart")
    item = client.get("/v1/users/u4/recommendations?context=item&item_id=i1").json()
    assert parts(item, "u4")[:3] == ("exp1", "control", "item")
    search = client.get("/v1/users/u1/recommendations?context=search&candidates=i3,i2").json()
    assert parts(search, "u1")[:3] == ("~", "~", "search")
    cold_cart = client.get("/v1/users/u9/recommendations?context=cart").json()
    assert parts(cold_cart, "u9")[:3] == ("~", "~", "cart")
    # Ads: the stored ads list's variant (it is scored with the home list), else the user's current one.
    put_list(store, KeyKind.ADS, "u1", NOW_MS - 5, [], relevance=[], experiment="exp1", variant="treatment")
    assert parts(client.get("/v1/users/u1/recommendations?context=ads").json(), "u1")[:3] == ("exp1", "treatment", "ads")
    assert parts(client.get("/v1/users/u4/recommendations?context=ads").json(), "u4")[:3] == ("exp1", "control", "ads")


def test_similar_and_trending_are_bound_to_the_viewer_named_else_anonymous(client, clock):
    similar = client.get("/v1/items/i1/similar").json()
    assert rec_of(similar, ANONYMOUS) == RecId("~", "~", "similar", NOW_MS, rec_of(similar, ANONYMOUS).nonce)
    assert parts(client.get("/v1/items/i1/similar?user_id=u4").json(), "u4")[:3] == ("exp1", "control", "similar")
    trending = client.get("/v1/trending").json()
    assert parts(trending, ANONYMOUS)[:3] == ("~", "~", "trending")
    assert parts(client.get("/v1/trending?user_id=u4&n=2").json(), "u4")[:3] == ("exp1", "control", "trending")
    assert client.get("/v1/trending?user_id=not*an*id").status_code == 422


def test_a_stored_variant_that_cannot_be_part_of_a_rec_id_is_ignored(client, store):
    put_list(store, KeyKind.USER_RECS, "u5", NOW_MS - 5, [(f"i{k}", 1.0) for k in range(12)], experiment="has.dots", variant="x")
    response = client.get("/v1/users/u5/recommendations")
    assert response.status_code == 200
    assert parts(response.json(), "u5")[:2] == ("~", "~")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"experiment": "e", "variant": "v"}, ("e", "v")),
        ({"experiment": "~", "variant": "~"}, ("~", "~")),
        ({"experiment": "e"}, None),
        ({"experiment": "e", "variant": "~"}, None),
        ({"experiment": "e", "variant": 3}, None),
        ({"experiment": "x" * 33, "variant": "v"}, None),
        ("not a dict", None),
    ],
)
def test_stored_assignment(fields, expected):
    assert stored_assignment(fields) == expected


def test_the_issuer_asks_the_assignment_only_when_the_list_names_none():
    asked: list[tuple[str, str]] = []

    async def variant_of(user: str, context: str) -> tuple[str, str]:
        asked.append((user, context))
        return ("e", "v")

    issuer = RecIdIssuer(SECRET, lambda: 42, variant_of)
    assert parts(asyncio.run(issuer.issue("u1", "home", ("e2", "v2"))), "u1")[:4] == ("e2", "v2", "home", 42)
    assert parts(issuer.mint("u1", "cart", ("e2", "v2")), "u1")[:4] == ("e2", "v2", "cart", 42)
    assert parts(asyncio.run(issuer.issue("u1", "item")), "u1")[:3] == ("e", "v", "item")
    assert parts(asyncio.run(issuer.issue(ANONYMOUS, "trending")), ANONYMOUS)[:2] == ("~", "~")
    assert asked == [("u1", "item")]


def test_the_running_experiment_the_job_applied_assigns_request_time_lists(serve, redis_url, spool_dir, store):
    """Without a variant_of, the app asks the experiments the job wrote to Redis (api.experiments)."""
    from state.writes import experiment_writes
    from transforms.experiments import ExperimentRecord, assign, parse_experiment

    experiment = parse_experiment({"id": "exp9", "variants": {"control": {"share": 0.5, "preset": "popularity"}, "treatment": {"share": 0.5, "preset": "default"}}})
    store.write(experiment_writes(ExperimentRecord(experiment, NOW_MS - 1000, NOW_MS - 1000)))
    settings = Settings(redis_url=redis_url, spool_dir=spool_dir, api_keys=(API_KEY,), rec_id_secret=SECRET)
    with httpx.Client(base_url=serve(settings), timeout=10) as c:
        for user in ("a1", "a2", "a3", "a4"):
            assert parts(c.get(f"/v1/users/{user}/recommendations").json(), user)[:3] == ("exp9", assign(experiment, user), "home")
            assert parts(c.get(f"/v1/trending?user_id={user}").json(), user)[:3] == ("exp9", assign(experiment, user), "trending")
