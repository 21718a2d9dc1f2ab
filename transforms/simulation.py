"""The pure parts of ``flowrec simulate``: when shoppers visit, the events a visit makes, and the verdict.

A simulated shopper's *visit* (:func:`visit_schedule`) is organic browsing at
``browse_ms`` (views ``view_gap_ms`` apart, by taste: :meth:`Shoppers.browse`)
followed at ``list_ms = browse_ms + list_delay_ms`` by a look at their home
list; the delay gives the job time to learn from the browsing first.  What the
shopper does with the list (:func:`list_events`): an ``impression`` of it at
``list_ms``, then each reaction of :meth:`Shoppers.respond` a few seconds
apart, every one carrying the list's ``rec_id`` and the item's position (a
purchase also its price).

:func:`sponsor` makes some of the shop's items ads (campaigns with bids and, for
the first campaign, a tight daily budget); :func:`list_events` with
``stream="ads"`` is a visit's look at the ad slot (``context=ads``) half a
second after the home list, with its own random stream.  :func:`campaign_totals` reads
the job's per-campaign counts from its daily ads hashes, and
:func:`campaign_recount` counts the same from an offline recount's
per-item ad counts and the bids, the plain way.

:func:`summary` turns per-variant totals (as the job keeps them in Redis,
:func:`state.metrics.read_experiment_totals`) into the result ``flowrec
simulate`` prints, with the statistics of :func:`transforms.experiments.compare`;
:func:`same_totals` compares two sets of totals (the job's and an offline
recount's), exactly for counts and to float rounding for revenue.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from transforms.catalog import CatalogItem
from transforms.experiments import VariantCounts, compare
from transforms.shoppers import Reaction, Shoppers

SECOND_MS = 1000
# Reactions to a list follow it by these delays (click, then cart, then purchase of the same item).
REACTION_DELAY_MS = {"click": 3 * SECOND_MS, "add_to_cart": 10 * SECOND_MS, "purchase": 20 * SECOND_MS}
# Two clicks on one list are this far apart (the shopper reads down the list).
NEXT_CLICK_MS = 2 * SECOND_MS
ALL_CONTEXTS = "all"
HOME_CONTEXT = "home"
# The ad slot is looked at this long after the home list.
ADS_DELAY_MS = 500
# The random stream of a visit's browsing, home list and ad slot (Shoppers.rng(user, stream)); the ad
# slot's are numbered apart, so adding it changed no draw of the other two.
def visit_stream(visit_number: int, kind: str) -> int:
    return {"browse": 2 * visit_number, "home": 2 * visit_number + 1, "ads": (1 << 20) + visit_number}[kind]



@dataclass(frozen=True)
class Visit:
    """One visit of a shopper: organic browsing from ``browse_ms``, the home list at ``list_ms``."""

    user: str
    number: int  # the shopper's visits are numbered 0, 1, ... (the visit's random stream)
    browse_ms: int
    list_ms: int


def visit_schedule(users: Sequence[str], start_ms: int, end_ms: int, visits_per_shopper: float, list_delay_ms: int, seed: int) -> list[Visit]:
    """Every visit in ``[start_ms, end_ms)``, ordered by ``list_ms``.

    Each shopper makes ``Poisson(visits_per_shopper)`` visits, browsing at
    uniform times in ``[start_ms, end_ms - list_delay_ms)`` so every list is
    looked at before ``end_ms``.  Deterministic for a seed.
    """
    if end_ms - list_delay_ms <= start_ms:
        raise ValueError("the simulated period must be longer than the list delay")
    rng = np.random.default_rng([seed, 0x5157])
    counts = rng.poisson(visits_per_shopper, size=len(users))
    visits = []
    for user, count in zip(users, counts):
        times = np.sort(rng.integers(start_ms, end_ms - list_delay_ms, size=count))
        visits += [Visit(str(user), k, int(t), int(t) + list_delay_ms) for k, t in enumerate(times)]
    visits.sort(key=lambda v: (v.list_ms, v.user, v.number))
    return visits


def browse_events(shoppers: Shoppers, visit: Visit, view_gap_ms: int) -> list[dict[str, Any]]:
    """The visit's organic views, ``view_gap_ms`` apart from ``browse_ms`` (events as the API takes them)."""
    rng = shoppers.rng(visit.user, visit_stream(visit.number, "browse"))
    return [{"user_id": visit.user, "item_id": item, "event_type": "view", "ts": visit.browse_ms + k * view_gap_ms} for k, item in enumerate(shoppers.browse(visit.user, rng))]


