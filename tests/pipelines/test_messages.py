"""Routing helpers of the job's records: shards of many ids at once, and a window's pairs split by item shard."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.messages import AttributionCounts, ShardCache, decode_attribution_counts, decode_pending, encode_attribution_counts, encode_pending, shard_of, split_pairs


def _pairs(seed: int, n: int, items: int) -> tuple[list[str], list[str], list[float]]:
    rng = random.Random(seed)
    a = [f"i{rng.randrange(items)}" for _ in range(n)]
    b = [f"i{rng.randrange(items)}" for _ in range(n)]
    return a, b, [rng.choice([0.5, 1.0, 2.0, rng.random()]) for _ in range(n)]


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_of_many_ids_equal_shard_of_each_while_the_cache_fills_and_empties(shards: int):
    cache = ShardCache(shards, max_known=25)
    for seed in range(30):
        ids = _pairs(seed, 40, 60)[0]
        assert cache.of(ids).tolist() == [shard_of(i, shards) for i in ids]
        assert len(cache.known) <= 25 + 40
    assert cache.of([]).dtype == np.int64 and len(cache.of([])) == 0


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_split_pairs_keeps_each_shards_pairs_in_their_order(shards: int):
    cache = ShardCache(shards, max_known=30)
    for seed in range(20):
        a, b, w = _pairs(seed, 200, 80)
        expected: list[tuple[list, list, list]] = [([], [], []) for _ in range(shards)]
        for x, y, z in zip(a, b, w):
            part = expected[shard_of(x, shards)]
            part[0].append(x)
            part[1].append(y)
            part[2].append(z)
        got = split_pairs(a, b, w, cache)
        assert got == expected
        assert all(type(v) is float for _, _, weights in got for v in weights)
    assert split_pairs([], [], [], ShardCache(3)) == [([], [], [])] * 3


def test_attribution_counts_survive_the_outbox_encoding():
    found = AttributionCounts({(60_000, "exp", "control", "home", 3, "clicks"): 2, (60_000, "", "", "cart", "all", "revenue"): 19.99}, {(86_400_000, "i1", "ad_clicks"): 1}, 42)
    raw = encode_pending("outbox", 42, {"a": [encode_attribution_counts(found)]})
    _, _, payload = decode_pending(raw)
    assert decode_attribution_counts(payload["a"][0]) == found
