"""Bad input through the real job: every bad record is dead-lettered with a reason and
counted, the job keeps running, and every good record around them is applied."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from flowrec.config import Settings
from pipelines.sources import FileReplaySource
from state.keys import KeyKind, redis_key
from tests.pipelines.bad_events import bad_lines
from tests.pipelines.jobkit import catalog_lines, counters, differences, reference_content, results, run_job
from transforms.events import EventBatch, parse_json_lines
from transforms.synthetic import generate_shop

pytestmark = [pytest.mark.flink, pytest.mark.faults]


def test_corpus_is_rejected_record_by_record():
    bad = bad_lines()
    assert len(bad) >= 30
    result = parse_json_lines(bad)
    assert len(result.events) == 0
    assert len(result.rejections) == len(bad)
    assert all(r.reason and r.detail for r in result.rejections)


def test_job_dead_letters_bad_records_and_applies_the_good_ones(redis_url, tmp_path: Path):
    catalog, stream = generate_shop(users=60, items=50, events=1500, seed=2)
    events = EventBatch.concat(list(stream))
    good = [orjson.dumps(r) for r in events.to_records()]
    bad = bad_lines()
    mixed, pending = [], list(bad)
    for n, line in enumerate(good):  # a bad record after every 50 good ones, the rest at the end
        mixed.append(line)
        if n % 50 == 0 and pending:
            mixed.append(pending.pop(0))
    mixed += pending
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(mixed) + b"\n")
    catalog_file = tmp_path / "catalog.jsonl"
    catalog_file.write_text("\n".join(catalog_lines(catalog)) + "\n")
    settings = Settings(parallelism=1, restart_attempts=0)

    run_job(FileReplaySource([events_file], catalog_file, chunk_size=100, workdir=tmp_path / "replay"), settings, redis_url)

    client = redis.Redis.from_url(redis_url)
    stats = counters(redis_url)
    assert stats["events"] == len(events)
    assert stats["dead_letters"] == len(bad)
    # The same counts, added per minute of the sink's clock for the dashboard, add up to the totals.
    minutes = [{k.decode(): int(v) for k, v in client.hgetall(key).items()} for key in client.keys(redis_key(KeyKind.STATS) + ":min:*")]
    assert minutes and sum(m.get("events", 0) for m in minutes) == len(events)
    assert sum(m.get("dead_letters", 0) for m in minutes) == len(bad)
    dead = [orjson.loads(fields[b"record"]) for _, fields in client.xrange(redis_key(KeyKind.DEAD_LETTER))]
    assert len(dead) == len(bad)
    assert all(d["reason"] and d["detail"] and "raw" in d for d in dead)
    reasons = {d["reason"] for d in dead}
    # (Flink decodes files as UTF-8 with replacement characters, so the non-UTF-8 line arrives as a bad id.)
    assert {"bad_json", "missing_field", "bad_id", "bad_field", "bad_timestamp", "unknown_event_type", "timestamp_out_of_range", "too_large", "not_an_object"} <= reasons
    assert differences(results(redis_url), reference_content(events, catalog, settings)) == []