def list_events(shoppers: Shoppers, visit: Visit, rec_id: str, items: Sequence[str], prices: Mapping[str, float], stream: str = "home") -> list[dict[str, Any]]:
    """The impression of the list the visit was shown (``stream``: the home list at ``list_ms``, or the ad
    slot ``ADS_DELAY_MS`` later) and the shopper's reactions to it, in time order."""
    if not items:
        return []
    shown_ms = visit.list_ms + (ADS_DELAY_MS if stream == "ads" else 0)
    positions = list(range(len(items)))
    reactions: list[Reaction] = shoppers.respond(visit.user, items, positions, shoppers.rng(visit.user, visit_stream(visit.number, stream)))
    events = [{"user_id": visit.user, "event_type": "impression", "rec_id": rec_id, "items": list(items), "positions": positions, "ts": shown_ms}]
    clicks = 0
    for reaction in reactions:
        if reaction.event_type == "click":
            clicks += 1
        ts = shown_ms + (clicks - 1) * NEXT_CLICK_MS + REACTION_DELAY_MS[reaction.event_type]
        event = {"user_id": visit.user, "item_id": reaction.item, "event_type": reaction.event_type, "rec_id": rec_id, "position": reaction.position, "ts": ts}
        if reaction.event_type == "purchase" and reaction.item in prices:
            event["price"] = prices[reaction.item]
        events.append(event)
    return sorted(events, key=lambda e: e["ts"])


def variant_counts(totals: Mapping[tuple[str, str, str], float], context: str = ALL_CONTEXTS) -> dict[str, VariantCounts]:
    """Per variant, the counts of ``context`` (default: all contexts) from ``{(variant, context, measure): value}``."""
    measures: dict[str, dict[str, float]] = {}
    for (variant, where, measure), value in totals.items():
        if where == context:
            measures.setdefault(variant, {})[measure] = value
    return {
        variant: VariantCounts(
            impressions=int(m.get("impressions", 0)),
            clicks=int(m.get("clicks", 0)),
            carts=int(m.get("carts", 0)),
            purchases=int(m.get("purchases", 0)),
            revenue=float(m.get("revenue", 0.0)),
        )
        for variant, m in measures.items()
    }


def summary(totals: Mapping[tuple[str, str, str], float], variants: Sequence[str], control: str, recount_equal: bool, alpha: float = 0.05, context: str = ALL_CONTEXTS) -> dict[str, Any]:
    """The result of a simulation: ``{"variants": {NAME: {...}}, "p_value", "winner", "recount_equal"}``.

    Per variant: impressions, clicks, ``ctr`` with its Wilson 95% interval
    ``ctr_ci``, purchases and ``conversion`` (purchases per impression), of
    ``context`` (default: over all contexts).  ``p_value``: the two-sided pooled two-proportion z-test of
    CTR against ``control``, for the non-control variant with the highest CTR
    (with two variants: the one comparison).  ``winner``: as
    :func:`transforms.experiments.compare` decides at ``alpha`` (None while
    nothing is significant).
    """
    result = compare(variants, control, variant_counts(totals, context), alpha)
    out: dict[str, Any] = {}
    challengers = [row for row in result.variants if row.name != control]
    for row in result.variants:
        out[row.name] = {
            "impressions": row.counts.impressions,
            "clicks": row.counts.clicks,
            "ctr": row.ctr,
            "ctr_ci": list(row.ctr_ci),
            "purchases": row.counts.purchases,
            "conversion": row.conversion,
        }
    best = max(challengers, key=lambda row: (row.ctr, row.name)) if challengers else None
    return {"variants": out, "p_value": None if best is None else best.p_value, "winner": result.winner, "recount_equal": recount_equal}


