"""The flowrec streaming job: one builder for every source, sink and cluster.

Dataflow (element shapes in brackets)::

    events [chunk str] -> parse-events [Bundle of EventSlice (one per window) per user shard | Tick | BootRecord]
        -> event-time (watermarks) -> key by user shard -> user-state (profiles and attribution) [Bundle of UserSnapshot]
             side: item-deltas [Bundle of ItemDelta] (+ content's [Bundle of EvidenceReset]) -> key by item shard -> item-model [Bundle of ModelUpdate]
             side: trend-deltas [Bundle of TrendDelta] (+ content's facts) -> key 0 -> trending [Bundle of ModelUpdate]
             side: attributed [AttributionCounts] -> key 0 -> metrics [SinkBatch of HashWrite]
             side: stats [SinkBatch: counters, attribution's dead letters] -> job-stats
    catalog [chunk str] -> parse-catalog [CatalogItem | EmbeddingSwitch | ExperimentStart | ExperimentStop]
        -> content [ModelUpdate]  (side: facts -> trending; writes incl. experiment records, refused controls)
    user-state's attributed ads counts [AttributionCounts] + content's side sponsorships [SponsorshipUpdate]
        -> key 0 -> ad-spend [SinkBatch of HashWrite: campaign fields of metrics:ads]
    user-state [UserSnapshot] keyed by user shard  +  model updates broadcast -> scorer [SinkBatch]
    every operator's SinkBatch (writes, counters, dead letters) -> its own Redis sink
    a spool input: the parsers' spool files read [str] -> spool-retention (deletes them later)

Started from a backfill snapshot, the inputs carry bootstrap lines ahead of
every record (parsed into BootRecords that the operators load into their
state; a live input's come from streams of their own, merged through a
bootstrap gate: see :class:`pipelines.operators.BootGate`).

Each operator is documented in :mod:`pipelines.operators`; the maths is in
:mod:`transforms`.  Operators carry stable names and uids so savepoints
survive upgrades.

The event path has no Python operator of PyFlink's own: records bound for a
keyed operator leave their producer as ``Row(key, value)``
(:func:`pipelines.operators.keyed`) and are keyed in Java
(:func:`keyed_stream`), and side outputs are taken as Flink keeps them
(:func:`side_output`).  PyFlink's ``key_by`` and ``get_side_output`` each add
a Python operator that unpickles and pickles every record again; heartbeats
go on to user-state (which drops them) instead of through a filter.  Earlier
releases had those operators (``drop-heartbeats`` and ``evidence-resets`` had
uids); none holds state, so a savepoint of that layout restores.

Attribution runs inside user-state (same key, the user shard: no feedback
record crosses to another operator, and no window of it waits for a timer).
Earlier releases had a separate ``attribution`` operator (uid
``attribution``) fed by a feedback side output.  Flink refuses a savepoint of
that layout: "Cannot map checkpoint/savepoint state for operator
1c776bf8e858620128fb8cc3627ce105" (the hash of uid ``attribution``).  Restored
with ``--allow-non-restored-state`` that state is dropped: attribution starts
empty, so the clicks of impressions shown before the savepoint and the feedback
of windows open at the savepoint are not counted (profiles, models and the
metrics totals so far restore).  Its state cannot be moved across operators
from PyFlink; its names (``attribution``, ``attribution_last_ms``,
``attribution_last_sweep``) are kept under user-state all the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import DataStream, KeyedStream, OutputTag
from pyflink.java_gateway import get_gateway

from flowrec.config import Settings
from pipelines.messages import Bundle, Tick
from pipelines.operators import (
    ATTRIBUTED,
    DEAD_LETTERS,
    EVIDENCE_RESETS,
    FACTS,
    ITEM_DELTAS,
    KEYED,
    SPONSORSHIPS,
    STATS,
    TREND_DELTAS,
    WRITES,
    AdSpend,
    BootGate,
    ContentOperator,
    ItemModelOperator,
    ParseCatalog,
    MetricsAggregator,
    ParseEvents,
    RedisSink,
    Scorer,
    TrendingOperator,
    UserState,
    model_descriptor,
)
from pipelines.sources import JobSource
from pipelines.spool_retention import SPOOL_FILES_READ, SpoolRetention, retention_delay_ms
from state.embeddings import latest_version
from state.writes import Ttls

log = logging.getLogger(__name__)

PICKLED = Types.PICKLED_BYTE_ARRAY()


class JobSink(Protocol):
    """Attaches a terminal operator to a stream of SinkBatches."""

    def attach(self, stream, name: str, parallelism: int = 1) -> None: ...


@dataclass(frozen=True)
class RedisJobSink:
    """Every output to Redis (batched pipelines, retried, idempotent writes)."""

    url: str
    namespace: str = "flowrec"

    def attach(self, stream, name: str, parallelism: int = 1) -> None:
        stream.process(RedisSink(self.url, self.namespace)).name(f"redis-{name}").uid(f"redis-{name}").set_parallelism(parallelism)


class _SliceTimestamps(TimestampAssigner):
    """Event time of a record: a Bundle's latest event, a heartbeat's, catalog item's or bootstrap record's ``ts``."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value.max_ts if isinstance(value, Bundle) else value.ts


