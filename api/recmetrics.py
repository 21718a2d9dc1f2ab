"""Attribution counts for Prometheus: ``flowrec_rec_*_total{experiment, variant, context}``.

The job keeps the cumulative counts per experiment in Redis
(:mod:`state.metrics`, ``metrics:exp:*``); each scrape of ``/metrics`` reads
them (one index read and one pipelined round trip) and exposes one counter
family per measure.  The counters are the job's absolute totals, so they only
grow, as Prometheus expects; they are exposed per context only (the
``all`` fields are their sums, which Prometheus computes itself).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily

from state.metrics import ALL_CONTEXTS, ALL_MEASURES, read_all_experiment_totals

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


class _Snapshot:
    """A collector over totals read once per scrape."""

    def __init__(self, totals: dict[str, dict[tuple[str, str, str], float]]) -> None:
        self.totals = totals

    def collect(self) -> Iterable[CounterMetricFamily]:
        families = {m: CounterMetricFamily(f"flowrec_rec_{m}", HELP[m], labels=("experiment", "variant", "context")) for m in ALL_MEASURES}
        for experiment in sorted(self.totals):
            for (variant, context, measure), value in sorted(self.totals[experiment].items()):
                if context != ALL_CONTEXTS:
                    families[measure].add_metric((experiment, variant, context), value)
        return list(families.values())


def attribution_exposition(redis_client: Any, namespace: str) -> bytes:
    """The text exposition of the attribution counters (empty families when the job has counted nothing).

    Blocking (a sync Redis client): call it off the event loop.  When Redis
    cannot be read it logs a warning and returns nothing, so ``/metrics``
    still serves the API's own series.
    """
    import redis

    try:
        totals = read_all_experiment_totals(redis_client, namespace)
    except (redis.RedisError, OSError) as exc:
        log.warning("attribution metrics not exposed: Redis read failed (%s)", type(exc).__name__)
        return b""
    registry = CollectorRegistry()
    registry.register(_Snapshot(totals))
    return generate_latest(registry)