def same_totals(a: Mapping[Any, Mapping[Any, float]], b: Mapping[Any, Mapping[Any, float]]) -> bool:
    """True when two ``{key: {field: value}}`` maps hold the same non-zero values (revenue sums to float rounding)."""
    keys = {k for k, fields in a.items() if any(fields.values())} | {k for k, fields in b.items() if any(fields.values())}
    for key in keys:
        x, y = a.get(key, {}), b.get(key, {})
        for field in set(x) | set(y):
            u, v = float(x.get(field, 0.0)), float(y.get(field, 0.0))
            if not math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-6):
                return False
    return True


# -- the ad slot ---------------------------------------------------------------------------------


def sponsor(catalog: Sequence[CatalogItem], campaigns: int, share: float, budget: float, seed: int) -> list[CatalogItem]:
    """``catalog`` with about ``share`` of its items sponsored, spread over campaigns ``c0 .. c{campaigns-1}``.

    Bids are uniform in [0.1, 1.0] (two decimals); campaign ``c0`` has the daily
    ``budget`` (so the run shows the slot stop serving it), the others none.
    Deterministic for a seed; ``campaigns`` 0 returns the catalog as it is.
    """
    if campaigns <= 0:
        return list(catalog)
    rng = np.random.default_rng([seed, 0xAD5])
    chosen = rng.random(len(catalog)) < share
    out = []
    for k, (item, pick) in enumerate(zip(catalog, chosen)):
        if pick:
            campaign = f"c{k % campaigns}"
            bid = round(float(rng.uniform(0.1, 1.0)), 2)
            item = dataclasses.replace(item, sponsored=True, bid=bid, campaign=campaign, budget=budget if campaign == "c0" else math.nan)
        out.append(item)
    return out


CAMPAIGN_MEASURES = {"campaign_impressions": "impressions", "campaign_clicks": "clicks", "spend": "spend"}


def _campaign_rows(sums: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    rows = {}
    for campaign, m in sorted(sums.items()):
        impressions, clicks = int(m.get("impressions", 0)), int(m.get("clicks", 0))
        rows[campaign] = {"impressions": impressions, "clicks": clicks, "ctr": clicks / impressions if impressions else 0.0, "spend": float(m.get("spend", 0.0))}
    return rows


def campaign_totals(days: Mapping[int, Mapping[tuple[str, str], float]]) -> dict[str, dict[str, float]]:
    """Per campaign over ``days`` (the job's daily ads hashes, :func:`state.metrics.read_ads_day`):
    ``{"impressions", "clicks", "ctr", "spend"}``.  The hashes' per-item fields are skipped."""
    sums: dict[str, dict[str, float]] = {}
    for fields in days.values():
        for (name, measure), value in fields.items():
            if measure in CAMPAIGN_MEASURES:
                m = sums.setdefault(name, {})
                m[CAMPAIGN_MEASURES[measure]] = m.get(CAMPAIGN_MEASURES[measure], 0.0) + value
    return _campaign_rows(sums)


def campaign_recount(ads: Mapping[int, Mapping[tuple[str, str], float]], sponsored: Mapping[str, tuple[float, str]]) -> dict[str, dict[str, float]]:
    """:func:`campaign_totals` counted offline: from a recount's per-item ad counts
    (:attr:`transforms.attribution.Recount.ads`) and each sponsored item's fixed ``(bid, campaign)``
    (``"~"`` for none): a campaign's impressions and clicks are its items', its spend their clicks times bids."""
    sums: dict[str, dict[str, float]] = {}
    for fields in ads.values():
        for (item, measure), value in fields.items():
            if item not in sponsored:
                continue
            bid, campaign = sponsored[item]
            m = sums.setdefault(campaign or "~", {})
            m[measure] = m.get(measure, 0.0) + value
            if measure == "clicks":
                m["spend"] = m.get("spend", 0.0) + value * bid
    return _campaign_rows(sums)
