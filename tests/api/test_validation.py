"""Strict input: bad ids, bad parameters and unknown routes get problem documents, never a 500,
and an invalid id never reaches Redis."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from flowrec.config import Settings

from .conftest import assert_problem, running

BAD_IDS = [
    pytest.param("u" * 129, id="too-long"),
    pytest.param("u$er", id="bad-charset"),
    pytest.param("*", id="star"),
    pytest.param("u1*", id="glob"),
    pytest.param("%2A", id="percent-encoded-star"),
    pytest.param("caf%C3%A9", id="non-ascii"),
    pytest.param("a%20b", id="space"),
    pytest.param("a%0Ab", id="newline"),
]


def redis_reads(redis_client) -> int:
    """Read commands Redis has executed since the last CONFIG RESETSTAT."""
    stats = redis_client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget", "hgetall", "scan", "keys"))


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_user_ids_are_refused_before_redis(api, redis_client, bad):
    redis_client.config_resetstat()
    for url in (f"/v1/users/{bad}/recommendations", f"/v1/users/{bad}/recommendations?n=5&context=cart"):
        doc = assert_problem(api.get(url), 422, "validation")
        assert "user_id" in doc["detail"]
    assert redis_reads(redis_client) == 0


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_item_ids_are_refused_before_redis(api, redis_client, bad):
    redis_client.config_resetstat()
    assert_problem(api.get(f"/v1/items/{bad}/similar"), 422, "validation")
    assert_problem(api.get(f"/v1/items/{bad}"), 422, "validation")
    assert_problem(api.get(f"/v1/users/u1/recommendations?context=item&item_id={bad}"), 422, "validation")
    assert redis_reads(redis_client) == 0


@pytest.mark.parametrize("query", ["exclude=i1,*", "exclude=i1,,u$", "context=search&candidates=a,b*", "context=search&candidates=" + ",".join(f"c{k}" for k in range(201))])
def test_bad_id_lists_are_refused(api, redis_client, query):
    redis_client.config_resetstat()
    assert_problem(api.get(f"/v1/users/u1/recommendations?{query}"), 422, "validation")
    assert redis_reads(redis_client) == 0


@pytest.mark.parametrize("n", ["0", "101", "-1", "abc", "1.5", "", "99999999999999999999"])
def test_n_is_bounded(api, n):
    doc = assert_problem(api.get(f"/v1/users/u1/recommendations?n={n}"), 422, "validation")
    assert "'n'" in doc["detail"]
    assert_problem(api.get(f"/v1/trending?n={n}"), 422, "validation")
    assert_problem(api.get(f"/v1/items/i1/similar?n={n}"), 422, "validation")


def test_n_at_the_bounds_is_fine(api):
    for n in (1, 100):
        assert api.get("/v1/users/u1/recommendations", params={"n": n}).status_code == 200


@pytest.mark.parametrize("query", ["context=basket", "context=", "category=a*b", "category=" + "x" * 600, "category=a//b"])
def test_bad_parameters(api, query):
    assert_problem(api.get(f"/v1/users/u1/recommendations?{query}"), 422, "validation")


@pytest.mark.parametrize("category", ["a*b", "[x]", "a//b", "%0A", "", "/".join(["a"] * 9), "x" * 129])
def test_every_category_filter_has_the_one_category_rule(api, category):
    # /v1/catalog used to check the length only and answer 200 with nothing for a category no item can have.
    for route in ("/v1/catalog", "/v1/trending", "/v1/users/u1/recommendations"):
        doc = assert_problem(api.get(f"{route}?category={category}"), 422, "validation")
        assert "'category'" in doc["detail"], route


def test_validation_problem_lists_every_error(api):
    doc = assert_problem(api.get("/v1/users/u1/recommendations?n=0&context=basket"), 422, "validation")
    locations = sorted(e["location"] for e in doc["errors"])
    assert locations == ["query parameter 'context'", "query parameter 'n'"]
    assert doc["instance"] == "/v1/users/u1/recommendations"


def test_unknown_route_and_wrong_method_are_problems(api):
    assert_problem(api.get("/v1/nothing/here"), 404)
    assert_problem(api.get("/v1/users/a/b/recommendations"), 404)
    assert_problem(api.post("/v1/trending"), 405)
    assert_problem(api.put("/v1/users/u1/recommendations"), 405)


def test_ids_at_the_limit_are_accepted(api):
    ok = "Az09_.:@-" + "x" * 119  # 128 characters, every allowed character class
    assert len(ok) == 128
    assert api.get(f"/v1/users/{ok}/recommendations").status_code == 200


def test_a_bug_is_a_500_problem_without_internals(redis_url, stopping_servers):
    app = create_app(Settings(redis_url=redis_url))

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    with running(app, stopping_servers) as base:
        doc = assert_problem(httpx.get(f"{base}/boom"), 500, "internal")
        assert "secret" not in doc["detail"]
