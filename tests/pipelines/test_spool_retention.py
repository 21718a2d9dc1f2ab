"""Spool files do not stay on disk: the live job deletes each file the API wrote once it has read it
(and had time to checkpoint past it); a file without the API's end marker is left alone."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import orjson
import pytest
import redis

from api.spool import write_spool_file
from flowrec.config import Settings
from pipelines.operators import ParseCatalog, ParseEvents
from pipelines.spool_retention import SPOOL_FILES_READ, retention_delay_ms
from pipelines.spoolfiles import end_marker, ended_file
from pipelines.sources import DirectorySource, read_event_lines
from state.keys import KeyKind, redis_key


def test_end_markers_name_the_file_and_nothing_else():
    name = "events-1700000000000-" + "ab" * 16 + ".jsonl"
    assert ended_file(end_marker(name).decode()) == name
    assert ended_file(end_marker("../../etc/passwd").decode()) is None  # only names the API writes
    assert ended_file('{"user_id": "u1"}') is None
    assert list(ParseEvents(200, 4).process_element(end_marker(name).decode().rstrip("\n"), None)) == [(SPOOL_FILES_READ, name)]
    assert list(ParseCatalog().process_element(end_marker(name).decode().rstrip("\n"), None)) == [(SPOOL_FILES_READ, name)]


def test_replaying_spool_files_skips_their_end_marker(tmp_path: Path):
    path = write_spool_file(tmp_path, "events", [b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1700000000000}\n'], 1_700_000_000_000)
    assert read_event_lines(path) == ['{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1700000000000}']


def test_the_retention_waits_at_least_two_checkpoints():
    assert retention_delay_ms(600, 10_000) == 600_000
    assert retention_delay_ms(1, 10_000) == 20_000


@pytest.mark.flink
def test_live_job_deletes_the_spool_files_it_has_read(redis_url, tmp_path: Path):
    from pipelines.main import run_job as start_job

    spool = tmp_path / "spool"
    settings = Settings(parallelism=1, restart_attempts=0, spool_dir=spool, spool_retention_s=1, checkpoint_interval_ms=500, redis_url=redis_url)
    now = time.time_ns() // 1_000_000
    event = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": now, "query": "private words"}
    events_file = write_spool_file(spool, "events", [orjson.dumps([event]) + b"\n"], now)
    catalog_file = write_spool_file(spool, "catalog", [orjson.dumps({"item_id": "i1", "category": "toys", "ts": now}) + b"\n"], now)
    by_hand = spool / "events" / "by-hand.jsonl"
    by_hand.write_bytes(orjson.dumps({"user_id": "u2", "item_id": "i1", "event_type": "view", "ts": now}) + b"\n")
    job = start_job(dataclasses.replace(settings), DirectorySource(spool), wait=False)
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (events_file.exists() or catalog_file.exists() or not client.exists(redis_key(KeyKind.USER_RECS, "u1"))):
            time.sleep(0.25)
        assert client.exists(redis_key(KeyKind.USER_RECS, "u1"), redis_key(KeyKind.USER_RECS, "u2"), redis_key(KeyKind.ITEM, "i1")) == 3
        assert not events_file.exists() and not catalog_file.exists()
        assert by_hand.exists()  # no end marker: not the API's, not the job's to delete
    finally:
        client.close()
        job.cancel().result()
