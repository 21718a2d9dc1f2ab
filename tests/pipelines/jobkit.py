"""Helpers for the job tests: run the real job on a mini-cluster and compare Redis with the reference engine."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import orjson
import redis

from flowrec.config import Settings
from flowrec.localredis import LocalRedis
from pipelines.flink_env import create_environment, stop_with_savepoint
from pipelines.job import RedisJobSink, build_job
from pipelines.operators import BLEND_GAUGE_PREFIX
from state.embeddings import EmbeddingExport, FeatureVectors, UserVectorRule
from state.keys import KeyKind, redis_key
from state.metrics import read_ads_day, read_experiment_totals, read_minutes
from state.store import RedisStore
from state.writes import Ttls, final_writes
from transforms.attribution import Recount
from transforms.catalog import CatalogItem
from transforms.content import feature_bag
from transforms.embedding import EmbeddingModel
from transforms.engine import ReferenceEngine, replay
from transforms.events import EventBatch
from transforms.experiments import ExperimentControl
from transforms.similarity import top_k

# Keys that hold monitoring data, not results: not compared.
MONITORING = (b":stats", b":freshness", b":deadletter")
# Attribution's hashes: compared with transforms.attribution.recount (metrics_of), not with the reference engine.
METRICS = b":metrics:"


def event_lines(events: EventBatch) -> list[str]:
    return [orjson.dumps(r).decode() for r in events.to_records()]


def catalog_lines(catalog: list[CatalogItem]) -> list[str]:
    """Catalog upserts in ``ts`` order, as a bounded replay feeds them."""
    return [c.to_json().decode() for c in sorted(catalog, key=lambda c: c.ts)]


def run_job(source, settings: Settings, redis_url: str, restore: str | None = None) -> None:
    env = create_environment(settings, restore_from=restore)
    build_job(env, source, RedisJobSink(redis_url, settings.namespace), settings)
    env.execute("flowrec-test")


def dead_letter_reasons(url: str) -> list[str]:
    """The reasons of the dead-letter stream's records, sorted."""
    client = redis.Redis.from_url(url)
    try:
        return sorted(orjson.loads(fields[b"record"])["reason"] for _, fields in client.xrange(redis_key(KeyKind.DEAD_LETTER)))
    finally:
        client.close()


def counters(url: str) -> dict[str, int]:
    """The job's stats hash without the learned blend's gauges (``blend.*``: settings and weights per shard)."""
    client = redis.Redis.from_url(url)
    try:
        return {k.decode(): int(v) for k, v in client.hgetall(redis_key(KeyKind.STATS)).items() if not k.startswith(BLEND_GAUGE_PREFIX.encode())}
    finally:
        client.close()


def events_counted(client: redis.Redis) -> int:
    """The job's ``events`` counter (0 before the first)."""
    return int(client.hget(redis_key(KeyKind.STATS), "events") or 0)


def run_until_savepoint(source, settings: Settings, redis_url: str, savepoints: Path, ready: Callable[[redis.Redis], bool]) -> str:
    """Run the job until ``ready(client)`` holds (at most 240 s), then stop it with a savepoint in ``savepoints``: its path."""
    env = create_environment(settings)
    build_job(env, source, RedisJobSink(redis_url, settings.namespace), settings)
    job = env.execute_async("flowrec-test-first-part")
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 240
        while not ready(client):
            assert time.monotonic() < deadline, "the job did not get there"
            time.sleep(0.05)
        return stop_with_savepoint(job, savepoints.as_uri())
    finally:
        client.close()


def reference_content(
    events: EventBatch,
    catalog: list[CatalogItem],
    settings: Settings,
    embeddings: Sequence[tuple[int, EmbeddingModel | None]] = (),
    experiments: Sequence[ExperimentControl] = (),
) -> dict[bytes, bytes]:
    """What Redis holds after the reference engine replays the same input (``embeddings``: version switches,
    ``experiments``: experiment controls)."""
    return reference_engine_content(events, catalog, settings, embeddings, experiments)[1]


def reference_engine_content(
    events: EventBatch,
    catalog: list[CatalogItem],
    settings: Settings,
    embeddings: Sequence[tuple[int, EmbeddingModel | None]] = (),
    experiments: Sequence[ExperimentControl] = (),
) -> tuple[ReferenceEngine, dict[bytes, bytes]]:
    """:func:`reference_content` and the engine that computed it (with the job's user shards)."""
    engine, final = replay(events, settings.model, catalog, embeddings=embeddings, experiments=experiments, user_shards=settings.user_shards)
    with LocalRedis() as server:
        RedisStore.from_url(server.url, namespace=settings.namespace).write(final_writes(final, Ttls(settings.user_ttl_s, settings.item_ttl_s)))
        return engine, results(server.url)


