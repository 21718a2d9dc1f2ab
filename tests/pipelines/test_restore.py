"""A job stopped with a savepoint mid-stream and restored from it ends exactly where an
uninterrupted run ends: managed state, timers, pending windows and the scorer's
broadcast model all survive, and the operators rebuild their in-memory copies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from flowrec.config import Settings
from pipelines.flink_env import create_environment, stop_with_savepoint
from pipelines.job import RedisJobSink, build_job
from pipelines.sources import FileReplaySource
from state.keys import KeyKind, redis_key
from tests.pipelines.jobkit import catalog_lines, differences, reference_content, results, run_job
from transforms.config import ModelConfig
from transforms.events import EventBatch
from transforms.synthetic import generate_shop

pytestmark = [pytest.mark.flink, pytest.mark.faults]


@pytest.mark.parametrize("backend, learned_blend", [("hashmap", False), ("rocksdb", False), ("hashmap", True)])
def test_stop_with_savepoint_and_restore_gives_the_uninterrupted_result(backend, learned_blend, redis_url, tmp_path: Path):
    """With a learned blend (blend_learning) the scorer's learners and memos are restored too."""
    catalog, stream = generate_shop(users=150, items=100, events=6000, seed=11)
    events = EventBatch.concat(list(stream))
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(events.to_jsonl())
    catalog_file = tmp_path / "catalog.jsonl"
    catalog_file.write_text("\n".join(catalog_lines(catalog)) + "\n")
    model = ModelConfig(blend_learning=learned_blend, blend_margin=0.0)
    settings = Settings(parallelism=2, restart_attempts=0, state_backend=backend, checkpoint_dir=str(tmp_path / "checkpoints"), model=model)
    # Small chunks make the replay long enough to stop in the middle.
    source = FileReplaySource([events_file], catalog_file, chunk_size=10, workdir=tmp_path / "replay")

    env = create_environment(settings)
    build_job(env, source, RedisJobSink(redis_url), settings)
    job = env.execute_async("flowrec-first-half")
    client = redis.Redis.from_url(redis_url)
    stats = redis_key(KeyKind.STATS)
    deadline = time.monotonic() + 240
    while int(client.hget(stats, "events") or 0) < 1000:
        assert time.monotonic() < deadline, "the job processed nothing"
        time.sleep(0.05)
    savepoint = stop_with_savepoint(job, (tmp_path / "savepoints").as_uri())
    processed = int(client.hget(stats, "events"))
    assert 0 < processed < len(events), "the savepoint was not taken mid-stream"

    run_job(source, settings, redis_url, restore=savepoint)
    assert int(client.hget(stats, "events")) >= len(events)
    assert differences(results(redis_url), reference_content(events, catalog, settings)) == []
