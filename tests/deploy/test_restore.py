"""A live job on the standalone cluster, stopped with a savepoint mid-stream and
resumed from it (at a higher parallelism), ends with exactly the Redis content
of an uninterrupted reference replay: no event lost, none counted twice.

How the live run is made deterministic: the job watches a spool directory and
a heartbeat advances event time to the wall clock while input is idle.  The
synthetic shop is therefore generated ten minutes *ahead* of the wall clock,
so the heartbeat never overtakes an event that has not been read yet (which
would make it late).  Windows then close only by the events' own watermark,
and the final stop drains (advances event time to the end), closing the rest
exactly as the end of a bounded replay does.  The catalog is written in ``ts``
order and ends with one re-upsert dated after the last event, so every real
catalog window (some are dated inside the events' future period: sell-outs)
closes before the first event arrives, instead of when the heartbeat's wall
clock reaches it or at the drain.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import orjson
import pytest
import redis

from flowrec.config import Settings
from tests.pipelines.jobkit import differences, reference_content, results
from transforms.catalog import CatalogItem, parse_catalog_lines
from transforms.events import EventBatch, parse_json_lines
from transforms.synthetic import write_shop

pytestmark = [pytest.mark.cluster, pytest.mark.flink, pytest.mark.faults]

MINUTE_MS = 60_000
EVENTS_PER_LINE = 50  # a spool line may hold a JSON array of events


def spool_write(directory: Path, name: str, lines: list[bytes]) -> None:
    """Write a file so it appears at once: Flink's file source skips names starting with '.'."""
    hidden = directory / f".{name}"
    hidden.write_bytes(b"\n".join(lines) + b"\n")
    hidden.rename(directory / name)


def event_array_lines(events: EventBatch) -> list[bytes]:
    records = events.to_records()
    return [orjson.dumps(records[i:i + EVENTS_PER_LINE]) for i in range(0, len(records), EVENTS_PER_LINE)]


def wait_for(what: str, condition, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.5)


def events_counted(client: redis.Redis) -> int:
    return int(client.hget("flowrec:v1:stats", "events") or 0)


def test_stop_with_savepoint_and_resume_equals_an_uninterrupted_replay(flink_cluster, redis_url, redis_client, tmp_path: Path):
    now_ms = time.time_ns() // 1_000_000
    start_ms = (now_ms // MINUTE_MS + 10) * MINUTE_MS
    write_shop(tmp_path / "shop", users=60, items=40, events=1500, seed=11, start_ms=start_ms, days=1 / 24)
    events = parse_json_lines((tmp_path / "shop" / "events.jsonl").read_bytes().splitlines()).events.sorted_by_time()
    catalog, rejected = parse_catalog_lines((tmp_path / "shop" / "catalog.jsonl").read_bytes().splitlines())
    assert not rejected and len(events) == 1500
    assert int(events.ts.min()) > now_ms + 5 * MINUTE_MS, "events lie ahead of the heartbeat"
    closing = dataclasses.replace(min(catalog, key=lambda c: c.item_id), ts=max(int(events.ts.max()), max(c.ts for c in catalog)) + MINUTE_MS)
    upserts: list[CatalogItem] = sorted(catalog, key=lambda c: c.ts) + [closing]

    spool = tmp_path / "spool"
    (spool / "events").mkdir(parents=True)
    (spool / "catalog").mkdir()
    spool_write(spool / "catalog", "catalog.jsonl", [c.to_json() for c in upserts])
    submit = ("submit", "--spool-dir", str(spool), "--redis-url", redis_url, "--restart-attempts", "0",
              "--jobmanager", flink_cluster.jobmanager, "--timeout", "400")

    first = flink_cluster.flowrec(*submit)
    assert first.returncode == 0, first.stderr[-4000:]
    first_job = first.stdout.strip()
    wait_for("the catalog in Redis", lambda: len(redis_client.keys("flowrec:v1:item:*")) == len(catalog))

    half = len(events) // 2
    spool_write(spool / "events", "part-1.jsonl", event_array_lines(events.take(slice(0, half))))
    wait_for("the first half counted", lambda: events_counted(redis_client) == half)
    wait_for("some user lists", lambda: redis_client.keys("flowrec:v1:rec:*"))

    # A savepoint without stopping leaves the job running.
    kept = flink_cluster.flowrec("cluster", "savepoint", first_job, "--dir", str(tmp_path / "kept"), "--jobmanager", flink_cluster.jobmanager)
    assert kept.returncode == 0, kept.stderr[-4000:]
    assert Path(kept.stdout.strip().removeprefix("file:")).is_dir()
    assert flink_cluster.rest.job(first_job)["state"] == "RUNNING"

    stopped = flink_cluster.flowrec("cluster", "savepoint", first_job, "--stop", "--dir", str(tmp_path / "savepoints"),
                                    "--jobmanager", flink_cluster.jobmanager)
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    savepoint = stopped.stdout.strip()
    assert Path(savepoint.removeprefix("file:")).is_dir(), savepoint
    assert flink_cluster.rest.job(first_job)["state"] == "FINISHED"
    lists_at_stop = len(redis_client.keys("flowrec:v1:rec:*"))

    # Input arriving while the job is down is picked up after the restore.
    spool_write(spool / "events", "part-2.jsonl", event_array_lines(events.take(slice(half, len(events)))))
    # Resumed at a higher parallelism: keyed state is redistributed (rescaling through a savepoint).
    second = flink_cluster.flowrec(*submit, "--restore", savepoint, "--parallelism", "2")
    assert second.returncode == 0, second.stderr[-4000:]
    second_job = second.stdout.strip()
    wait_for("every event counted", lambda: events_counted(redis_client) == len(events))

    drained = flink_cluster.flowrec("cluster", "savepoint", second_job, "--stop", "--drain", "--jobmanager", flink_cluster.jobmanager)
    assert drained.returncode == 0, drained.stderr[-4000:]
    assert flink_cluster.rest.job(second_job)["state"] == "FINISHED"

    listed = flink_cluster.flowrec("cluster", "jobs", "--jobmanager", flink_cluster.jobmanager)
    states = dict(line.split()[:2] for line in listed.stdout.splitlines())
    assert states[first_job] == states[second_job] == "FINISHED"

    stats = {k.decode(): v.decode() for k, v in redis_client.hgetall("flowrec:v1:stats").items()}
    assert int(stats["events"]) == len(events), "no event lost or counted twice"
    assert int(stats.get("late_events", 0)) == 0
    assert int(stats.get("dead_letters", 0)) == 0
    job = results(redis_url)
    assert len([k for k in job if b":rec:" in k]) > lists_at_stop
    assert differences(job, reference_content(events, upserts, Settings())) == []
