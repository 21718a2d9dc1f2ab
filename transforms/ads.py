"""The ad slot: which sponsored items a user is shown, in which order, and what their clicks cost.

A catalog item may be sponsored (:class:`transforms.catalog.CatalogItem`
``sponsored``, ``bid`` = cost per click, optional ``campaign`` and the
campaign's daily ``budget``).  For a user, each sponsored item ``j`` has a
*relevance*

    ``rel(j) = s(j) / max_i s(i)``

where ``s`` is the user's own blended score from the scorer
(:func:`transforms.scoring.score_users`; the maximum runs over every item the
user could be recommended, so ``rel`` is 1 for the top of their home list and
in [0, 1]).  Sponsored items are ranked by ``rel(j) * bid(j)`` (ties by item
id), keeping only those with ``rel(j) >= ads_relevance_floor`` (a high bid
buys no slot in front of a user the item means nothing to), never an item the
user bought (whatever ``repeat_purchase_categories`` says: an ad for what one
just bought wastes the advertiser's money), at most ``ads_n`` of them
(:class:`transforms.config.ModelConfig`).  An item the scorer never proposes
to the user (not in any component's candidates, out of stock, a denied
category) has no relevance and is not shown.

A user with no list yet (cold start) gets the same ranking with trending in
place of the blend: ``rel(j) = trend(j) / max_i trend(i)``
(:func:`popularity_relevance`), same floor, same filters.

Budgets are per campaign and per day (UTC days of event time,
:func:`day_start_ms`): a campaign's spend for a day is the sum, over
attributed clicks on its items' ads that day, of the clicked item's bid at
click time (:func:`campaign_day_totals`).  A campaign whose spend has reached
its budget is not served for the rest of the day (:func:`within_budget`); ads
already on screen can still be clicked, so spend may overshoot the budget by
the clicks on them.  Items of one campaign that name different budgets: the
smallest one counts (:func:`campaign_budgets`).  Sponsored items without a
campaign count their spend under :data:`NO_CAMPAIGN` and have no cap.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Collection, Iterable, Mapping, NamedTuple, Sequence

from transforms.reasons import Reason, reason

if TYPE_CHECKING:  # the catalog module imports the scorer (through experiments), which imports this one
    from transforms.catalog import CatalogItem

DAY_MS = 24 * 3600 * 1000
# The campaign of sponsored items that name none (not a valid id, so no real campaign collides).
NO_CAMPAIGN = "~"
# Per-campaign measures of a day (fields "{campaign}|{measure}" of the metrics:ads hash, see
# state.metrics): named apart from the per-item "impressions" and "clicks", so a campaign
# whose id is also an item id cannot mix with that item's counts.
CAMPAIGN_IMPRESSIONS = "campaign_impressions"
CAMPAIGN_CLICKS = "campaign_clicks"
SPEND = "spend"
CAMPAIGN_MEASURES = (CAMPAIGN_IMPRESSIONS, CAMPAIGN_CLICKS, SPEND)
# The reason every ad carries; a cold-start ad notes that the user has no history yet.
SPONSORED = reason("sponsored")
SPONSORED_COLD = reason("sponsored", note="no_history")


class AdPick(NamedTuple):
    """One ad for one user: ``score = relevance * bid``."""

    item: str
    score: float
    relevance: float
    bid: float


class Sponsorship(NamedTuple):
    """What the ad slot needs of a sponsored catalog item (``budget`` NaN: the campaign has no cap)."""

    bid: float
    campaign: str
    budget: float


def sponsorship(item: CatalogItem) -> Sponsorship | None:
    """The item's sponsorship, or None when it is not sponsored."""
    if not item.sponsored:
        return None
    return Sponsorship(item.bid, item.campaign or NO_CAMPAIGN, item.budget)


def sponsorships(items: Iterable[CatalogItem]) -> dict[str, Sponsorship]:
    """``item -> Sponsorship`` of the sponsored items among ``items``."""
    return {item.item_id: s for item in items if (s := sponsorship(item)) is not None}


