"""The ad slot: ranking by relevance x bid with a floor, purchased items never shown, budgets,
and the relevance the batched scorer exposes.

Scorer part: the hand-built model of tests/transforms/test_scoring.py, whose home list is
    C 1.1, E 2/3, D 0.545833, F 0.3, G 0.225, H 0.05
so a sponsored item's relevance is its score / 1.1:
    E 0.606061, D 0.496212, F 0.272727, G 0.204545, H 0.045455
With bids D 2, F 3, E 1, G 1, H 100 and floor 0.1, relevance x bid is
    D 0.992424, F 0.818182, E 0.606061, G 0.204545, H below the floor (0.045 < 0.1) despite its bid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.transforms.test_scoring import CONFIG, make_model, make_profile
from transforms.ads import (
    NO_CAMPAIGN,
    AdPick,
    Sponsorship,
    campaign_budgets,
    campaign_counts,
    day_start_ms,
    exhausted,
    popularity_relevance,
    rank_ads,
    sponsored_bids,
    sponsorship,
    within_budget,
)
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.engine import ReferenceEngine
from transforms.events import PURCHASE
from transforms.scoring import score_user, score_users, sponsored_relevance

BIDS = {"D": 2.0, "F": 3.0, "E": 1.0, "G": 1.0, "H": 100.0}
BEST = 1.1
HOME_SCORES = {"C": 1.1, "E": 2 / 3, "D": 1 / 3 + 0.3 * 0.375 + 0.2 * 0.5, "F": 0.3, "G": 0.225, "H": 0.05}


def picks_of(ads):
    return [(a.item, round(a.score, 6), round(a.relevance, 6), a.bid) for a in ads]


# -- rank_ads -------------------------------------------------------------------------------


def test_rank_orders_by_relevance_times_bid_then_item():
    relevance = {"a": 0.5, "b": 1.0, "c": 0.25, "d": 0.5}
    bids = {"a": 2.0, "b": 1.0, "c": 8.0, "d": 1.0}
    # a 1.0, b 1.0, c 2.0, d 0.5: c first, then a and b tied (item id order), then d
    assert [p.item for p in rank_ads(relevance, bids, (), 0.0, 10)] == ["c", "a", "b", "d"]
    assert rank_ads(relevance, bids, (), 0.0, 10)[0] == AdPick("c", 2.0, 0.25, 8.0)


def test_rank_applies_the_floor_purchases_n_and_zero_bids():
    relevance = {"a": 0.09, "b": 0.1, "c": 0.9, "d": 0.8, "e": 0.7, "x": 1.0}
    bids = {"a": 100.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 0.0}  # x is not sponsored
    ranked = rank_ads(relevance, bids, purchased={"c"}, floor=0.1, n=10)
    # a: below the floor whatever its bid; c: bought; e: bid 0 buys nothing; x: no bid
    assert [p.item for p in ranked] == ["d", "b"]
    assert [p.item for p in rank_ads(relevance, bids, (), 0.1, 2)] == ["c", "d"]
    assert rank_ads({}, bids, (), 0.1, 10) == []


def test_popularity_relevance():
    assert popularity_relevance([("a", 8.0), ("b", 4.0), ("c", 0.0)]) == {"a": 1.0, "b": 0.5}
    assert popularity_relevance([]) == {} and popularity_relevance([("a", 0.0)]) == {}


# -- budgets ------------------------------------------------------------------------------------


def test_campaign_budgets_take_the_smallest_and_skip_uncapped():
    sponsorships = [Sponsorship(1.0, "c1", 50.0), Sponsorship(2.0, "c1", 20.0), Sponsorship(1.0, "c2", math.nan), Sponsorship(1.0, NO_CAMPAIGN, math.nan)]
    assert campaign_budgets(sponsorships) == {"c1": 20.0}


def test_exhausted_campaigns_are_not_served():
    budgets = {"c1": 10.0, "c2": 10.0, "c3": 0.0}
    spend = {"c1": 10.0, "c2": 9.5}
    assert exhausted(budgets, spend) == {"c1", "c3"}  # reached (>=), and a zero budget from the start
    picks = [AdPick("a", 3.0, 1.0, 3.0), AdPick("b", 2.0, 1.0, 2.0), AdPick("c", 1.0, 1.0, 1.0), AdPick("d", 0.5, 0.5, 1.0)]
    campaign_of = {"a": "c1", "b": "c2", "c": "c3"}  # d has no campaign: never capped
    assert [p.item for p in within_budget(picks, campaign_of, budgets, spend)] == ["b", "d"]


def test_sponsorship_of_catalog_items():
    item = CatalogItem("i1", sponsored=True, bid=0.5, campaign="c1", budget=30.0)
    assert sponsorship(item) == Sponsorship(0.5, "c1", 30.0)
    assert sponsorship(CatalogItem("i2", sponsored=True, bid=0.5)).campaign == NO_CAMPAIGN
    assert sponsorship(CatalogItem("i3", bid=0.5)) is None  # a bid alone does not sponsor
    assert sponsored_bids([item, CatalogItem("i3", bid=0.5)]) == {"i1": 0.5}


def test_day_start():
    assert day_start_ms(86_400_000 * 3 + 5) == 86_400_000 * 3
    assert day_start_ms(86_400_000 * 3) == 86_400_000 * 3


# -- the relevance the scorer exposes -----------------------------------------------------------------


def test_sponsored_relevance_divides_by_each_rows_best():
    row = np.array([0, 0, 0, 1, 1, 2], dtype=np.intp)
    code = np.array([1, 2, 3, 2, 4, 2], dtype=np.int64)
    value = np.array([4.0, 1.0, 2.0, 0.5, 0.25, 0.0])
    r, c, rel = sponsored_relevance(row, code, value, np.array([2, 4], dtype=np.int64))
    # row 0: 2 -> 1/4; row 1: 2 -> 0.5/0.5, 4 -> 0.25/0.5; row 2: best 0, nothing
    assert r.tolist() == [0, 1, 1] and c.tolist() == [2, 2, 4] and rel.tolist() == [0.25, 1.0, 0.5]
    empty = sponsored_relevance(row, code, value, np.empty(0, dtype=np.int64))
    assert all(len(part) == 0 for part in empty)


def test_sponsored_relevance_takes_each_rows_best_from_the_caller():
    # Only the sponsored entries are given; each row's best (4, 0.5, 0) comes with them.
    row = np.array([0, 1, 1, 2], dtype=np.intp)
    code = np.array([2, 2, 4, 2], dtype=np.int64)
    value = np.array([1.0, 0.5, 0.25, 0.0])
    r, c, rel = sponsored_relevance(row, code, value, np.array([2, 4], dtype=np.int64), np.array([4.0, 0.5, 0.5, 0.0]))
    assert r.tolist() == [0, 1, 1] and c.tolist() == [2, 2, 4] and rel.tolist() == [0.25, 1.0, 0.5]


def test_scorer_ranks_ads_by_relevance_times_bid_with_the_floor():
    lists = score_user(make_profile(), 0, make_model(sponsored=BIDS), CONFIG)
    assert lists.sponsored_relevance == pytest.approx({item: HOME_SCORES[item] / BEST for item in BIDS})
    assert picks_of(lists.ads) == [
        ("D", round(HOME_SCORES["D"] / BEST * 2, 6), round(HOME_SCORES["D"] / BEST, 6), 2.0),
        ("F", round(0.3 / BEST * 3, 6), round(0.3 / BEST, 6), 3.0),
        ("E", round(2 / 3 / BEST, 6), round(2 / 3 / BEST, 6), 1.0),
        ("G", round(0.225 / BEST, 6), round(0.225 / BEST, 6), 1.0),
    ]  # H: relevance 0.045 is below the floor 0.1, whatever its bid of 100
    assert [a.item for a in score_user(make_profile(), 0, make_model(sponsored=BIDS), CONFIG.replace(ads_relevance_floor=0.0)).ads][-1] == "G"
    assert [a.item for a in score_user(make_profile(), 0, make_model(sponsored=BIDS), CONFIG.replace(ads_relevance_floor=0.0)).ads][0] == "H"
    assert [a.item for a in score_user(make_profile(), 0, make_model(sponsored=BIDS), CONFIG.replace(ads_n=2)).ads] == ["D", "F"]


def test_ads_never_show_a_purchased_item_even_in_a_repeat_purchase_category():
    profile = make_profile(purchased={"F": 0}, last_action={"A": 1, "B": 2, "F": PURCHASE})
    config = CONFIG.replace(repeat_purchase_categories=("toys",))
    lists = score_user(profile, 0, make_model(sponsored=BIDS), config)
    assert "F" in [i.item for i in lists.home]  # toys may be bought again: still recommended
    assert "F" not in [a.item for a in lists.ads]  # but never advertised


def test_ads_respect_stock_and_category_filters():
    model = make_model(sponsored=BIDS)
    model.facts["D"] = ("toys", False)
    lists = score_user(make_profile(), 0, model, CONFIG.replace(deny_categories=("books",)))
    # D is out of stock, C, E and G are books: F (0.3) and H (0.05) are left, and relevance is over
    # the best item the user may be shown, F: F 1.0 x 3, H 1/6 x 100 (now above the floor)
    assert picks_of(lists.ads) == [("H", round(100 / 6, 6), round(1 / 6, 6), 100.0), ("F", 3.0, 1.0, 3.0)]


def test_no_sponsored_items_no_ads_and_home_unchanged():
    plain = score_users([make_profile(), None], 0, make_model(), CONFIG)
    assert [l.ads for l in plain] == [None, None] and plain[0].sponsored_relevance == {}
    sponsored = score_users([make_profile(), None], 0, make_model(sponsored=BIDS), CONFIG)
    assert [l.home for l in sponsored] == [l.home for l in plain]
    # A user without a profile is scored on trending: relevance H 1.0 x 100, G 0.5 x 1.
    assert [a.item for a in sponsored[1].ads] == ["H", "G"]


def test_batch_ads_equal_ads_of_one():
    profiles = [make_profile(), make_profile(interests={"B": 3.0}), None]
    model = make_model(sponsored=BIDS)
    batch = score_users(profiles, 0, model, CONFIG)
    for profile, lists in zip(profiles, batch):
        assert lists.ads == score_user(profile, 0, model, CONFIG).ads


def test_config_checks_ad_settings():
    with pytest.raises(ValueError, match="ads_relevance_floor"):
        ModelConfig(ads_relevance_floor=1.5)
    with pytest.raises(ValueError, match="ads_n"):
        ModelConfig(ads_n=0)


# -- the reference engine keeps the bids of the catalog -------------------------------------------------


def test_engine_tracks_sponsored_items_through_upserts():
    engine = ReferenceEngine(ModelConfig())
    engine.upsert_catalog([CatalogItem("a", sponsored=True, bid=1.5, ts=10), CatalogItem("b", ts=10), CatalogItem("c", sponsored=True, bid=0.5, ts=10)])
    engine.close_catalog()
    assert engine.model.sponsored == {"a": 1.5, "c": 0.5}
    engine.upsert_catalog([CatalogItem("a", ts=20), CatalogItem("c", sponsored=True, bid=0.75, ts=20)])
    engine.close_catalog()
    assert engine.model.sponsored == {"c": 0.75}


# -- spend per campaign -------------------------------------------------------------------------------


def test_campaign_counts_price_clicks_at_the_bid_given():
    day = 86_400_000 * 20
    counts = {
        (day, "a", "impressions"): 10, (day, "a", "clicks"): 3,
        (day, "b", "impressions"): 4, (day, "b", "clicks"): 1,
        (day, "n", "impressions"): 7, (day, "n", "clicks"): 2,  # n: no campaign
        (day, "x", "impressions"): 5, (day, "x", "clicks"): 5,  # x: not sponsored (any more): free, no campaign
        (day + 86_400_000, "a", "clicks"): 1,
    }
    sponsored = {"a": Sponsorship(0.5, "c1", math.nan), "b": Sponsorship(2.0, "c1", 10.0), "n": Sponsorship(0.25, NO_CAMPAIGN, math.nan)}
    assert campaign_counts(counts, sponsored) == {
        (day, "c1", "campaign_impressions"): 14, (day, "c1", "campaign_clicks"): 4, (day, "c1", "spend"): 3 * 0.5 + 2.0,
        (day, NO_CAMPAIGN, "campaign_impressions"): 7, (day, NO_CAMPAIGN, "campaign_clicks"): 2, (day, NO_CAMPAIGN, "spend"): 0.5,
        (day + 86_400_000, "c1", "campaign_clicks"): 1, (day + 86_400_000, "c1", "spend"): 0.5,
    }
    assert campaign_counts({}, sponsored) == {} and campaign_counts(counts, {}) == {}
