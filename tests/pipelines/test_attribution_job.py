"""Attribution in the real job: the metrics hashes in Redis equal the independent recount of the raw
event log, at parallelism 1 and 2, and after a stop with savepoint and a restore mid-stream."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import redis

from flowrec.config import Settings
from pipelines.sources import CollectionSource, FileReplaySource, pack_chunks
from state.keys import KeyKind, redis_key
from tests.pipelines.jobkit import counters, dead_letter_reasons, events_counted, metric_differences, metrics_of, run_job, run_until_savepoint
from tests.transforms.test_attribution import SECRET, random_log
from transforms.attribution import recount
from transforms.events import parse_records

pytestmark = pytest.mark.flink


def feedback_log(seed: int, users: int = 30, steps: int = 1500) -> list[dict]:
    return sorted(random_log(seed, users=users, steps=steps), key=lambda r: r["ts"])


def out_of_order(log: list[dict], seed: int, within_ms: int) -> list[dict]:
    """``log`` reordered: records less than ``within_ms`` apart in event time may swap."""
    rng = random.Random(seed)
    return [r for _, r in sorted(((r["ts"] + rng.uniform(0, within_ms), r) for r in log), key=lambda pair: pair[0])]


# In order at parallelism 1 and 2, the same holds for another log in
# tests/pipelines/test_ads_job.py::test_campaign_spend_equals_a_click_by_click_count.
@pytest.mark.parametrize("parallelism, disorder_ms", [(2, 90)], ids=["p2-out-of-order"])
def test_metrics_equal_the_recount(parallelism, disorder_ms, redis_url):
    """Out of order by less than max_out_of_orderness_ms (100): every row counted once, as in the recount."""
    log = feedback_log(seed=parallelism)
    if disorder_ms:
        log = out_of_order(log, seed=5, within_ms=disorder_ms)
        assert log != feedback_log(seed=parallelism)
    settings = Settings(parallelism=parallelism, restart_attempts=0, rec_id_secret=SECRET)
    lines = [orjson.dumps(r).decode() for r in log]
    run_job(CollectionSource(list(pack_chunks(lines, 50))), settings, redis_url)
    expected = recount(log, settings.model, SECRET)
    job = metrics_of(redis_url)
    assert expected.minutes and expected.ads and "exp" in expected.experiments, "the log exercised nothing"
    assert metric_differences(job, expected) == []
    assert dead_letter_reasons(redis_url) == sorted(r.reason for r in expected.rejections)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_impressions_read_after_their_clicks_are_attributed_late(parallelism, redis_url):
    """Every impression is read 20 minutes of event time after it was shown (a spool file read late), so the
    watermark has passed it and the clicks it explains came first; 20 minutes is within the bound
    (attribution_window_ms, 30 minutes).  The counts still equal the recount of the log."""
    log = feedback_log(seed=11, users=20, steps=1200)
    delay = 20 * 60_000
    late = sorted(log, key=lambda r: r["ts"] + (delay if r["event_type"] == "impression" else 0))
    settings = Settings(parallelism=parallelism, restart_attempts=0, rec_id_secret=SECRET)
    run_job(CollectionSource(list(pack_chunks([orjson.dumps(r).decode() for r in late], 10))), settings, redis_url)
    stats = counters(redis_url)
    assert stats.get("attribution_late", 0) > 0 and stats.get("attribution_replays", 0) > 0, f"nothing arrived late: {stats}"
    assert stats.get("attribution_too_late", 0) == 0
    expected = recount(log, settings.model, SECRET)
    assert expected.minutes and expected.ads
    assert metric_differences(metrics_of(redis_url), expected) == []
    assert dead_letter_reasons(redis_url) == sorted(r.reason for r in expected.rejections)


def test_attribution_off_writes_no_metrics(redis_url):
    log = feedback_log(seed=3, users=10, steps=300)
    settings = Settings(parallelism=1, restart_attempts=0, rec_id_secret=SECRET, attribution=False)
    run_job(CollectionSource(list(pack_chunks([orjson.dumps(r).decode() for r in log], 50))), settings, redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        assert int(client.hget(redis_key(KeyKind.STATS), "events")) == len(parse_records(log).events)
        assert client.keys("flowrec:v1:metrics:*") == [] and dead_letter_reasons(redis_url) == []
    finally:
        client.close()


def test_stop_with_savepoint_and_restore_counts_each_event_once(redis_url, tmp_path: Path):
    log = feedback_log(seed=7, users=40, steps=3000)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in log))
    settings = Settings(parallelism=2, restart_attempts=0, rec_id_secret=SECRET, checkpoint_dir=str(tmp_path / "checkpoints"))
    source = FileReplaySource([events_file], chunk_size=10, workdir=tmp_path / "replay")

    savepoint = run_until_savepoint(source, settings, redis_url, tmp_path / "savepoints", lambda client: events_counted(client) >= 800)
    client = redis.Redis.from_url(redis_url)
    stats = redis_key(KeyKind.STATS)
    processed = int(client.hget(stats, "events"))
    assert 0 < processed < len(log), "the savepoint was not taken mid-stream"
    assert client.keys("flowrec:v1:metrics:*"), "nothing was counted before the savepoint"

    run_job(source, settings, redis_url, restore=savepoint)
    assert metric_differences(metrics_of(redis_url), recount(log, settings.model, SECRET)) == []