def sponsored_bids(items: Iterable[CatalogItem]) -> dict[str, float]:
    """``item -> bid`` of the sponsored items among ``items`` (what the scorer ranks ads with)."""
    return {item.item_id: item.bid for item in items if item.sponsored}


def rank_ads(relevance: Mapping[str, float], bids: Mapping[str, float], purchased: Collection[str], floor: float, n: int) -> list[AdPick]:
    """The user's ads: sponsored items (those in ``bids``) with ``relevance >= floor``, not in
    ``purchased``, with a positive ``relevance * bid``, best ``n`` by that product then item id."""
    picks = []
    for item, rel in relevance.items():
        bid = bids.get(item)
        if bid is None or rel < floor or item in purchased:
            continue
        score = rel * bid
        if score > 0:
            picks.append(AdPick(item, score, rel, bid))
    picks.sort(key=lambda p: (-p.score, p.item))
    return picks[:n]


def popularity_relevance(trending: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Cold-start relevance: each trending item's score over the top score (positive scores only)."""
    top = max((score for _, score in trending), default=0.0)
    if not top > 0:
        return {}
    return {item: score / top for item, score in trending if score > 0}


def campaign_budgets(sponsorships: Iterable[Sponsorship]) -> dict[str, float]:
    """Each campaign's daily budget: the smallest budget its items give (campaigns with none are uncapped, absent)."""
    out: dict[str, float] = {}
    for s in sponsorships:
        if s.campaign != NO_CAMPAIGN and not math.isnan(s.budget):
            out[s.campaign] = min(out.get(s.campaign, math.inf), s.budget)
    return out


def exhausted(budgets: Mapping[str, float], spend: Mapping[str, float]) -> set[str]:
    """Campaigns whose spend today has reached their budget (a budget of 0 is spent from the start)."""
    return {campaign for campaign, budget in budgets.items() if spend.get(campaign, 0.0) >= budget}


def within_budget(picks: Sequence[AdPick], campaign_of: Mapping[str, str], budgets: Mapping[str, float], spend: Mapping[str, float]) -> list[AdPick]:
    """``picks`` without the items of campaigns whose budget is spent (order kept)."""
    spent = exhausted(budgets, spend)
    return [p for p in picks if campaign_of.get(p.item, NO_CAMPAIGN) not in spent]


def day_start_ms(ts_ms: int) -> int:
    """Start of the UTC day holding ``ts_ms`` (the unit of budgets and of the ``metrics:ads`` key)."""
    return ts_ms // DAY_MS * DAY_MS


def ad_reason(cold_start: bool) -> Reason:
    return SPONSORED_COLD if cold_start else SPONSORED


def campaign_counts(ad_counts: Mapping[tuple[int, str, str], float], sponsored: Mapping[str, Sponsorship]) -> dict[tuple[int, str, str], float]:
    """Per ``(day_ms, campaign, measure)``, what attributed ad counts add to the campaigns.

    ``ad_counts`` maps ``(day_ms, item, "impressions" | "clicks")`` to counts
    (attribution's per-item ad counts, :mod:`transforms.attribution`);
    ``sponsored`` is the sponsorship of each item at the time of those counts.
    An item's impressions add to its campaign's ``campaign_impressions``, its
    clicks to ``campaign_clicks`` and ``clicks * bid`` to ``spend``; items
    not in ``sponsored`` add nothing.
    """
    out: dict[tuple[int, str, str], float] = {}
    for (day, item, measure), amount in ad_counts.items():
        s = sponsored.get(item)
        if s is None:
            continue
        if measure == "impressions":
            out[(day, s.campaign, CAMPAIGN_IMPRESSIONS)] = out.get((day, s.campaign, CAMPAIGN_IMPRESSIONS), 0.0) + amount
        elif measure == "clicks":
            out[(day, s.campaign, CAMPAIGN_CLICKS)] = out.get((day, s.campaign, CAMPAIGN_CLICKS), 0.0) + amount
            out[(day, s.campaign, SPEND)] = out.get((day, s.campaign, SPEND), 0.0) + amount * s.bid
    return out
