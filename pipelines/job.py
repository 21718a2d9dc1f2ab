"""The flowrec streaming job: one builder for every source, sink and cluster.

Dataflow (element shapes in brackets)::

    events [chunk str] -> parse-events [Bundle of EventSlice (one per window) per user shard | Tick | BootRecord]
        -> event-time (watermarks) -> key by user shard -> user-state (profiles and attribution) [Bundle of UserSnapshot]
             side: item-deltas [Bundle of ItemDelta] (+ content's [Bundle of EvidenceReset]) -> key by item shard -> item-model [Bundle of ModelUpdate]
             side: trend-deltas [Bundle of TrendDelta] -------------------> trending [Bundle of ModelUpdate]
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

from flowrec.config import Settings
from pipelines.messages import Bundle, Tick
from pipelines.operators import (
    ATTRIBUTED,
    DEAD_LETTERS,
    EVIDENCE_RESETS,
    FACTS,
    ITEM_DELTAS,
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


def build_job(env, source: JobSource, sink: JobSink, settings: Settings) -> None:
    """Add the flowrec dataflow to ``env``: ``source`` in, everything out through ``sink``.

    The keyed operators (user state, item model, scorer), the extraction of
    their side outputs and their sinks run at ``settings.parallelism``; parsing
    (at the source's parallelism), trending (fed round-robin, its input
    extracted at 1), content, metrics and ad spend at 1.  The default parallelism is 1 because PyFlink's ``key_by`` adds a
    key-extracting Python operator at the default parallelism (or its input's):
    at 1 behind a source at 1 it is fed over a forward edge and keeps each
    user's events in order, at more it would be fed round-robin and could
    reorder them.  No edge but trending's input is round-robin (tests/pipelines/test_job_graph.py).
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
        events_in.process(ParseEvents(config.window_ms, settings.user_shards, accept_boot=inputs.bootstrapped), output_type=PICKLED)
        .name("parse-events")
        .uid("parse-events")
        .set_parallelism(inputs.parallelism)
    )
    # [Bundle of EventSlice | Tick]; side: dead letters [SinkBatch], spool files read [str]
    sink.attach(parsed.get_side_output(DEAD_LETTERS), "dead-letters")
    # Only a spool input has files to retire: PyFlink adds a Python operator per side output taken.
    retire_spool = inputs.spool_dir is not None and settings.spool_retention_s > 0
    spool_files_read = parsed.get_side_output(SPOOL_FILES_READ) if retire_spool else None
    event_time = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(settings.max_out_of_orderness_ms)).with_timestamp_assigner(_SliceTimestamps())
    timed = parsed.assign_timestamps_and_watermarks(event_time).name("event-time").uid("event-time").set_parallelism(inputs.parallelism)
    slices = timed.filter(lambda r: not isinstance(r, Tick)).name("drop-heartbeats").uid("drop-heartbeats").set_parallelism(inputs.parallelism)
    # [Bundle of EventSlice | BootRecord] with event time

    users = (
        slices.key_by(lambda s: s.shard, key_type=Types.INT())
        .process(UserState(config, settings.item_shards, settings.user_state_ttl_ms, rec_id_secret=settings.rec_id_secret if settings.attribution else None), output_type=PICKLED)
        .name("user-state")
        .uid("user-state")
        .set_parallelism(p)
    )
    # [Bundle of UserSnapshot] per call; side, per window as it closes: [Bundle of ItemDelta], [Bundle of TrendDelta],
    # [AttributionCounts]; counters [SinkBatch] at user-state's next timer (at most STATS_FLUSH_MS later), or at
    # once with a call's dead letters
    sink.attach(_side_output(users, STATS, p), "job-stats", p)

    attributed = _metrics(_side_output(users, ATTRIBUTED, p), sink) if settings.attribution else None

    item_deltas = _side_output(users, ITEM_DELTAS, p)
    model_updates = None
    start_embeddings = initial_embeddings(settings)
    # Whether embedding switches reach the item model (online item vectors' evidence restarts at each).
    evidence_resets = config.online_item_vectors and (settings.embeddings is not None or config.weight_embedding > 0 or config.weight_sequence > 0)
    # Extracted at 1, the parallelism of trending and of content's facts it is united with
    # (a union's key extraction takes a forward edge from each input).
    trend_input = users.get_side_output(TREND_DELTAS)

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
        sink.attach(catalog.get_side_output(DEAD_LETTERS), "catalog-dead-letters")
        if retire_spool:
            spool_files_read = spool_files_read.union(catalog.get_side_output(SPOOL_FILES_READ))
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
        # [ModelUpdate: content, facts, embeddings, experiment]; side: [FactsUpdate], writes [SinkBatch]
        sink.attach(content.get_side_output(WRITES), "catalog")
        trend_input = trend_input.union(content.get_side_output(FACTS))
        if attributed is not None:
            _ad_spend(attributed, content.get_side_output(SPONSORSHIPS), sink, config)
        model_updates = content
        if evidence_resets:
            # An embedding switch, to every item shard [Bundle of EvidenceReset]: round-robin to the
            # item deltas' parallelism (the item model orders them by window, so arrival order is free).
            resets = content.get_side_output(EVIDENCE_RESETS).map(lambda r: r, output_type=PICKLED).name("evidence-resets").uid("evidence-resets").set_parallelism(p)
            item_deltas = item_deltas.union(resets)

    items = (
        item_deltas.key_by(lambda d: d.shard, key_type=Types.INT())
        .process(ItemModelOperator(config, settings.item_shards, ttls, evidence_from_start=settings.embeddings is not None), output_type=PICKLED)
        .name("item-model")
        .uid("item-model")
        .set_parallelism(p)
    )
    # [Bundle of ModelUpdate: neighbours, online-vector evidence]; side: writes [SinkBatch]
    sink.attach(_side_output(items, WRITES, p), "item-neighbours", p)
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
        trend_input.key_by(lambda m: 0, key_type=Types.INT())
        .process(TrendingOperator(config), output_type=PICKLED)
        .name("trending")
        .uid("trending")
        .set_parallelism(1)
    )
    # [Bundle of ModelUpdate: trending]; side: writes
    sink.attach(trending.get_side_output(WRITES), "trending")
    model_updates = model_updates.union(trending)

    scored = (
        users.key_by(lambda s: s.shard, key_type=Types.INT())
        .connect(model_updates.broadcast(model_descriptor()))
        .process(Scorer(config, ttls, record_freshness=settings.record_freshness, embeddings=start_embeddings), output_type=PICKLED)
        .name("scorer")
        .uid("scorer")
        .set_parallelism(p)
    )
    # [SinkBatch: user lists]
    sink.attach(scored, "user-lists", p)


def _side_output(stream, tag, parallelism: int):
    """``stream``'s side output ``tag``, extracted at ``parallelism`` (``stream``'s own).

    PyFlink extracts a side output with a Python operator created at the
    default parallelism (1); at ``stream``'s parallelism it is fed over a
    forward edge instead of round-robin, so what follows (a key-extraction
    operator, a sink) scales with the job and each producer's records stay in
    order.
    """
    return stream.get_side_output(tag).set_parallelism(parallelism)


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
