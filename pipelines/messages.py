"""Records that flow between the job's operators, and their encodings when held in state.

In-flight records are Python objects (PyFlink pickles them between
operators; they never outlive a checkpoint barrier).  Whatever an operator
keeps in managed state is encoded with an explicit, versioned JSON layout
(``encode_*``/``decode_*`` below, and :mod:`state.schemas`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import orjson

from state.schemas import SchemaError
from state.store import Write
from transforms.blend import user_shard
from transforms.events import EventBatch

PENDING_VERSION = 1


def shard_of(key: str, shards: int) -> int:
    """Stable shard of a user or item id: the reference engine's :func:`transforms.blend.user_shard`
    (CRC-32; the same in every process and release), so job and engine shard users alike."""
    return user_shard(key, shards)


class ShardCache:
    """:func:`shard_of` of many ids at once, each distinct id hashed once.

    A window's pairs repeat a few thousand items many times, and a chunk of
    events repeats its users, so the shard of each id is kept (a pure
    function of the id: a cache, not state; emptied past ``max_known`` ids,
    about 160 bytes each).  One shard needs no hashing at all.
    """

    def __init__(self, shards: int, max_known: int = 200_000) -> None:
        self.shards = shards
        self.max_known = max_known
        self.known: dict[str, int] = {}

    def of(self, ids: list[str]) -> np.ndarray:
        """The shard of each id (int64), in order."""
        if self.shards == 1:
            return np.zeros(len(ids), dtype=np.int64)
        known = self.covering(ids)
        return np.fromiter(map(known.__getitem__, ids), dtype=np.int64, count=len(ids))

    def covering(self, ids: list[str]) -> dict[str, int]:
        """Id -> shard, holding at least every one of ``ids``."""
        new = set(ids).difference(self.known)
        if len(self.known) + len(new) > self.max_known:
            self.known.clear()
            new = set(ids)
        self.known.update((key, shard_of(key, self.shards)) for key in new)
        return self.known


def split_pairs(pair_a: list[str], pair_b: list[str], pair_weights: list[float], shards: ShardCache) -> list[tuple[list, list, list]]:
    """``(pair_a, pair_b, pair_weights)`` of each item shard (the shard of the pair's first item), in shard order.

    Within each shard the pairs keep their order, which the item model's sums depend on."""
    if shards.shards == 1:
        return [(pair_a, pair_b, pair_weights)]
    known = shards.covering(pair_a)
    out: list[tuple[list, list, list]] = [([], [], []) for _ in range(shards.shards)]
    # A plain loop: numpy's object arrays and stable sort cost more here than three appends (measured).
    for a, b, w in zip(pair_a, pair_b, pair_weights):
        part = out[known[a]]
        part[0].append(a)
        part[1].append(b)
        part[2].append(w)
    return out


class EventSlice(NamedTuple):
    """Validated events of one window and one user shard, in event-time order."""

    window: int
    shard: int
    events: EventBatch
    max_ts: int


class Bundle(NamedTuple):
    """Several records for one key, windows ascending: what one input chunk yields for a shard.

    The job moves bundles, not one record per window, so a sparse stream (a
    window or more per event) costs one record per chunk and shard, not one
    per window and stage.  ``max_ts`` is the latest event time of the parts
    (event-time slices; 0 for the others).
    """

    shard: int
    parts: list
    max_ts: int = 0


def unbundled(value) -> list:
    """The records a bundle carries, or ``[value]``."""
    return value.parts if isinstance(value, Bundle) else [value]


class Tick(NamedTuple):
    """A heartbeat that advances event time on a live source when no events arrive."""

    ts: int


class ItemDelta(NamedTuple):
    """One window's item-model contribution for one item shard.

    Occurrence weights cover all items (every shard keeps every count, since
    similarity needs ``n_b`` of any neighbour); pairs only those whose first
    item belongs to the shard.
    """

    window: int
    shard: int
    events: int
    items: list
    item_weights: list
    pair_a: list
    pair_b: list
    pair_weights: list


class TrendDelta(NamedTuple):
    """One window's positive event weights for trending (and its event count)."""

    window: int
    events: int
    items: list
    ts: list
    weights: list


class FactsUpdate(NamedTuple):
    """Catalog facts (top category, in stock) that take effect when ``window`` closes."""

    window: int
    facts: dict


class UserSnapshot(NamedTuple):
    """Profiles after a user shard's events of one window (``None``: forgotten)."""

    window: int
    shard: int
    profiles: dict  # user -> encoded profile bytes or None
    last_ts: dict  # user -> latest event time, for freshness


class EvidenceReset(NamedTuple):
    """An embedding switch as an item shard sees it: from ``window`` on, the online item vectors'
    evidence counts for the new version (``active``: there is one; see ``ModelConfig.online_item_vectors``)."""

    window: int
    shard: int
    active: bool


class ModelUpdate(NamedTuple):
    """Versioned model entries for the scorer: key -> encoded value, produced by ``window``."""

    window: int
    entries: list  # [(key, bytes)]


class AttributionCounts(NamedTuple):
    """What attribution counted in one call of one user shard, for the metrics aggregator to add up.

    ``counts``: ``(minute_ms, experiment, variant, context, position or "all",
    measure) -> value``; ``ad_counts``: ``(day_ms, item, measure) -> value``
    (see :mod:`transforms.attribution`).
    """

    counts: dict
    ad_counts: dict
    # The window whose feedback this is (late feedback: the open window it was applied in);
    # the ad-spend operator joins the ad counts with the sponsorships of that window.
    window: int = -1


class SponsorshipUpdate(NamedTuple):
    """Every sponsored item's ``(bid, campaign)`` from ``window`` on (sent when the set or a bid changes)."""

    window: int
    sponsored: dict  # item -> (bid, campaign)


class SinkBatch(NamedTuple):
    """Everything one operator call writes: Redis writes, counters, dead letters, lags."""

    writes: list[Write] = []
    stats: dict = {}
    dead_letters: list = []
    lags_ms: list = []


def encode_pending(kind: str, window: int, payload: dict) -> bytes:
    """A message held in state until its window closes (versioned JSON)."""
    return orjson.dumps({"v": PENDING_VERSION, "k": kind, "w": window, "p": payload})


def encode_attribution_counts(found: AttributionCounts) -> dict:
    """``found`` as JSON-ready data (tuple keys as lists), for a pending message."""
    return {"c": [[list(k), v] for k, v in found.counts.items()], "d": [[list(k), v] for k, v in found.ad_counts.items()], "w": found.window}


def decode_attribution_counts(data: dict) -> AttributionCounts:
    """The inverse of :func:`encode_attribution_counts`."""
    return AttributionCounts({tuple(k): v for k, v in data["c"]}, {tuple(k): v for k, v in data["d"]}, data["w"])


def decode_pending(raw: bytes) -> tuple[str, int, dict]:
    data = orjson.loads(raw)
    if data.get("v") != PENDING_VERSION:
        raise SchemaError(f"unsupported pending message version {data.get('v')}")
    return data["k"], data["w"], data["p"]
