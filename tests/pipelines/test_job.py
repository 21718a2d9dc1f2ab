"""The streaming job on a real PyFlink mini-cluster against a real Redis: its final
Redis content equals the reference engine's (counts exactly, scores within 1e-9)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import redis

from flowrec.config import Settings
from pipelines.sources import CollectionSource, FileReplaySource, pack_chunks
from state.keys import KeyKind, redis_key
from tests.pipelines.jobkit import catalog_lines, differences, event_lines, reference_content, reference_engine_content, results, run_job
from transforms.config import ModelConfig
from transforms.datasets import DatasetMissing, dataset_path, load_taobao_sample
from transforms.events import EventBatch
from transforms.synthetic import generate_shop

pytestmark = pytest.mark.flink


def small_shop(events: int = 3000):
    catalog, stream = generate_shop(users=100, items=80, events=events, seed=5)
    return EventBatch.concat(list(stream)), catalog


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


# The shop's run also carries the ad slot (sponsored items whose sponsorships change mid-stream): one
# job per parallelism proves both, where a plain run and a sponsored run of the same events proved
# the same equality twice.  Runs without sponsored items (every other job test) keep the no-ads case.
@pytest.mark.parametrize("parallelism", [1, 2])
def test_synthetic_shop_equals_reference(parallelism, redis_url):
    """Every key equals the engine's, the ``ads:{user}`` lists included."""
    events, catalog = sponsored_shop()
    settings = Settings(parallelism=parallelism, restart_attempts=0)
    source = CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(catalog_lines(catalog), 50)))
    run_job(source, settings, redis_url)
    job = results(redis_url)
    reference = reference_content(events, catalog, settings)
    assert any(b":rec:" in k for k in job), "the job wrote no user lists"
    assert any(b":sim:" in k for k in job) and any(b":trend:" in k for k in job) and any(b":content:" in k for k in job)
    ads = [k for k in reference if b":ads:" in k]
    assert len(ads) == sum(1 for k in reference if b":rec:" in k), "every scored user has an ads list"
    assert any(b'"item"' in reference[k] for k in ads), "some user was shown an ad"
    assert differences(job, reference) == []
    client = redis.Redis.from_url(redis_url)
    try:
        # Every sink instance adds its counters to the minute's hash too (the dashboard's events/s): they add up.
        minutes = [int(client.hget(key, "events") or 0) for key in client.keys("flowrec:v1:stats:min:*")]
        assert sum(minutes) == int(client.hget("flowrec:v1:stats", "events")) == len(events)
    finally:
        client.close()


@pytest.mark.parametrize("parallelism", [1, 2])
def test_score_interval_equals_reference(parallelism, redis_url):
    """Lists at most once per 30 minutes of event time: many scoring windows hold no events of their own."""
    events, catalog = small_shop()
    settings = Settings(parallelism=parallelism, restart_attempts=0, model=ModelConfig(score_interval_ms=1_800_000))
    source = CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(catalog_lines(catalog), 50)))
    run_job(source, settings, redis_url)
    job = results(redis_url)
    assert any(b":rec:" in k for k in job), "the job wrote no user lists"
    assert differences(job, reference_content(events, catalog, settings)) == []


@pytest.mark.parametrize("parallelism", [1, 2])
def test_learned_blend_equals_reference(parallelism, redis_url):
    """Blend weights learned online per user shard: the job makes the engine's steps at any
    parallelism, so its lists equal the engine's, and its stats show each shard's weights."""
    import redis

    events, catalog = small_shop()
    settings = Settings(parallelism=parallelism, restart_attempts=0, model=ModelConfig(blend_learning=True, blend_margin=0.0))
    source = CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(catalog_lines(catalog), 50)))
    run_job(source, settings, redis_url)
    job = results(redis_url)
    engine, reference = reference_engine_content(events, catalog, settings)
    learned = engine.blend_weights()
    # The shop teaches something: some shard left the configured weights (else this proves little).
    assert {w["setting"] for w in learned.values()} - {"configured"}
    assert any(b":rec:" in k for k in job), "the job wrote no user lists"
    assert differences(job, reference) == []
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stats = client.hgetall(redis_key(KeyKind.STATS, namespace=settings.namespace))
    finally:
        client.close()
    for context in ("home", "cart"):
        for shard, weights in engine.blend_weights(context).items():
            assert stats[f"blend.{context}.{shard}.setting"] == weights["setting"]
            assert float(stats[f"blend.{context}.{shard}.weight_content"]) == pytest.approx(weights["weight_content"])


@pytest.mark.datasets
def test_taobao_sample_replayed_from_file_equals_reference(redis_url, tmp_path: Path):
    try:
        path = dataset_path(Settings().datasets_dir, "taobao-sample")
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    events, catalog = load_taobao_sample(path / "UserBehavior.csv" if path.is_dir() else path)
    # The first 2,000 events in time (nearly every one its own window, most with a new catalog item)
    # keep the run short: the job closes each of those windows in every operator.
    events = events.sorted_by_time().take(slice(0, 2000))
    # Their items (the catalog made from the sample holds each item from its first event on).
    catalog = [c for c in catalog if c.ts <= int(events.ts.max())]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(events.to_jsonl())
    catalog_file = tmp_path / "catalog.jsonl"
    catalog_file.write_text("\n".join(catalog_lines(catalog)) + "\n")
    settings = Settings(parallelism=2, restart_attempts=0)
    run_job(FileReplaySource([events_file], catalog_file, workdir=tmp_path), settings, redis_url)
    job = results(redis_url)
    assert sum(1 for k in job if b":rec:" in k) == len(set(events.user.tolist()))
    assert differences(job, reference_content(events, catalog, settings)) == []
