"""A job stopped with a savepoint mid-stream and restored from it ends exactly where an
uninterrupted run ends: managed state, timers, pending windows and the scorer's
broadcast model all survive, and the operators rebuild their in-memory copies."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import redis

from flowrec.config import Settings
from pipelines.sources import FileReplaySource
from state.keys import KeyKind, redis_key
from state.embeddings import UserVectorRule, read_export, write_export
from tests.pipelines.jobkit import (
    catalog_lines,
    differences,
    events_counted,
    metric_differences,
    metrics_of,
    random_export,
    reference_content,
    results,
    run_job,
    run_until_savepoint,
)
from tests.transforms.test_attribution import SECRET
from transforms.attribution import recount
from transforms.config import ModelConfig
from transforms.embedding import EmbeddingModel
from transforms.engine import FROM_START_MS
from transforms.events import EventBatch, parse_records
from transforms.experiments import assign, parse_experiment
from transforms.recid import RecId, encode_rec_id
from transforms.synthetic import generate_shop

pytestmark = [pytest.mark.flink, pytest.mark.faults]


# The plain job on RocksDB; the heap backend with each optional kind of state.  (A plain job on the
# heap backend as well took half a minute and tested nothing the other variants do not.)
@pytest.mark.parametrize("backend, learned_blend, embeddings", [("rocksdb", False, False), ("hashmap", True, False), ("hashmap", False, True)])
def test_stop_with_savepoint_and_restore_gives_the_uninterrupted_result(backend, learned_blend, embeddings, redis_url, tmp_path: Path):
    """With a learned blend (blend_learning) the scorer's learners and memos are restored too; with
    embeddings (an export lacking some items) the online item vectors' evidence and entries."""
    catalog, stream = generate_shop(users=150, items=100, events=3000, seed=11)
    events = EventBatch.concat(list(stream))
    switches = []
    if embeddings:
        items = sorted({c.item_id for c in catalog} | set(events.item.tolist()))
        export = write_export(tmp_path / "exports", random_export([i for k, i in enumerate(items) if k % 4], "20261130T000000Z", seed=2, user_vector=UserVectorRule("fold_in", 1.0, 5.0)))
        switches = [(FROM_START_MS, EmbeddingModel(read_export(export)))]
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(events.to_jsonl())
    catalog_file = tmp_path / "catalog.jsonl"
    catalog_file.write_text("\n".join(catalog_lines(catalog)) + "\n")
    model = ModelConfig(blend_learning=learned_blend, blend_margin=0.0, weight_embedding=0.7 if embeddings else 0.0)
    settings = Settings(
        parallelism=2, restart_attempts=0, state_backend=backend, checkpoint_dir=str(tmp_path / "checkpoints"), checkpoint_interval_ms=1000,
        model=model, embeddings=tmp_path / "exports" if embeddings else None,
    )
    # Small chunks make the replay long enough to stop in the middle.
    source = FileReplaySource([events_file], catalog_file, chunk_size=10, workdir=tmp_path / "replay")

    def checkpointed() -> bool:
        """On RocksDB, a checkpoint has uploaded files: incremental checkpoints put them in the job's shared directory (a full one does not)."""
        return backend != "rocksdb" or any(f.is_file() for f in (tmp_path / "checkpoints").glob("*/shared/*"))

    savepoint = run_until_savepoint(source, settings, redis_url, tmp_path / "savepoints", lambda client: events_counted(client) >= 1000 and checkpointed())
    client = redis.Redis.from_url(redis_url)
    stats = redis_key(KeyKind.STATS)
    processed = int(client.hget(stats, "events"))
    assert 0 < processed < len(events), "the savepoint was not taken mid-stream"

    run_job(source, settings, redis_url, restore=savepoint)
    assert int(client.hget(stats, "events")) >= len(events)
    assert differences(results(redis_url), reference_content(events, catalog, settings, embeddings=switches)) == []
    if embeddings:
        assert int(client.hget(stats, "embeddings_online_items")) > 0


def with_impressions(records: list[dict], secret: str, seed: int, share: float = 0.8) -> list[dict]:
    """``records`` plus, 1-900 ms before ``share`` of the clicks, an impression of the clicked item and
    3 others (rec_ids of a two-variant experiment), all in ``ts`` order."""
    rng = random.Random(seed)
    experiment = parse_experiment({"id": "exp", "variants": {"a": {"share": 0.5}, "b": {"share": 0.5}}})
    items = sorted({r["item_id"] for r in records if "item_id" in r})
    log = list(records)
    for n, r in enumerate(records):
        if r["event_type"] != "click" or rng.random() >= share:
            continue
        user, shown_ms = r["user_id"], r["ts"] - rng.randint(1, 900)
        shown = [r["item_id"], *rng.sample([i for i in items if i != r["item_id"]], 3)]
        rng.shuffle(shown)
        rec_id = encode_rec_id(RecId(experiment.id, assign(experiment, user), "home", shown_ms, f"{n:08x}"), user, secret)
        log.append({"user_id": user, "event_type": "impression", "rec_id": rec_id, "items": shown, "ts": shown_ms})
    return sorted(log, key=lambda r: r["ts"])


def test_impressions_leave_the_model_as_the_reference_has_it_across_a_savepoint(redis_url, tmp_path: Path):
    """Impressions go to attribution only: lists, neighbours and trending equal the reference engine's (which
    drops impressions), metrics equal the recount, stopped once attribution has counted and restored.

    Impressions 1-900 ms before their clicks make windows that hold impressions alone; the item model
    and trending closed those windows too and ran a refresh due in their slot there, before the slot's
    window with events (neighbours and trending lists of the wrong window)."""
    catalog, stream = generate_shop(users=120, items=80, events=5000, seed=17)
    log = with_impressions(EventBatch.concat(list(stream)).to_records(), SECRET, seed=5)
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in log))
    catalog_file = tmp_path / "catalog.jsonl"
    catalog_file.write_text("\n".join(catalog_lines(catalog)) + "\n")
    settings = Settings(parallelism=2, restart_attempts=0, rec_id_secret=SECRET, checkpoint_dir=str(tmp_path / "checkpoints"))
    source = FileReplaySource([events_file], catalog_file, chunk_size=10, workdir=tmp_path / "replay")

    savepoint = run_until_savepoint(source, settings, redis_url, tmp_path / "savepoints", lambda client: events_counted(client) >= 2000 and bool(client.keys("flowrec:v1:metrics:*")))
    client = redis.Redis.from_url(redis_url)
    stats = redis_key(KeyKind.STATS)
    assert int(client.hget(stats, "events")) < len(log), "the savepoint was not taken mid-stream"

    run_job(source, settings, redis_url, restore=savepoint)
    parsed = parse_records(log)
    assert not parsed.rejections and int(client.hget(stats, "events")) >= len(parsed.events)
    assert differences(results(redis_url), reference_content(parsed.events, catalog, settings)) == []
    assert metric_differences(metrics_of(redis_url), recount(log, settings.model, SECRET)) == []
