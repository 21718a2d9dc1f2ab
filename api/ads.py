"""The ad slot of the API (``GET /v1/users/{id}/recommendations?context=ads``).

The job writes each user's ads list (``ads:{user}``: sponsored items ranked by
relevance x bid, relevance floor and purchases applied, see
:mod:`transforms.ads`).  A request re-checks it against the catalog as it is
now, so an ad stops with its sponsorship, its stock or its campaign's budget,
not at the user's next list:

1. one MGET of the user's ads list, profile and global trending;
2. one MGET of the candidates' catalog entries: items no longer sponsored,
   out of stock (``exclude_out_of_stock``), in a denied or not allowed
   category, outside ``category``, in ``exclude`` or bought are dropped, and
   the rest re-ranked by relevance x their current bid (same floor);
3. one HMGET of today's spend of their capped campaigns
   (``metrics:ads:{day}`` field ``"{campaign}|spend"``, UTC day of the API's
   clock): a campaign whose spend has reached its daily budget is skipped.

Every answer carries a ``rec_id`` of context ``ads`` (the stored list's
experiment variant; cold start: the user's current one): a frontend reports
the ads it showed as ``impression`` events with it, and attribution counts
their impressions and clicks per item and campaign (the spend).

Cold start (no ads list: the user has no history yet, or the job has not
scored them since the shop's first sponsored item): the sponsored items
among global trending, with relevance = trending score / top trending score,
the same floor and filters, ranked by relevance x bid, ``cold_start: true``.
When nothing is left the list is empty and ``empty_reason`` says why:
``no_sponsored_items`` (no candidate is a sponsored, servable item),
``none_relevant`` (the user's list is empty: no sponsored item passes the
floor for them) or ``budgets_spent`` (every candidate's campaign has spent
its budget today).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from api.ranking import in_category
from api.recids import Assignment, RecIdIssuer, stored_assignment
from state.keys import KeyKind
from state.metrics import ads_field, day_start
from transforms.ads import NO_CAMPAIGN, SPEND, AdPick, ad_reason, campaign_budgets, popularity_relevance, rank_ads, sponsorship, within_budget
from transforms.catalog import CatalogItem, validate_catalog_record
from transforms.config import ModelConfig
from transforms.scoring import ScoredItem

log = logging.getLogger(__name__)


def stored_relevance(raw: bytes | None) -> tuple[int, dict[str, float], Assignment | None] | None:
    """``(ts, {item: relevance}, (experiment, variant) that scored it)`` of a stored ads list; None when there is none.

    An unreadable value reads as an empty list (logged), never a 500.
    """
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
        items = [entry["item"] for entry in data["items"]]
        relevance = [float(r) for r in data["relevance"]]
        if len(items) != len(relevance):
            raise ValueError("items and relevance differ in length")
        return int(data["ts"]), dict(zip(items, relevance)), stored_assignment(data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("ignoring unreadable ads list: %s", exc)
        return 0, {}, None


def catalog_entry(raw: bytes | None) -> CatalogItem | None:
    """A stored catalog entry read with the catalog's one rule (absent or invalid: None)."""
    if raw is None:
        return None
    try:
        item, _ = validate_catalog_record(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None
    return item


def servable(entry: CatalogItem | None, config: ModelConfig, category: str | None) -> bool:
    """A sponsored item the job's filters would still let through (stock, allow/deny lists, ``category``)."""
    if entry is None or not entry.sponsored:
        return False
    if config.exclude_out_of_stock and not entry.in_stock:
        return False
    top = entry.top_category
    if config.allow_categories and top not in config.allow_categories:
        return False
    if top in config.deny_categories:
        return False
    return not category or in_category(entry.category, category)


class AdsLookup:
    """The three reads of an ads request over the API's pipelined Redis connection."""

    def __init__(self, lookups: Any, config: ModelConfig, rec_ids: RecIdIssuer) -> None:
        self.lookups = lookups
        self.config = config
        self.rec_ids = rec_ids

    async def body(self, user_id: str, n: int, category: str | None, skip: set[str], now_ms: int) -> dict[str, Any]:
        """The answer to `GET /v1/users/{user_id}/recommendations?context=ads` (see the module docstring)."""
        raw_ads, raw_profile, raw_trend = await self.lookups.mget([(KeyKind.ADS, user_id), (KeyKind.PROFILE, user_id), (KeyKind.TRENDING_GLOBAL, None)])
        stored = stored_relevance(raw_ads)
        cold = stored is None
        if cold:
            ts, trending = _trending(raw_trend)
            relevance = popularity_relevance(trending)
            assignment = None  # the user's current variant
        else:
            ts, relevance, assignment = stored
        purchased = _purchased(raw_profile)
        rec_id = await self.rec_ids.issue(user_id, "ads", assignment)
        out: dict[str, Any] = {"user_id": user_id, "context": "ads", "ts": ts, "cold_start": cold, "rec_id": rec_id, "items": []}
        if not relevance:
            out["empty_reason"] = "none_relevant" if not cold else "no_sponsored_items"
            return out
        candidates = list(relevance)
        entries = dict(zip(candidates, (catalog_entry(raw) for raw in await self.lookups.mget([(KeyKind.ITEM, i) for i in candidates]))))
        ok = {i: e for i, e in entries.items() if i not in skip and servable(e, self.config, category)}
        picks = rank_ads({i: r for i, r in relevance.items() if i in ok}, {i: e.bid for i, e in ok.items()}, purchased, self.config.ads_relevance_floor, len(ok))
        if not picks:
            out["empty_reason"] = "no_sponsored_items"
            return out
        sponsorships = {p.item: sponsorship(ok[p.item]) for p in picks}
        budgets = campaign_budgets(sponsorships.values())
        spend = await self._spend(sorted(budgets), now_ms)
        served = within_budget(picks, {i: s.campaign for i, s in sponsorships.items()}, budgets, spend)[:n]
        if not served:
            out["empty_reason"] = "budgets_spent"
            return out
        out["items"] = [_ad_out(p, sponsorships[p.item].campaign, cold) for p in served]
        return out

    async def _spend(self, campaigns: list[str], now_ms: int) -> dict[str, float]:
        """Today's spend of ``campaigns`` (absent: 0)."""
        if not campaigns:
            return {}
        values = await self.lookups.hmget(KeyKind.METRICS_ADS, str(day_start(now_ms)), [ads_field(c, SPEND) for c in campaigns])
        spend: dict[str, float] = {}
        for campaign, raw in zip(campaigns, values):
            try:
                spend[campaign] = float(raw) if raw is not None else 0.0
            except ValueError:
                log.warning("ignoring unreadable spend of campaign %s: %r", campaign, raw[:50])
        return spend


def _trending(raw: bytes | None) -> tuple[int, list[tuple[str, float]]]:
    if raw is None:
        return 0, []
    try:
        data = orjson.loads(raw)
        return int(data["ts"]), [(entry["item"], float(entry["score"])) for entry in data["items"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring unreadable trending list: %s", exc)
        return 0, []


def _purchased(raw: bytes | None) -> set[str]:
    if raw is None:
        return set()
    try:
        bought = orjson.loads(raw).get("purchased") or []
    except (orjson.JSONDecodeError, AttributeError):
        return set()
    return {i for i in bought if isinstance(i, str)} if isinstance(bought, list) else set()


def _ad_out(pick: AdPick, campaign: str, cold: bool) -> dict[str, Any]:
    out = ScoredItem(pick.item, pick.score, ad_reason(cold)).to_dict()
    out["campaign"] = None if campaign == NO_CAMPAIGN else campaign
    out["bid"] = pick.bid
    out["relevance"] = pick.relevance
    return out
