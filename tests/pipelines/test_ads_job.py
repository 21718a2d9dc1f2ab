"""The ad slot in the real job: with sponsored items in the catalog (and sponsorships that change
mid-stream), the job's ``ads:{user}`` lists, like every other key, equal the reference engine's."""

from __future__ import annotations

import dataclasses

import pytest

from flowrec.config import Settings
from pipelines.sources import CollectionSource, pack_chunks
from tests.pipelines.jobkit import catalog_lines, differences, event_lines, reference_content, results, run_job
from tests.pipelines.test_job import small_shop

pytestmark = pytest.mark.flink


def sponsored_shop():
    """The small shop with every 7th item sponsored (bids 0.5-3.0, two campaigns), then, half-way
    through the events, one sponsorship ended, one bid raised and one item newly sponsored."""
    events, catalog = small_shop()
    middle = int(events.sorted_by_time().ts[len(events) // 2])
    sponsored = []
    for k, item in enumerate(catalog):
        if k % 7 == 0:
            item = dataclasses.replace(item, sponsored=True, bid=0.5 + (k % 6) * 0.5, campaign=f"c{k % 2}", budget=100.0)
        sponsored.append(item)
    chosen = [item for item in sponsored if item.sponsored]
    updates = [
        dataclasses.replace(chosen[0], sponsored=False, ts=middle),
        dataclasses.replace(chosen[1], bid=chosen[1].bid * 4, ts=middle),
        dataclasses.replace(sponsored[3], sponsored=True, bid=2.5, ts=middle),
    ]
    return events, sponsored + updates


@pytest.mark.parametrize("parallelism", [1, 2])
def test_ads_lists_equal_reference(parallelism, redis_url):
    events, catalog = sponsored_shop()
    settings = Settings(parallelism=parallelism, restart_attempts=0)
    source = CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(catalog_lines(catalog), 50)))
    run_job(source, settings, redis_url)
    job = results(redis_url)
    reference = reference_content(events, catalog, settings)
    ads = [k for k in reference if b":ads:" in k]
    assert len(ads) == sum(1 for k in reference if b":rec:" in k), "every scored user has an ads list"
    assert any(b'"item"' in reference[k] for k in ads), "some user was shown an ad"
    assert differences(job, reference) == []
