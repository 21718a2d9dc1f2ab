"""Learned embeddings in the streaming job: the scorer starts with one export version and
switches to another, announced on the catalog input, without a restart; Redis ends equal
to the reference engine given the same switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from flowrec.config import Settings
from pipelines.sources import CollectionSource, pack_chunks
from state.embeddings import UserVectorRule, read_export, write_export
from tests.pipelines.jobkit import catalog_lines, differences, event_lines, random_export, reference_content, results, run_job
from tests.pipelines.test_job import small_shop
from transforms.catalog import EmbeddingSwitch
from transforms.embedding import EmbeddingModel
from transforms.engine import FROM_START_MS

pytestmark = pytest.mark.flink


def test_job_switches_embedding_versions_like_the_reference(redis_url, tmp_path: Path):
    events, catalog = small_shop()
    items = sorted({c.item_id for c in catalog} | set(events.item.tolist()))
    first = write_export(tmp_path / "exports", random_export(items, "20261130T000000Z", seed=1))
    # The switch also changes the user-vector rule: from the mean to the fold-in (the trainer's default).
    second = write_export(tmp_path / "exports-next", random_export(items, "20261130T010000Z", seed=2, user_vector=UserVectorRule("fold_in", 1.0, 5.0)))
    switch_ms = int(np.median(events.ts))
    config = Settings().model.replace(weight_embedding=0.7, embedding_candidates=20)
    settings = Settings(parallelism=2, restart_attempts=0, model=config, embeddings=tmp_path / "exports")

    lines = catalog_lines(catalog) + [orjson.dumps(EmbeddingSwitch(str(second), switch_ms).to_dict()).decode()]
    lines.sort(key=lambda line: orjson.loads(line)["ts"])
    run_job(CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(lines, 50))), settings, redis_url)
    job = results(redis_url)

    switches = [(FROM_START_MS, EmbeddingModel(read_export(first))), (switch_ms, EmbeddingModel(read_export(second)))]
    reference = reference_content(events, catalog, settings, embeddings=switches)
    assert differences(job, reference) == []
    # The embeddings shaped the lists, and both versions were used.
    assert differences(job, reference_content(events, catalog, settings)) != []
    assert differences(job, reference_content(events, catalog, settings, embeddings=switches[:1])) != []
    stats = redis.Redis.from_url(redis_url).hgetall("flowrec:v1:stats")
    assert stats[b"embeddings_version"] == b"20261130T010000Z"


@pytest.mark.parametrize("parallelism, known_prior", [(1, 0.0), (2, 5.0)])
def test_job_moves_item_vectors_online_like_the_reference(redis_url, tmp_path: Path, parallelism: int, known_prior: float):
    """The export lacks a fifth of the items (as if they came after the training): with online item
    vectors the job gives them vectors from their features and co-occurrences (and, at parallelism
    2, with online_vector_known_prior, moves the others), as the engine does."""
    events, catalog = small_shop()
    items = sorted({c.item_id for c in catalog} | set(events.item.tolist()))
    trained = [item for k, item in enumerate(items) if k % 5]
    # Its feature vectors place the items it lacks (cold priors) before their co-occurrences move them.
    export = write_export(
        tmp_path / "exports", random_export(trained, "20261130T000000Z", seed=3, user_vector=UserVectorRule("fold_in", 1.0, 5.0), features=catalog)
    )
    config = Settings().model.replace(weight_embedding=0.7, embedding_candidates=20, online_vector_known_prior=known_prior, online_vector_refresh_ms=0)
    settings = Settings(parallelism=parallelism, restart_attempts=0, model=config, embeddings=tmp_path / "exports")
    run_job(CollectionSource(list(pack_chunks(event_lines(events), 200)), list(pack_chunks(catalog_lines(catalog), 50))), settings, redis_url)
    job = results(redis_url)

    switches = [(FROM_START_MS, EmbeddingModel(read_export(export)))]
    assert differences(job, reference_content(events, catalog, settings, embeddings=switches)) == []
    # The online vectors shaped the lists: the engine without them differs.
    static = Settings(parallelism=parallelism, model=config.replace(online_item_vectors=False), embeddings=tmp_path / "exports")
    assert differences(job, reference_content(events, catalog, static, embeddings=switches)) != []
    stats = redis.Redis.from_url(redis_url).hgetall("flowrec:v1:stats")
    assert int(stats[b"embeddings_online_items"]) > 0
