"""Attribution counts for Prometheus: ``flowrec_rec_*_total{experiment, variant, context}`` and
``flowrec_campaign_*_total{campaign}``.

The job keeps the cumulative counts per experiment in Redis
(:mod:`state.metrics`, ``metrics:exp:*``); each scrape of ``/metrics`` reads
them (one index read and one pipelined round trip) and exposes one counter
family per measure.  The counters are the job's absolute totals, so they only
grow, as Prometheus expects; they are exposed per context only (the
``all`` fields are their sums, which Prometheus computes itself).

Campaigns (impressions, clicks and spend of their sponsored items) are read
from the ads hash of the current UTC day of the API's clock
(``metrics:ads:{day}``, one more round trip), the day the ad slot checks
budgets against.  They count since midnight UTC, so they drop to zero once a
day: Prometheus takes that as a counter reset, and ``rate``/``increase`` stay
right across it.  Campaign ``~`` is the sponsored items without a campaign.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from state.metrics import ALL_CONTEXTS, ALL_MEASURES, read_ads_day, read_all_experiment_totals
from transforms.ads import CAMPAIGN_CLICKS, CAMPAIGN_IMPRESSIONS, SPEND

log = logging.getLogger(__name__)

HELP = {
    "impressions": "Items shown in served lists (each rec_id and item once)",
    "clicks": "Clicks attributed to a shown list",
    "carts": "Adds to cart attributed to a shown list",
    "purchases": "Purchases attributed to a shown list",
    "revenue": "Revenue (price x quantity) of attributed purchases",
    "choices": "Outcomes after a shown list (live HR@k denominator)",
    "hits": "Outcomes on an item of the latest shown list (live HR@k numerator)",
}


# The campaign measures of the daily ads hash, and their Prometheus family names and help.
CAMPAIGN_FAMILIES = {
    CAMPAIGN_IMPRESSIONS: ("flowrec_campaign_impressions", "Ad impressions of the campaign's sponsored items since midnight UTC"),
    CAMPAIGN_CLICKS: ("flowrec_campaign_clicks", "Attributed ad clicks on the campaign's sponsored items since midnight UTC"),
    SPEND: ("flowrec_campaign_spend", "Spend (clicks x bid) of the campaign since midnight UTC"),
}


class _Snapshot:
    """A collector over totals read once per scrape."""

    def __init__(self, totals: dict[str, dict[tuple[str, str, str], float]], ads_day: dict[tuple[str, str], float]) -> None:
        self.totals = totals
        self.ads_day = ads_day

    def collect(self) -> Iterable[CounterMetricFamily]:
        families = {m: CounterMetricFamily(f"flowrec_rec_{m}", HELP[m], labels=("experiment", "variant", "context")) for m in ALL_MEASURES}
        for experiment in sorted(self.totals):
            for (variant, context, measure), value in sorted(self.totals[experiment].items()):
                if context != ALL_CONTEXTS:
                    families[measure].add_metric((experiment, variant, context), value)
        campaigns = {m: CounterMetricFamily(name, text, labels=("campaign",)) for m, (name, text) in CAMPAIGN_FAMILIES.items()}
        for (name, measure), value in sorted(self.ads_day.items()):
            if measure in campaigns:  # the hash's other fields are per item
                campaigns[measure].add_metric((name,), value)
        return list(families.values()) + list(campaigns.values())


def attribution_exposition(redis_client: Any, namespace: str, now_ms: int) -> bytes:
    """The text exposition of the attribution and campaign counters (empty families when the job has counted
    nothing); campaigns of the UTC day holding ``now_ms``.

    Blocking (a sync Redis client): call it off the event loop.  When Redis
    cannot be read it logs a warning and returns nothing, so ``/metrics``
    still serves the API's own series.
    """
    import redis

    try:
        totals = read_all_experiment_totals(redis_client, namespace)
        ads_day = read_ads_day(redis_client, namespace, now_ms)
    except (redis.RedisError, OSError) as exc:
        log.warning("attribution metrics not exposed: Redis read failed (%s)", type(exc).__name__)
        return b""
    registry = CollectorRegistry()
    registry.register(_Snapshot(totals, ads_day))
    return generate_latest(registry)
