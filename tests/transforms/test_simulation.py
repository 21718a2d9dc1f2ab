"""The pure parts of `flowrec simulate`: visits, the events a visit makes, the verdict, the recount comparison."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.shoppers import Shoppers
from transforms.simulation import (
    ADS_DELAY_MS,
    Visit,
    browse_events,
    campaign_recount,
    campaign_totals,
    list_events,
    same_totals,
    sponsor,
    summary,
    variant_counts,
    visit_schedule,
    visit_stream,
)
from transforms.synthetic import build_shop

START_MS = 1_700_000_000_000
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def shoppers() -> Shoppers:
    return Shoppers(build_shop(users=200, items=300, seed=5, start_ms=START_MS), seed=9, available_at=START_MS)


def test_visit_schedule_is_deterministic_ordered_and_inside_the_period(shoppers):
    users = list(shoppers.user_ids)
    visits = visit_schedule(users, START_MS, START_MS + 20 * MINUTE_MS, 3.0, MINUTE_MS, seed=1)
    assert visits == visit_schedule(users, START_MS, START_MS + 20 * MINUTE_MS, 3.0, MINUTE_MS, seed=1)
    assert visits != visit_schedule(users, START_MS, START_MS + 20 * MINUTE_MS, 3.0, MINUTE_MS, seed=2)
    assert [v.list_ms for v in visits] == sorted(v.list_ms for v in visits)
    assert all(START_MS <= v.browse_ms and v.list_ms == v.browse_ms + MINUTE_MS and v.list_ms < START_MS + 20 * MINUTE_MS for v in visits)
    assert len(visits) / len(users) == pytest.approx(3.0, rel=0.15)  # Poisson(3) per shopper
    for user in users[:20]:  # each shopper's visits are numbered in time order
        mine = [v for v in visits if v.user == user]
        assert [v.number for v in sorted(mine, key=lambda v: v.browse_ms)] == list(range(len(mine)))
    with pytest.raises(ValueError, match="longer than the list delay"):
        visit_schedule(users, START_MS, START_MS + MINUTE_MS, 3.0, MINUTE_MS, seed=1)


def test_a_visit_browses_then_reacts_to_its_list_with_the_rec_id(shoppers):
    user = str(shoppers.user_ids[0])
    items = list(shoppers.shop.item_ids)
    best = [items[i] for i in np.argsort(shoppers.fit(user, items))[-10:]][::-1]
    prices = {item: 10.0 for item in items}
    viewed = 0
    for number in range(40):
        visit = Visit(user, number, START_MS + number * MINUTE_MS, START_MS + (number + 1) * MINUTE_MS)
        views = browse_events(shoppers, visit, 8000)  # (none when the subcategory picked has nothing available)
        viewed += len(views)
        assert all(e["event_type"] == "view" and e["user_id"] == user for e in views)
        assert [e["ts"] for e in views] == [visit.browse_ms + 8000 * k for k in range(len(views))]
        events = list_events(shoppers, visit, "r1.rec", best, prices)
        impression, reactions = events[0], events[1:]
        assert impression == {"user_id": user, "event_type": "impression", "rec_id": "r1.rec", "items": best, "positions": list(range(10)), "ts": visit.list_ms}
        assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
        for e in reactions:
            assert e["rec_id"] == "r1.rec" and best[e["position"]] == e["item_id"] and e["ts"] > visit.list_ms
            assert ("price" in e) == (e["event_type"] == "purchase")
    assert viewed > 40
    assert list_events(shoppers, Visit(user, 0, START_MS, START_MS + 1), "r1.rec", [], prices) == []


def test_summary_has_the_documented_shape_and_statistics():
    totals = {
        ("control", "all", "impressions"): 10_000.0, ("control", "all", "clicks"): 200.0, ("control", "all", "purchases"): 20.0,
        ("treatment", "all", "impressions"): 10_000.0, ("treatment", "all", "clicks"): 400.0, ("treatment", "all", "purchases"): 50.0,
        ("treatment", "home", "clicks"): 400.0,  # a context's counts are not added again
    }
    out = summary(totals, ["control", "treatment"], "control", recount_equal=True)
    assert set(out) == {"variants", "p_value", "winner", "recount_equal"}
    assert set(out["variants"]) == {"control", "treatment"}
    for row in out["variants"].values():
        assert set(row) == {"impressions", "clicks", "ctr", "ctr_ci", "purchases", "conversion"}
    treatment = out["variants"]["treatment"]
    assert (treatment["impressions"], treatment["clicks"], treatment["ctr"], treatment["purchases"], treatment["conversion"]) == (10_000, 400, 0.04, 50, 0.005)
    low, high = treatment["ctr_ci"]
    assert low < 0.04 < high
    assert out["p_value"] < 1e-10 and out["winner"] == "treatment" and out["recount_equal"] is True
    even = summary({("a", "all", "impressions"): 100.0, ("a", "all", "clicks"): 5.0, ("b", "all", "impressions"): 100.0, ("b", "all", "clicks"): 5.0}, ["a", "b"], "a", False)
    assert even["p_value"] == pytest.approx(1.0) and even["winner"] is None and even["recount_equal"] is False


def test_variant_counts_read_one_context():
    totals = {("v", "home", "clicks"): 3.0, ("v", "all", "clicks"): 5.0, ("v", "all", "revenue"): 2.5}
    assert variant_counts(totals)["v"].clicks == 5 and variant_counts(totals)["v"].revenue == 2.5
    assert variant_counts(totals, "home")["v"].clicks == 3


def test_same_totals_is_exact_for_counts_and_ignores_zeros():
    job = {"exp": {("v", "all", "clicks"): 3.0, ("v", "all", "revenue"): 0.1 + 0.2}}
    assert same_totals(job, {"exp": {("v", "all", "clicks"): 3.0, ("v", "all", "revenue"): 0.3}})
    assert not same_totals(job, {"exp": {("v", "all", "clicks"): 4.0, ("v", "all", "revenue"): 0.3}})
    assert not same_totals(job, {})
    assert same_totals({"exp": {("v", "all", "clicks"): 0.0}, "other": {}}, {})


def test_sponsor_makes_campaigns_with_bids_and_one_budget():
    from transforms.ads import sponsorships
    from transforms.catalog import CatalogItem

    catalog = [CatalogItem(f"i{n}", category="c") for n in range(400)]
    sponsored = sponsorships(sponsor(catalog, campaigns=3, share=0.2, budget=4.0, seed=1))
    assert sponsored == sponsorships(sponsor(catalog, campaigns=3, share=0.2, budget=4.0, seed=1))  # deterministic
    assert len(sponsored) == pytest.approx(80, rel=0.3)
    assert {s.campaign for s in sponsored.values()} == {"c0", "c1", "c2"}
    assert all(0.1 <= s.bid <= 1.0 for s in sponsored.values())
    assert {s.budget for s in sponsored.values() if s.campaign == "c0"} == {4.0}
    assert all(np.isnan(s.budget) for s in sponsored.values() if s.campaign != "c0")
    assert sponsor(catalog, campaigns=0, share=0.2, budget=4.0, seed=1) == catalog


def test_the_ad_slot_has_its_own_random_stream(shoppers):
    user = shoppers.user_ids[0]
    visit = Visit(str(user), 1, START_MS, START_MS + MINUTE_MS)
    home = list_events(shoppers, visit, "r1.home", ["a", "b"], {})
    ads = list_events(shoppers, visit, "r1.ads", ["a", "b"], {}, stream="ads")
    assert home[0]["ts"] == visit.list_ms and ads[0]["ts"] == visit.list_ms + ADS_DELAY_MS
    assert all(e["rec_id"] == "r1.ads" for e in ads)
    assert len({visit_stream(n, kind) for n in range(1000) for kind in ("browse", "home", "ads")}) == 3000  # streams never shared


def test_campaigns_from_the_jobs_hashes_equal_their_recount_from_item_counts():
    day = 19_000 * 86_400_000
    sponsored = {"a": (0.5, "c1"), "b": (2.0, "c1"), "n": (0.25, "")}
    recounted = {day: {("a", "impressions"): 10.0, ("a", "clicks"): 2.0, ("b", "impressions"): 5.0, ("b", "clicks"): 1.0, ("n", "impressions"): 4.0, ("x", "clicks"): 9.0}}
    job = {day: {("c1", "campaign_impressions"): 15.0, ("c1", "campaign_clicks"): 3.0, ("c1", "spend"): 3.0, ("~", "campaign_impressions"): 4.0,
                 ("a", "impressions"): 10.0, ("a", "clicks"): 2.0}}  # per-item fields are not campaigns
    expected = {"c1": {"impressions": 15, "clicks": 3, "ctr": 0.2, "spend": 3.0}, "~": {"impressions": 4, "clicks": 0, "ctr": 0.0, "spend": 0.0}}
    assert campaign_totals(job) == expected
    assert campaign_recount(recounted, sponsored) == expected
    assert not same_totals(campaign_totals(job), campaign_recount({day: {("a", "clicks"): 3.0}}, sponsored))
