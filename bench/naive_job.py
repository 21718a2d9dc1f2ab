"""The naive design `flowrec bench stream` compares the job against: the obvious PyFlink code.

One event per Flink record, keyed by user, per-event keyed-state access,
per-event scoring and a Redis write per event::

    event lines [str] -> parse (one event) -> key by user -> naive-user [pair records]
                                                 |              -> key by item -> naive-item (neighbours -> Redis)
                                                 +-> per event: profile in ValueState, score, Redis write

* ``naive-user`` (keyed by user): reads the user's profile from ValueState,
  applies the one event with :func:`transforms.profile.apply_user_events`,
  writes it back, reads the neighbour lists of the user's strongest items from
  Redis (one MGET), scores with :func:`transforms.scoring.score_user` and
  writes the user's lists to Redis (one pipeline) — all for every event.
  It emits one record per co-occurrence direction: ``(a, [(b, w), ...])`` for
  the event's item and ``(b, [(a, w)])`` for each history item.
* ``naive-item`` (keyed by item): adds the pair weights to a MapState row and
  the occurrence weight to a ValueState count, recomputes the item's top
  neighbours from the whole row (``c_ab / n_a``) and writes them to Redis —
  for every record.

It uses the same maths functions as the job wherever the design allows, so
the ratio measures the design (per-event records, state access and I/O),
not different maths.  Counters ``naive_events`` and ``naive_item_records`` go
to the stats hash in the same pipelines, so progress can be timed from Redis.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import orjson
from pyflink.common import Types
from pyflink.datastream.functions import KeyedProcessFunction
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from state.keys import KeyKind
from state.schemas import decode_profile, encode_profile
from state.store import RedisStore, ScoredItem, decode_list, encode_list
from state.writes import Ttls, user_writes
from transforms.config import ModelConfig
from transforms.events import validate_record
from transforms.profile import ItemContribution, apply_user_events, top_interests
from transforms.scoring import ScoringModel, score_user

log = logging.getLogger(__name__)

PICKLED = Types.PICKLED_BYTE_ARRAY()


def parse_event(line: str):
    """One JSON line -> ``(user, item, event code, ts)``, or None for a bad record (dropped)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    rows, rejection = validate_record(record, raw=line)
    if rejection is not None or len(rows) != 1:  # the naive design has no impressions
        return None
    user, item, code, ts = rows[0][:4]
    return user, item, code, ts


class NaiveUser(KeyedProcessFunction):
    """Per event: profile from ValueState, apply, write back, score from Redis neighbours, write lists."""

    def __init__(self, config: ModelConfig, redis_url: str, namespace: str) -> None:
        self.config = config
        self.redis_url = redis_url
        self.namespace = namespace

    def open(self, runtime_context) -> None:
        self.profile = runtime_context.get_state(ValueStateDescriptor("profile", Types.PICKLED_BYTE_ARRAY()))
        self.store = RedisStore.from_url(self.redis_url, namespace=self.namespace)
        self.weights = self.config.weight_table()
        self.ttls = Ttls()

    def close(self) -> None:
        self.store.client.close()

    def process_element(self, event, ctx) -> Iterable:
        user, item, code, ts = event
        raw = self.profile.value()
        profile = decode_profile(raw) if raw is not None else None
        weight = float(self.weights[code])
        contribution = ItemContribution()
        profile = apply_user_events(profile, [item], [code], [ts], [weight], self.config, contribution)
        if profile is None:
            self.profile.clear()
            lists = None
        else:
            self.profile.update(encode_profile(profile))
            # The neighbour lists of the user's strongest items, as written by naive-item.
            strongest = [i for i, _ in top_interests(profile, ts, self.config)]
            raws = self.store.get_many([(KeyKind.ITEM_NEIGHBOURS, i) for i in strongest])
            neighbours = {}
            for source, value in zip(strongest, raws):
                if value is not None:
                    _, entries, _ = decode_list(value)
                    neighbours[source] = (np.array([e.item for e in entries], dtype=object), np.array([e.score for e in entries], dtype=np.float64))
            model = ScoringModel(neighbours=neighbours)
            lists = score_user(profile, ts, model, self.config)
        writes = user_writes(user, ts, lists, self.ttls)
        pipe = self.store.client.pipeline(transaction=False)
        for w in writes:
            key = self.store.key(w.kind, w.part)
            if w.value is None:
                pipe.delete(key)
            else:
                pipe.set(key, w.value, ex=w.ttl_s)
        pipe.hincrby(self.store.key(KeyKind.STATS), "naive_events", 1)
        pipe.execute()
        if contribution.items:
            forward = [(b, w) for a, b, w in zip(contribution.pair_a, contribution.pair_b, contribution.pair_weights) if a == item]
            yield item, contribution.item_weights[0], forward
            for b, w in forward:
                yield b, 0.0, [(item, w)]


class NaiveItem(KeyedProcessFunction):
    """Per record: add to the item's row (MapState) and count (ValueState), rank the row, write neighbours."""

    def __init__(self, config: ModelConfig, redis_url: str, namespace: str) -> None:
        self.config = config
        self.redis_url = redis_url
        self.namespace = namespace

    def open(self, runtime_context) -> None:
        self.row = runtime_context.get_map_state(MapStateDescriptor("row", Types.STRING(), Types.DOUBLE()))
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.DOUBLE()))
        self.store = RedisStore.from_url(self.redis_url, namespace=self.namespace)

    def close(self) -> None:
        self.store.client.close()

    def process_element(self, record, ctx) -> Iterable:
        item, occurrence, pairs = record
        count = (self.count.value() or 0.0) + occurrence
        self.count.update(count)
        for other, w in pairs:
            self.row.put(other, (self.row.get(other) or 0.0) + w)
        ranked = sorted(((o, c / count) for o, c in self.row.items() if c >= self.config.min_cooccurrence), key=lambda kv: (-kv[1], kv[0]))
        top = [ScoredItem(o, s) for o, s in ranked[: self.config.neighbours]] if count > 0 else []
        pipe = self.store.client.pipeline(transaction=False)
        pipe.set(self.store.key(KeyKind.ITEM_NEIGHBOURS, item), encode_list(ctx.timestamp() or 0, top))
        pipe.hincrby(self.store.key(KeyKind.STATS), "naive_item_records", 1)
        pipe.execute()
        return ()


def build_naive_job(env, events_path: Path, redis_url: str, config: ModelConfig, namespace: str = "flowrec") -> None:
    """Add the naive dataflow to ``env``: one record per line of ``events_path`` (JSON lines, time-ordered)."""
    from pyflink.common import WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    env.set_parallelism(1)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(events_path)).build()
    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "naive-events").uid("naive-events")
    events = lines.map(parse_event, output_type=PICKLED).name("naive-parse").uid("naive-parse").filter(lambda e: e is not None)
    pairs = (
        events.key_by(lambda e: e[0], key_type=Types.STRING())
        .process(NaiveUser(config, redis_url, namespace), output_type=PICKLED)
        .name("naive-user")
        .uid("naive-user")
    )
    pairs.key_by(lambda r: r[0], key_type=Types.STRING()).process(NaiveItem(config, redis_url, namespace), output_type=PICKLED).name("naive-item").uid("naive-item")