class _KeyedTimestamps(_SliceTimestamps):
    """Event time of a keyed record (:func:`pipelines.operators.keyed`): its value's."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return super().extract_timestamp(value[1], record_timestamp)


def keyed_stream(rows: DataStream) -> KeyedStream:
    """A stream of :data:`~pipelines.operators.KEYED` records keyed by their field 0, in Java.

    What ``key_by`` builds behind its Python key-extraction operator (a
    ``KeyByKeySelector`` on the Row's first field), without that operator:
    the producer already emitted ``Row(key, value)``
    (:func:`pipelines.operators.keyed`), and the keyed operator receives
    ``value``.  The records go from the producer straight to the partitioner,
    so each producer's records stay in order at any parallelism.
    """
    selector = get_gateway().jvm.KeyByKeySelector()
    return KeyedStream(rows._j_data_stream.keyBy(selector, Types.ROW([Types.INT()]).get_java_type_info()), PICKLED, rows)


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """``stream``'s side output ``tag``, as Flink keeps it: no Python operator, at ``stream``'s parallelism.

    PyFlink's ``get_side_output`` adds an identity map in Python (a Java/Python
    crossing per record, at the default parallelism, fed round-robin); the
    records are already of the tag's type.
    """
    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


def build_job(env, source: JobSource, sink: JobSink, settings: Settings) -> None:
    """Add the flowrec dataflow to ``env``: ``source`` in, everything out through ``sink``.

    The keyed operators (user state, item model, scorer) and the sinks of
    their side outputs run at ``settings.parallelism``; parsing at the
    source's parallelism; trending, content, metrics and ad spend at 1.  The
    default parallelism is 1 because PyFlink's ``key_by`` (still used off the
    event path, for low-volume streams) adds a key-extracting Python operator
    at the default parallelism or its input's: fed round-robin it could
    reorder a producer's records.  No edge is round-robin
    (tests/pipelines/test_job_graph.py).
    """
    config = settings.model
    env.set_parallelism(1)
    p = settings.parallelism
    ttls = Ttls(settings.user_ttl_s, settings.item_ttl_s)
    inputs = source.create(env)

    events_in = inputs.events if inputs.heartbeat is None else inputs.events.union(inputs.heartbeat)
    if inputs.boot is not None:
        events_in = _gate(events_in.union(inputs.boot.events), inputs.boot.event_lines, "bootstrap-gate")
    parsed = (
        events_in.process(ParseEvents(config.window_ms, settings.user_shards, accept_boot=inputs.bootstrapped), output_type=KEYED)
        .name("parse-events")
        .uid("parse-events")
        .set_parallelism(inputs.parallelism)
    )
    # [keyed(user shard, Bundle of EventSlice | BootRecord | Tick)]; side: dead letters [SinkBatch], spool files read [str]
    sink.attach(side_output(parsed, DEAD_LETTERS), "dead-letters", inputs.parallelism)
    retire_spool = inputs.spool_dir is not None and settings.spool_retention_s > 0
    spool_files_read = side_output(parsed, SPOOL_FILES_READ) if retire_spool else None
    event_time = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(settings.max_out_of_orderness_ms)).with_timestamp_assigner(_KeyedTimestamps())
    timed = parsed.assign_timestamps_and_watermarks(event_time).name("event-time").uid("event-time").set_parallelism(inputs.parallelism)
    # The same, with event time (heartbeats go on to user-state, which drops them: a filter would cost every record a call)

    users = (
        keyed_stream(timed)
        .process(UserState(config, settings.item_shards, settings.user_state_ttl_ms, rec_id_secret=settings.rec_id_secret if settings.attribution else None), output_type=KEYED)
        .name("user-state")
        .uid("user-state")
        .set_parallelism(p)
    )
    # [keyed(user shard, Bundle of UserSnapshot)] per call; side, per window as it closes: [keyed(item shard, Bundle of
    # ItemDelta)], [keyed(0, Bundle of TrendDelta)], [AttributionCounts]; counters [SinkBatch] at user-state's next
    # timer (at most STATS_FLUSH_MS later), or at once with a call's dead letters
    sink.attach(side_output(users, STATS), "job-stats", p)

    attributed = _metrics(side_output(users, ATTRIBUTED), sink) if settings.attribution else None

    item_deltas = side_output(users, ITEM_DELTAS)
    model_updates = None
    start_embeddings = initial_embeddings(settings)
    # Whether embedding switches reach the item model (online item vectors' evidence restarts at each).
    evidence_resets = config.online_item_vectors and (settings.embeddings is not None or config.weight_embedding > 0 or config.weight_sequence > 0)
    trend_input = side_output(users, TREND_DELTAS)

    catalog_in = inputs.catalog
    if inputs.boot is not None:
        # Sockets and Kafka have no catalog input: the snapshot's catalog is one all the same.
        catalog_in = inputs.boot.catalog if catalog_in is None else catalog_in.union(inputs.boot.catalog)
    if catalog_in is not None:
        catalog_in = catalog_in if inputs.heartbeat is None else catalog_in.union(inputs.heartbeat)
        if inputs.boot is not None:
            catalog_in = _gate(catalog_in, inputs.boot.catalog_lines, "bootstrap-catalog-gate")
        catalog = catalog_in.process(ParseCatalog(accept_boot=inputs.bootstrapped), output_type=PICKLED).name("parse-catalog").uid("parse-catalog").set_parallelism(1)
        # [CatalogItem | EmbeddingSwitch | ExperimentStart | ExperimentStop]; side: dead letters, spool files read
        sink.attach(side_output(catalog, DEAD_LETTERS), "catalog-dead-letters")
        if retire_spool:
            spool_files_read = spool_files_read.union(side_output(catalog, SPOOL_FILES_READ))
        # Live, the heartbeat moves the catalog's event time too, so upserts take
        # effect (and an idle catalog never holds back the event-time of the job).
        catalog_time = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(0)).with_timestamp_assigner(_SliceTimestamps())
        content = (
            catalog.assign_timestamps_and_watermarks(catalog_time)
            .name("catalog-time")
            .uid("catalog-time")
            .set_parallelism(1)
            .filter(lambda r: not isinstance(r, Tick))
            .name("drop-catalog-heartbeats")
            .uid("drop-catalog-heartbeats")
            .set_parallelism(1)
            .key_by(lambda item: 0, key_type=Types.INT())
            .process(ContentOperator(config, ttls, settings.item_shards if evidence_resets else 0, embeddings=start_embeddings), output_type=PICKLED)
            .name("content")
            .uid("content")
            .set_parallelism(1)
        )
        # [ModelUpdate: content, facts, embeddings, experiment]; side: [keyed(0, FactsUpdate)], writes [SinkBatch]
        sink.attach(side_output(content, WRITES), "catalog")
        trend_input = trend_input.union(side_output(content, FACTS))
        if attributed is not None:
            _ad_spend(attributed, side_output(content, SPONSORSHIPS), sink, config)
        model_updates = content
        if evidence_resets:
            # An embedding switch, to every item shard [keyed(item shard, Bundle of EvidenceReset)].
            item_deltas = item_deltas.union(side_output(content, EVIDENCE_RESETS))

    items = (
        keyed_stream(item_deltas)
        .process(ItemModelOperator(config, settings.item_shards, ttls, evidence_from_start=settings.embeddings is not None), output_type=PICKLED)
        .name("item-model")
        .uid("item-model")
        .set_parallelism(p)
    )
    # [Bundle of ModelUpdate: neighbours, online-vector evidence]; side: writes [SinkBatch]
    sink.attach(side_output(items, WRITES), "item-neighbours", p)
    model_updates = items if model_updates is None else model_updates.union(items)

    if retire_spool:
        delay_ms = retention_delay_ms(settings.spool_retention_s, settings.checkpoint_interval_ms)
        (
            spool_files_read.key_by(lambda _: 0, key_type=Types.INT())
            .process(SpoolRetention(str(inputs.spool_dir), delay_ms))
            .name("spool-retention")
            .uid("spool-retention")
            .set_parallelism(1)
        )

    trending = (
        keyed_stream(trend_input)
        .process(TrendingOperator(config), output_type=PICKLED)
        .name("trending")
        .uid("trending")
        .set_parallelism(1)
    )
    # [Bundle of ModelUpdate: trending]; side: writes
    sink.attach(side_output(trending, WRITES), "trending")
    model_updates = model_updates.union(trending)

    scored = (
        keyed_stream(users)
        .connect(model_updates.broadcast(model_descriptor()))
        .process(Scorer(config, ttls, record_freshness=settings.record_freshness, embeddings=start_embeddings), output_type=PICKLED)
        .name("scorer")
        .uid("scorer")
        .set_parallelism(p)
    )
    # [SinkBatch: user lists]
    sink.attach(scored, "user-lists", p)


def _metrics(attributed, sink: JobSink):
    """User-state's attribution counts [AttributionCounts] -> metrics (one instance) -> Redis.

    Returns ``attributed``, for the ad spend."""
    metrics = (
        attributed.key_by(lambda c: 0, key_type=Types.INT())
        .process(MetricsAggregator(), output_type=PICKLED)
        .name("metrics")
        .uid("metrics")
        .set_parallelism(1)
    )
    # [SinkBatch: HSET of absolute totals to the metrics:min / metrics:exp / metrics:ads hashes]
    sink.attach(metrics, "metrics")
    return attributed


def _ad_spend(attributed, sponsorships, sink: JobSink, config) -> None:
    """Campaign spend: user-state's attributed ad counts [AttributionCounts] joined with the sponsorships
    [SponsorshipUpdate] in effect for their window -> ad-spend (one instance) -> Redis."""
    # At parallelism 1, like the side output it is united with (a key_by after a union takes a forward edge).
    ad_counts = attributed.filter(lambda c: bool(c.ad_counts)).name("ad-counts").uid("ad-counts").set_parallelism(1)
    spend = (
        ad_counts.union(sponsorships)
        .key_by(lambda _: 0, key_type=Types.INT())
        .process(AdSpend(config), output_type=PICKLED)
        .name("ad-spend")
        .uid("ad-spend")
        .set_parallelism(1)
    )
    # [SinkBatch: HSET of absolute totals to the campaign fields of the metrics:ads hashes]
    sink.attach(spend, "ad-spend")


def initial_embeddings(settings: Settings) -> str | None:
    """The export version directory the scorer starts with (absolute), from ``settings.embeddings``."""
    if settings.embeddings is None:
        return None
    version = latest_version(settings.embeddings)
    if version is None:
        raise ValueError(f"no embedding export in {settings.embeddings} (expected a `flowrec train --out` directory)")
    if settings.model.weight_embedding <= 0 and settings.model.weight_sequence <= 0:
        log.warning("embeddings %s given, but weight_embedding and weight_sequence are 0: lists will not use them", version)
    return str(version.resolve())


def _gate(chunks, expected: int, name: str):
    """Live input started from a snapshot: ``expected`` bootstrap lines pass before any live chunk."""
    return (
        chunks.key_by(lambda _: 0, key_type=Types.INT())
        .process(BootGate(expected), output_type=Types.STRING())
        .name(name)
        .uid(name)
        .set_parallelism(1)
    )