def results(url: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.keys("*") if not any(m in k for m in MONITORING) and METRICS not in k]
        out = dict(zip(keys, client.mget(keys))) if keys else {}
        for key in [k for k, v in out.items() if v is None]:
            kind = client.type(key)
            if kind == b"set":
                out[key] = orjson.dumps(sorted(m.decode() for m in client.smembers(key)))  # compared as a JSON list
            elif kind == b"none":
                del out[key]  # a running job deleted it between KEYS and MGET: absent, as the next read will see
            else:
                raise AssertionError(f"{key!r} is a Redis {kind.decode()}; results() reads strings and sets")
        return out
    finally:
        client.close()


def _same(a, b, tolerance: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tolerance) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    return a == b


def differences(job: dict[bytes, bytes], reference: dict[bytes, bytes], tolerance: float = 1e-9) -> list[str]:
    """Human-readable differences: missing/extra keys, and values that differ beyond ``tolerance`` on floats."""
    out = [f"missing in job: {k!r}" for k in sorted(reference.keys() - job.keys())]
    out += [f"extra in job: {k!r}" for k in sorted(job.keys() - reference.keys())]
    for key in sorted(job.keys() & reference.keys()):
        a, b = orjson.loads(job[key]), orjson.loads(reference[key])
        if not _same(a, b, tolerance):
            out.append(f"{key!r}: job {job[key][:200]!r} != reference {reference[key][:200]!r}")
    return out


def random_export(
    items: list[str], version: str, seed: int, dim: int = 8, user_vector: UserVectorRule = UserVectorRule(), features: list[CatalogItem] = ()
) -> EmbeddingExport:
    """Vectors with no meaning (this test checks the plumbing, not the quality), exact neighbours.

    Under the fold_in rule the query vectors are the candidate vectors, as the trainer exports them.
    ``features``: catalog records whose feature tokens get vectors too (what places an item the
    export lacks, :meth:`transforms.embedding.EmbeddingModel.cold_vectors`).
    """
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(items), dtype=object)
    query = rng.normal(size=(len(ids), dim)).astype(np.float32)
    candidate = rng.normal(size=(len(ids), dim)).astype(np.float32)
    if user_vector.kind == "fold_in":
        query = candidate
    sims = candidate @ candidate.T
    neighbours = {}
    for k, item in enumerate(ids.tolist()):
        scores = np.delete(sims[k], k).astype(np.float64)
        others = np.delete(ids, k)
        best = top_k(scores, others, 5)
        neighbours[item] = (others[best], scores[best])
    vectors = None
    if features:
        tokens = np.array(sorted({t for record in features for t in feature_bag(record, {})}), dtype=object)
        token_candidate = rng.normal(size=(len(tokens), dim)).astype(np.float32)
        token_query = token_candidate if user_vector.kind == "fold_in" else rng.normal(size=(len(tokens), dim)).astype(np.float32)
        vectors = FeatureVectors(names=tokens, query=token_query, candidate=token_candidate)
    return EmbeddingExport(
        version=version,
        item_ids=ids,
        query=query,
        candidate=candidate,
        neighbours=neighbours,
        meta={"model": {"name": "random"}},
        user_vector=user_vector,
        features=vectors,
    )


def metrics_of(url: str, namespace: str = "flowrec") -> Recount:
    """Every attribution hash in Redis, read through state.metrics, shaped like a recount (no rejections)."""
    client = redis.Redis.from_url(url)
    try:
        prefix = f"{namespace}:v1:metrics:"
        keys = [k.decode() for k in client.keys(prefix + "*")]
        minutes: dict = {}
        for minute in sorted(int(k.rsplit(":", 1)[1]) for k in keys if k.startswith(prefix + "min:")):
            minutes.update(read_minutes(client, namespace, minute, minute + 1))
        experiments = {k.rsplit(":", 1)[1]: read_experiment_totals(client, namespace, k.rsplit(":", 1)[1]) for k in keys if k.startswith(prefix + "exp:")}
        ads = {int(k.rsplit(":", 1)[1]): read_ads_day(client, namespace, int(k.rsplit(":", 1)[1])) for k in keys if k.startswith(prefix + "ads:")}
        return Recount(minutes, experiments, ads, [])
    finally:
        client.close()


def metric_differences(job: Recount, expected: Recount, tolerance: float = 1e-9) -> list[str]:
    """Where the job's metrics differ from a recount (revenue sums may differ in float rounding only).

    A field the job wrote as 0 equals one the recount does not have: a replay of
    late feedback may take a count back from where it first went."""
    out = []
    for name in ("minutes", "experiments", "ads"):
        a, b = getattr(job, name), getattr(expected, name)
        for key in sorted(set(a) | set(b), key=str):
            fa, fb = a.get(key, {}), b.get(key, {})
            for field in sorted(set(fa) | set(fb), key=str):
                va, vb = fa.get(field, 0.0), fb.get(field, 0.0)
                if not math.isclose(va, vb, rel_tol=tolerance, abs_tol=tolerance):
                    out.append(f"{name} {key} {field}: job {va} != recount {vb}")
    return out
