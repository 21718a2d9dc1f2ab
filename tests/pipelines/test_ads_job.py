"""The ad slot in the real job: the campaigns' impressions, clicks and spend per day equal a
click-by-click count.  (The ``ads:{user}`` lists, with sponsorships that change mid-stream, are
checked against the reference engine with every other key by test_job's synthetic shop run.)"""

from __future__ import annotations

import dataclasses
import math

import orjson
import pytest

from flowrec.config import Settings
from pipelines.sources import CollectionSource, pack_chunks
from tests.pipelines.jobkit import catalog_lines, dead_letter_reasons, metric_differences, metrics_of, run_job
from tests.transforms.test_attribution import SECRET, random_log
from transforms.ads import CAMPAIGN_MEASURES, NO_CAMPAIGN, campaign_counts, sponsorships
from transforms.attribution import Recount, attribute, recount
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.events import parse_records
from transforms.windows import WindowClock

pytestmark = pytest.mark.flink


# -- spend per campaign -------------------------------------------------------------------------------------


def spend_reference(log: list[dict], catalog: list[CatalogItem], config: ModelConfig, secret: str) -> dict[int, dict[tuple[str, str], float]]:
    """Campaign fields of the ads hashes, counted click by click: each row attributed on its own
    (:func:`transforms.attribution.attribute`, state carried per user), and each ad impression or
    click priced with the catalog as of its window (upserts take effect in their own window)."""
    rows = parse_records(log).events.sorted_by_time()
    clock = WindowClock.of(config)
    upserts = sorted(catalog, key=lambda c: c.ts)
    states: dict = {}
    out: dict[int, dict[tuple[str, str], float]] = {}
    for i in range(len(rows)):
        user = str(rows.user[i])
        result = attribute(states.get(user), user, rows.take(slice(i, i + 1)), config, secret)
        states[user] = result.state
        if not result.ad_counts:
            continue
        window = clock.window_of(int(rows.ts[i]))
        in_effect = {c.item_id: c for c in upserts if clock.window_of(c.ts) <= window}
        for (day, campaign, measure), amount in campaign_counts(result.ad_counts, sponsorships(in_effect.values())).items():
            fields = out.setdefault(day, {})
            fields[(campaign, measure)] = fields.get((campaign, measure), 0.0) + amount
    return out


def ad_catalog(log: list[dict]) -> list[CatalogItem]:
    """The feedback log's items i0-i14: four sponsored from the start (two campaigns and none), and half-way
    a bid raised, a sponsorship ended and a new one begun."""
    start = log[0]["ts"] - 60_000
    middle = log[len(log) // 2]["ts"]
    items = {f"i{n}": CatalogItem(f"i{n}", category="toys", ts=start) for n in range(15)}
    items["i0"] = dataclasses.replace(items["i0"], sponsored=True, bid=0.5, campaign="c1", budget=100.0)
    items["i1"] = dataclasses.replace(items["i1"], sponsored=True, bid=1.25, campaign="c1", budget=100.0)
    items["i2"] = dataclasses.replace(items["i2"], sponsored=True, bid=2.0, campaign="c2")
    items["i3"] = dataclasses.replace(items["i3"], sponsored=True, bid=0.75)
    changes = [
        dataclasses.replace(items["i0"], bid=1.5, ts=middle),
        dataclasses.replace(items["i2"], sponsored=False, ts=middle),
        dataclasses.replace(items["i5"], sponsored=True, bid=3.0, campaign="c2", ts=middle),
    ]
    return list(items.values()) + changes


def campaign_fields(ads_days: dict) -> dict[int, dict[tuple[str, str], float]]:
    return {day: {k: v for k, v in fields.items() if k[1] in CAMPAIGN_MEASURES} for day, fields in ads_days.items()}


def item_fields(ads_days: dict) -> dict[int, dict[tuple[str, str], float]]:
    return {day: {k: v for k, v in fields.items() if k[1] not in CAMPAIGN_MEASURES} for day, fields in ads_days.items()}


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(x.keys() == y.keys() and all(math.isclose(x[k], y[k], rel_tol=1e-9, abs_tol=1e-9) for k in x) for x, y in ((a[d], b[d]) for d in a))


@pytest.mark.parametrize("parallelism", [1, 2])
def test_campaign_spend_equals_a_click_by_click_count(parallelism, redis_url):
    log = sorted(random_log(seed=3, users=12, steps=1500), key=lambda r: r["ts"])
    catalog = ad_catalog(log)
    settings = Settings(parallelism=parallelism, restart_attempts=0, rec_id_secret=SECRET)
    source = CollectionSource(list(pack_chunks([orjson.dumps(r).decode() for r in log], 50)), list(pack_chunks(catalog_lines(catalog), 50)))
    run_job(source, settings, redis_url)
    job = metrics_of(redis_url).ads
    expected = spend_reference(log, catalog, settings.model, SECRET)
    spent = {campaign for fields in expected.values() for (campaign, measure), v in fields.items() if measure == "spend" and v > 0}
    assert spent == {"c1", "c2", NO_CAMPAIGN}, "the log exercised every kind of campaign"
    unchanged = spend_reference(log, catalog[:15], settings.model, SECRET)
    assert not close(unchanged, expected), "the mid-stream catalog changes changed the spend"
    assert close(campaign_fields(job), expected), f"job {campaign_fields(job)} != expected {expected}"
    # Attribution's own per-item fields are untouched by the campaign fields next to them.
    counted = recount(log, settings.model, SECRET)
    assert close(item_fields(job), counted.ads)
    # The rest of attribution's output on this log equals the recount too (the per-minute and experiment
    # hashes, the rejected rows' dead letters), with sponsorships changing in the catalog next to it.
    assert counted.minutes and "exp" in counted.experiments and counted.rejections, "the log exercised nothing"
    metrics = metrics_of(redis_url)
    assert metric_differences(Recount(metrics.minutes, metrics.experiments, {}, []), Recount(counted.minutes, counted.experiments, {}, [])) == []
    assert dead_letter_reasons(redis_url) == sorted(r.reason for r in counted.rejections)
