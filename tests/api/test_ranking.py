"""The request-time blends of api.ranking, with hand-computed scores."""

from __future__ import annotations

import math

import pytest

from api.ranking import (
    BlendWeights,
    blend_neighbours,
    boost_by_taste,
    in_category,
    normalised,
    rerank_candidates,
    search_prior,
    take,
    top_up,
    trending_reason,
)
from state.store import ScoredItem as S
from transforms.reasons import reason


def texts(items):
    return [(i.item, i.score, i.reason.text if i.reason else "") for i in items]


def test_normalised_divides_by_the_list_maximum():
    assert normalised([S("a", 4.0), S("b", 1.0), S("a", 9.0), S("c", -2.0)]) == {"a": 1.0, "b": 0.25, "c": 0.0}
    assert normalised([S("a", 0.0)]) == {"a": 0.0}
    assert normalised([S("a", math.nan), S("b", 2.0)]) == {"a": 0.0, "b": 1.0}
    assert normalised([]) == {}


def test_category_paths():
    assert in_category("fashion/shoes", "fashion")
    assert in_category("fashion", "fashion")
    assert not in_category("fashionable", "fashion")
    assert not in_category("home", "fashion")


def test_take_and_top_up_never_repeat_an_item():
    items = [S("a", 3), S("b", 2), S("a", 1)]
    assert take(items, 5, {"b"}) == [S("a", 3)]
    assert top_up([S("a", 3)], [S("a", 9), S("t", 8), S("x", 7)], 3, {"x"}, trending_reason(None)) == [S("a", 3), S("t", 8, reason("trending_now"))]


def test_blend_neighbours():
    cf = [S("x", 4.0), S("y", 2.0), S("anchor", 9.0)]
    content = [S("y", 0.8), S("z", 0.4)]
    got = blend_neighbours("anchor", cf, content, BlendWeights(cf=1.0, content=0.5), skip={"q"})
    # x: 1.0; y: 0.5 + 0.5 * 1.0 = 1.0 (tie: cf order keeps x first); z: 0.5 * 0.5.
    assert texts(got) == [("x", 1.0, "often together with anchor"), ("y", 1.0, "similar to and often together with anchor"), ("z", 0.25, "similar to anchor")]
    assert [i.reason.fields() for i in got] == [
        {"code": "often_together_with", "item": "anchor"},
        {"code": "similar_and_often_together_with", "item": "anchor"},
        {"code": "similar_to", "item": "anchor"},
    ]
    assert [i.item for i in blend_neighbours("anchor", cf, content, BlendWeights(), skip={"x"})] == ["y", "z"]


def test_boost_by_taste():
    r = reason("similar_to", item="q")
    items = [S("a", 1.0, r), S("b", 0.9, r), S("c", 0.8, r)]
    got = boost_by_taste(items, {"a": "toys", "b": "home/x", "c": "fashion/y"}, {"home": 2.0, "fashion": 4.0}, weight=1.0)
    # c: 0.8 * 2 = 1.6; b: 0.9 * 1.5 = 1.35; a unchanged.
    assert [(i.item, pytest.approx(i.score)) for i in got] == [("c", 1.6), ("b", 1.35), ("a", 1.0)]
    assert got[0].reason.text == "similar to q, matches your interest in fashion" and got[2].reason == r
    assert got[0].reason.fields() == {"code": "similar_to", "item": "q", "category": "fashion", "note": "matches_interest_in"}


def test_search_prior_is_dcg_like():
    assert search_prior(0) == 1.0
    assert search_prior(2) == 0.5
    assert search_prior(1) == pytest.approx(1 / math.log2(3))


def test_rerank_candidates_for_known_and_cold_users():
    got = rerank_candidates(
        ["a", "b", "c"],
        weight=1.0,
        item_interest={"c": 2.0, "a": 4.0},
        category_of={"b": "home/x"},
        category_interest={"home": 1.0},
        personal_list=[S("c", 1.0)],
    )
    # a: 1 + 1.0 (item interest); b: 0.6309 + 1.0 (category); c: 0.5 + max(0.5, 0, 1.0) = 1.5.
    assert [(i.item, pytest.approx(i.score), i.reason.text) for i in got] == [
        ("a", 2.0, "you showed interest in this item"),
        ("b", 1 / math.log2(3) + 1.0, "matches your interest in home"),
        ("c", 1.5, "also in your recommendations"),
    ]
    cold = rerank_candidates(["a", "b"], 1.0, {}, {}, {}, [], trending=[S("b", 10.0)], cold_start=True)
    assert [(i.item, i.reason.text) for i in cold] == [("b", "trending now (no history yet)"), ("a", "search order")]
    assert cold[0].reason.fields() == {"code": "trending_now", "note": "no_history"}


def test_trending_reason():
    assert trending_reason(None).text == "trending now"
    assert trending_reason("toys", "new_item").text == "trending in toys (new item: no neighbours yet)"
    assert trending_reason(None, "nothing_similar", item="i9").fields() == {"code": "trending_now", "item": "i9", "note": "nothing_similar"}
