"""The job's Flink functions.  Each is thin: read state, call a pure function from
:mod:`transforms`, write state, emit.

Windows: a window ``w`` covers event time ``[w*W, (w+1)*W)``.  Operators that
act at window close hold the window's input in managed state and register an
event-time timer at ``(w+1)*W - 1``; Flink fires it once the watermark has
passed, emits what the timer produced, and only then forwards the watermark,
so the next operator's timer for ``w`` sees everything of ``w``.  That is what
makes the job compute exactly what :mod:`transforms.engine` computes.

State is managed (checkpointed).  Operators also keep a decoded copy of their
state in memory, written through on every change: after a restore or
rescale the copy is empty and is rebuilt from managed state on first use.
"""

from __future__ import annotations

import bisect
import gc
import logging
import math
import time
from typing import Callable, Iterable

import numpy as np
import orjson
from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, TimeDomain
from pyflink.datastream.functions import KeyedBroadcastProcessFunction, KeyedProcessFunction, ProcessFunction
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from pipelines.bootstrap import (
    BOOT_PREFIX,
    BootRecord,
    decode_boot_line,
    load_content_state,
    load_item_state,
    load_trending_state,
    load_user_state,
)
from pipelines.messages import (
    AttributionCounts,
    Bundle,
    EvidenceReset,
    EventSlice,
    FactsUpdate,
    ItemDelta,
    ModelUpdate,
    ShardCache,
    SinkBatch,
    SponsorshipUpdate,
    Tick,
    TrendDelta,
    UserSnapshot,
    decode_attribution_counts,
    decode_pending,
    encode_attribution_counts,
    encode_pending,
    shard_of,
    split_pairs,
    unbundled,
)
from pipelines.spool_retention import SPOOL_FILES_READ
from pipelines.spoolfiles import END_PREFIX, ended_file
from state.embeddings import ExportError, read_export
from state.itemstate import ItemModelStore
from state.keys import KeyKind
from state.metrics import ADS_TTL_S, DAY_MS, DAYS, EXPERIMENTS, MINUTE_MS, MINUTES, RunningTotals, ads_field, format_value
from state.profile_log import MAX_DECODED, ProfileLog
from state.recent import RecentlyUsed
from state.schemas import (
    decode_attribution,
    decode_blend_learner,
    decode_blend_memo,
    decode_cold_prior,
    decode_embedding_ref,
    decode_evidence,
    decode_experiment_record,
    decode_experiment_ref,
    decode_facts,
    decode_profile,
    decode_scored,
    decode_sponsored,
    decode_sponsorships,
    decode_totals,
    decode_versions,
    encode_attribution,
    encode_blend_learner,
    encode_blend_memo,
    encode_cold_prior,
    encode_embedding_ref,
    encode_evidence,
    encode_experiment_record,
    encode_experiment_ref,
    encode_facts,
    encode_profile,
    encode_scored,
    encode_sponsored,
    encode_sponsorships,
    encode_totals,
    encode_versions,
)
from state.store import HashWrite
from state.writes import Ttls, catalog_write, experiment_writes, keyable, neighbour_write, trending_write, user_writes
from transforms.ads import Sponsorship, campaign_counts, sponsored_bids, sponsorships
from transforms.attribution import expired, feed
from transforms.blend import CONTEXTS, memo_key, score_and_learn, served_weights
from transforms.catalog import CatalogItem, EmbeddingSwitch, parse_catalog_lines, validate_catalog_record, validate_embedding_switch
from transforms.config import ModelConfig, event_weights
from transforms.content import ContentIndex
from transforms.cooccurrence import ItemModel, sum_by_key
from transforms.embedding import EmbeddingModel, OnlineItemVectors
from transforms.engine import content_neighbours
from transforms.events import EventBatch, parse_json_lines, split_feedback
from transforms.livemetrics import minute_start
from transforms.experiments import ExperimentControl, ExperimentStart, ExperimentStop, apply_control, control_order, score_by_variant, validate_experiment_control
from transforms.profile import ItemContribution, UserProfile, apply_window, group_by_user, scorable
from transforms.scoring import AllowedMemo, ItemCodes, ScoringModel
from transforms.trending import TrendingModel, TrendingState
from transforms.windows import WindowClock

log = logging.getLogger(__name__)

LONG_MAX = 2**63 - 1
# The scorer's online item vectors: models kept (by newest evidence version); cached vectors are
# pruned to the broadcast state's versions when they outgrow this many times what was live.
ONLINE_MODELS_KEPT = 4
ONLINE_CACHE_FACTOR = 2
# Broadcast entries the online item vectors read: evidence (item model) and cold priors (content).
ONLINE_PREFIXES = ("o:", "v:")
# SinkBatch.stats entries that are set (HSET), not added: the last closed window, the embeddings in use.
GAUGES = ("last_window_ts", "embeddings_version", "embeddings_online_items")
# Gauges named per shard: the blend each user shard serves ("blend.home.{shard}.setting", ".weight_cf"...).
BLEND_GAUGE_PREFIX = "blend."


def is_gauge(name: str) -> bool:
    """Whether a SinkBatch.stats entry is set (a gauge) rather than added (a counter)."""
    return name in GAUGES or name.startswith(BLEND_GAUGE_PREFIX)


def merge_stats(into: dict, stats: dict) -> dict:
    """``stats`` added to ``into`` (counters add up, gauges take the later value); returns ``into``."""
    for key, value in stats.items():
        into[key] = value if is_gauge(key) else into.get(key, 0) + value
    return into


TICK_PREFIX = "\x00tick:"

# The records of a stream that feeds a keyed operator: Row(key, value) (see keyed).
KEYED = Types.ROW([Types.INT(), Types.PICKLED_BYTE_ARRAY()])


def keyed(key: int, value) -> Row:
    """``value`` with the key of the operator it goes to (a stream of :data:`KEYED` records).

    The stream is keyed by field 0 in Java (:func:`pipelines.job.keyed_stream`)
    and the keyed operator receives ``value``.  PyFlink's ``key_by`` would add
    a Python operator that unpickles each record, calls the key selector and
    pickles it again, and ``get_side_output`` an identity map doing the same:
    on the event path those were most of a bundle's crossings between Java
    and Python, each a wait for the interpreter lock in thread mode.
    """
    return Row(key, value)


DEAD_LETTERS = OutputTag("dead-letters", Types.PICKLED_BYTE_ARRAY())
ITEM_DELTAS = OutputTag("item-deltas", KEYED)
TREND_DELTAS = OutputTag("trend-deltas", KEYED)
FACTS = OutputTag("facts", KEYED)
SPONSORSHIPS = OutputTag("sponsorships", Types.PICKLED_BYTE_ARRAY())
WRITES = OutputTag("writes", Types.PICKLED_BYTE_ARRAY())
STATS = OutputTag("stats", Types.PICKLED_BYTE_ARRAY())
ATTRIBUTED = OutputTag("attributed", Types.PICKLED_BYTE_ARRAY())
EVIDENCE_RESETS = OutputTag("evidence-resets", KEYED)


def model_descriptor() -> MapStateDescriptor:
    """The scorer's broadcast state (made by a function: descriptors do not pickle)."""
    return MapStateDescriptor("model", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


def _bytes_map(ctx, name: str):
    return ctx.get_map_state(MapStateDescriptor(name, Types.STRING(), Types.PICKLED_BYTE_ARRAY()))


def _bytes_value(ctx, name: str):
    return ctx.get_state(ValueStateDescriptor(name, Types.PICKLED_BYTE_ARRAY()))


def _dead_letter_batch(rejections) -> SinkBatch:
    stats = {"dead_letters": len(rejections)}
    for r in rejections:
        stats[f"dead_letters:{r.reason}"] = stats.get(f"dead_letters:{r.reason}", 0) + 1
    return SinkBatch(dead_letters=[r.to_json() for r in rejections], stats=stats)


# CPython's cyclic garbage collector thresholds for the TaskManager's Python (gen0, gen1, gen2).
# The default (700, 10, 10) runs a young collection every 700 container allocations; the scorer
# alone allocates some 100k list entries per window, so the collector ran thousands of times a
# second over a heap of models and state.  Measured on the default bench shop (`python -m
# bench.stream --parts replay --modes thread`, interleaved): 7,571-7,842 events/s with the
# default, 8,431-9,393 with these (peak memory unchanged, about 1.9 GB for the whole run).
GC_THRESHOLDS = (100_000, 50, 100)


def tune_collector() -> None:
    """Set :data:`GC_THRESHOLDS` for this Python interpreter (every operator's ``open`` calls it:
    in thread mode they share the TaskManager's interpreter, in process mode each worker has its own)."""
    gc.set_threshold(*GC_THRESHOLDS)


# The longest a user-state call's counters wait before they leave for Redis (processing time).
STATS_FLUSH_MS = 100


class TimerMemo:
    """The timers (event time, or processing time) this instance has registered, per key, until they fire.

    Why: in thread mode every call from Python into Java (a state access, a
    timer, a counter, an output) lets go of the interpreter lock, and taking it
    back waits while any other operator's Python runs (up to the interpreter's
    switch interval), so each such call on the per-record path delays the
    record far more than the call costs.  Registering a timer Flink already
    holds changes nothing, so each one is registered once.  The memo is only a
    shortcut: after a restart it is empty and the first registration of each
    timer is repeated, which Flink ignores.
    """

    def __init__(self, processing_time: bool = False) -> None:
        self.processing_time = processing_time
        self.registered: dict[int, set[int]] = {}

    def register(self, ctx, key: int, timestamp: int) -> None:
        """Register ``timestamp`` for ``key`` (the current key) unless it is already registered."""
        timers = self.registered.setdefault(key, set())
        if timestamp not in timers:
            if self.processing_time:
                ctx.timer_service().register_processing_time_timer(timestamp)
            else:
                ctx.timer_service().register_event_time_timer(timestamp)
            timers.add(timestamp)

    def pending(self, key: int) -> bool:
        """Whether a timer of ``key`` is registered and has not fired."""
        return bool(self.registered.get(key))

    def forget(self, key: int, up_to: int) -> None:
        """Timers of ``key`` up to ``up_to`` have fired or were deleted (the next registration must reach Flink)."""
        timers = self.registered.get(key)
        if timers:
            self.registered[key] = {t for t in timers if t > up_to}


class ValueByKey:
    """A keyed ValueState read once per key and written through (see :class:`TimerMemo` for why)."""

    def __init__(self, state) -> None:
        self.state = state
        self.values: dict[int, object] = {}

    def get(self, key: int):
        """The value for ``key``, the current key."""
        if key not in self.values:
            self.values[key] = self.state.value()
        return self.values[key]

    def set(self, key: int, value) -> None:
        """Update the value for ``key``, the current key."""
        self.values[key] = value
        self.state.update(value)

    def clear(self, key: int) -> None:
        """Clear the value for ``key``, the current key."""
        self.values[key] = None
        self.state.clear()


class MapByKey:
    """A keyed MapState's entries, read from state once per key and entry and written through
    (see :class:`TimerMemo` for why), absence remembered too.  (Not ``put_all``: PyFlink 2.3's,
    in process mode, iterates the dict it is given as if it held pairs, and fails.)

    Every method takes the current key.  Values are kept as ``decode`` makes
    them from the stored bytes and stored as ``encode`` makes them (both the
    identity by default).  At most ``max_cached`` entries are kept in memory,
    the least recently used forgotten first (read from state again when next
    asked for), so a shop with more users than that keeps its active ones.
    """

    def __init__(self, state, decode: Callable = lambda raw: raw, encode: Callable = lambda value: value, max_cached: int = 200_000) -> None:
        self.state = state
        self.decode = decode
        self.encode = encode
        self.cached: RecentlyUsed[tuple[int, str], object] = RecentlyUsed(max_cached)

    def get(self, key: int, entry: str):
        found = self.cached.get((key, entry), self)
        if found is self:
            raw = self.state.get(entry)
            found = None if raw is None else self.decode(raw)
            self.cached.keep((key, entry), found)
        return found

    def put(self, key: int, entry: str, value) -> None:
        self.state.put(entry, self.encode(value))
        self.cached.keep((key, entry), value)

    def remove(self, key: int, entry: str) -> None:
        if self.cached.get((key, entry), self) is not None:
            self.state.remove(entry)
            self.cached.keep((key, entry), None)

    def items(self, key: int):
        """Every entry of ``key`` as stored."""
        return self.state.items()

    def __len__(self) -> int:
        """Entries held in memory (at most ``max_cached``)."""
        return len(self.cached)


class PendingByWindow:
    """Messages kept in a MapState until the timer of their window fires.

    Keys sort by window, then arrival; the arrival counter starts from the
    clock at open so entries restored from a checkpoint sort before new ones.
    """

    def __init__(self, state) -> None:
        self.state = state
        self.counter = time.time_ns()

    def add(self, window: int, raw: bytes) -> None:
        self.counter += 1
        self.state.put(f"{window:020d}:{self.counter:020d}", raw)

    def drop_users_after(self, window: int, users: set[str]) -> None:
        """Remove ``users`` from the "users" payloads pending for windows after ``window``.

        Snapshots of a user that arrived before their forget, pending for a later
        window (events stamped ahead of the clock), would otherwise write the
        forgotten profile back when that window closes.
        """
        for key in [k for k in self.state.keys() if int(k[:20]) > window]:
            kind, w, payload = decode_pending(self.state.get(key))
            if not users & payload["p"].keys():
                continue
            payload = {"p": {u: p for u, p in payload["p"].items() if u not in users}, "t": {u: t for u, t in payload["t"].items() if u not in users}}
            if payload["p"]:
                self.state.put(key, encode_pending(kind, w, payload))
            else:
                self.state.remove(key)

    def take(self, up_to_window: int) -> list[bytes]:
        return [raw for _, messages in self.take_windows(up_to_window) for raw in messages]

    def take_windows(self, up_to_window: int) -> list[tuple[int, list[bytes]]]:
        """Every message of the windows up to ``up_to_window``, per window (ascending), removed from state."""
        due = sorted(k for k in self.state.keys() if int(k[:20]) <= up_to_window)
        out: list[tuple[int, list[bytes]]] = []
        for k in due:
            window = int(k[:20])
            if not out or out[-1][0] != window:
                out.append((window, []))
            out[-1][1].append(self.state.get(k))
            self.state.remove(k)
        return out


def boot_model_updates(entries: list[tuple[int, str, bytes]]) -> list[ModelUpdate]:
    """A bootstrap record's Scorer entries as ModelUpdates, one per producing window (oldest first)."""
    by_window: dict[int, list[tuple[str, bytes]]] = {}
    for window, key, value in entries:
        by_window.setdefault(window, []).append((key, value))
    return [ModelUpdate(window, by_window[window]) for window in sorted(by_window)]


def _spool_file_read(chunk: str) -> Iterable:
    """A spool file's end marker: the file's name to the spool retention (anything else is ignored)."""
    name = ended_file(chunk)
    if name is not None:
        yield SPOOL_FILES_READ, name


def split_chunk(chunk: str) -> list[str]:
    """Records of a chunk: separated by newlines or by the record separator (see pipelines.sources)."""
    return chunk.replace("\x1e", "\n").split("\n")


def take_due_windows(ctx, timestamp: int, clock: WindowClock, pending: "PendingByWindow", timers: tuple[TimerMemo, int] | None = None) -> list[tuple[int, list[bytes]]]:
    """The pending messages of every window whose timer the watermark has passed, per window, ascending.

    One timer pass closes them all (in order) and deletes their timers, so a burst
    of sparse windows costs one call and one scan of the pending state, not one per
    window.  Without a readable watermark it closes the timer's own window only.
    ``timers``: the memo the timers were registered through and the current key,
    told what fired and what was deleted.
    """
    firing = clock.window_of_timer(timestamp)
    try:
        watermark = ctx.timer_service().current_watermark()
    except Exception:  # noqa: BLE001 - a context without the watermark: close the timer's own window
        watermark = timestamp
    due = pending.take_windows(max(firing, clock.window_of_timer(max(watermark, timestamp))))
    for window, _ in due:
        if window != firing:  # the firing timer is already gone
            ctx.timer_service().delete_event_time_timer(clock.timer(window))
    if timers is not None:
        memo, key = timers
        memo.forget(key, max([timestamp] + [clock.timer(window) for window, _ in due]))
    return due


# -- parsing -------------------------------------------------------------------


class ParseEvents(ProcessFunction):
    """Chunk of JSON lines -> per user shard, a Bundle of EventSlices (one per window), keyed by the shard
    (:func:`keyed`); bad records -> dead letters.

    A job started from a snapshot (``accept_boot``) also gets bootstrap lines,
    one per chunk, ahead of every event: each becomes a :class:`BootRecord`
    for the user state to load or route.  Otherwise such a line is no more
    than malformed JSON (dead-lettered), so no producer can inject state.
    """

    def __init__(self, window_ms: int, user_shards: int, accept_boot: bool = False) -> None:
        self.window_ms = window_ms
        self.user_shards = user_shards
        self.accept_boot = accept_boot
        # Users outnumber items: a smaller cache (a chunk's users are hashed once either way).
        self.user_shard_of = ShardCache(user_shards, max_known=50_000)

    def open(self, runtime_context) -> None:
        tune_collector()
        metrics = runtime_context.get_metrics_group()
        self.events_in = metrics.counter("events_in")
        self.dead_letters = metrics.counter("dead_letters")

    def process_element(self, chunk: str, ctx) -> Iterable:
        # [keyed(user shard, Bundle of EventSlice | BootRecord | Tick)]: a heartbeat goes on to user-state
        # (shard 0, which ignores it) after moving event time, rather than through a filter every record pays for.
        if chunk.startswith(TICK_PREFIX):
            yield keyed(0, Tick(int(chunk[len(TICK_PREFIX):])))
            return
        if self.accept_boot and chunk.startswith(BOOT_PREFIX):
            record = decode_boot_line(chunk)
            yield keyed(record.shard, record)
            return
        if chunk.startswith(END_PREFIX):
            yield from _spool_file_read(chunk)
            return
        result = parse_json_lines(split_chunk(chunk))
        if result.rejections:
            self.dead_letters.inc(len(result.rejections))
            yield DEAD_LETTERS, _dead_letter_batch(result.rejections)
        events = result.events
        if not len(events):
            return
        self.events_in.inc(len(events))
        events = events.sorted_by_time()
        windows = events.ts // self.window_ms
        shards = self.user_shard_of.of(events.user.tolist())
        key = windows * self.user_shards + shards
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        bounds = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1], True])
        by_shard: dict[int, list[EventSlice]] = {}
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            rows = order[s:e]
            part = events.take(rows)
            shard = int(shards[rows[0]])
            by_shard.setdefault(shard, []).append(EventSlice(int(windows[rows[0]]), shard, part, int(part.ts.max())))
        for shard in sorted(by_shard):
            slices = sorted(by_shard[shard], key=lambda piece: piece.window)
            yield keyed(shard, Bundle(shard, slices, max(piece.max_ts for piece in slices)))


class ParseCatalog(ProcessFunction):
    """Chunk of catalog JSON lines -> CatalogItems and control records (embedding switches, experiment
    controls); bad records -> dead letters (bootstrap lines as in ParseEvents)."""

    def __init__(self, accept_boot: bool = False) -> None:
        self.accept_boot = accept_boot

    def process_element(self, chunk: str, ctx) -> Iterable:
        if chunk.startswith(TICK_PREFIX):
            yield Tick(int(chunk[len(TICK_PREFIX):]))
            return
        if self.accept_boot and chunk.startswith(BOOT_PREFIX):
            yield decode_boot_line(chunk)
            return
        if chunk.startswith(END_PREFIX):
            yield from _spool_file_read(chunk)
            return
        switches: list[EmbeddingSwitch | ExperimentControl] = []
        items, rejections = parse_catalog_lines(split_chunk(chunk), switches)
        if rejections:
            yield DEAD_LETTERS, _dead_letter_batch(rejections)
        yield from items
        yield from switches


class BootGate(KeyedProcessFunction):
    """Single key: a live input's bootstrap lines pass before any live record.

    A live job started from a snapshot reads its bootstrap lines from a
    bounded source of their own, and Flink does not order records across
    sources.  The gate holds live chunks in state until all ``expected``
    bootstrap lines have passed (they come in order, from one file), then
    releases them in arrival order.  Heartbeats are dropped meanwhile — the
    next one supersedes them — so event time starts only once the state is
    loaded and no held event is late.  The gate's state is checkpointed;
    once open it stays open, and a bootstrap line after that is dropped.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected

    def open(self, runtime_context) -> None:
        tune_collector()
        self.seen = runtime_context.get_state(ValueStateDescriptor("boot_seen", Types.LONG()))
        self.held = runtime_context.get_list_state(ListStateDescriptor("held", Types.STRING()))

    def process_element(self, chunk: str, ctx) -> Iterable:
        seen = self.seen.value() or 0
        if chunk.startswith(BOOT_PREFIX):
            if seen >= self.expected:
                log.warning("dropping a bootstrap line that came after the bootstrap finished")
                return
            seen += 1
            self.seen.update(seen)
            yield chunk
            if seen == self.expected:
                held = list(self.held.get() or ())
                self.held.clear()
                log.info("bootstrap loaded (%d lines); releasing %d held chunks", seen, len(held))
                yield from held
        elif seen >= self.expected:
            yield chunk
        elif not chunk.startswith(TICK_PREFIX):
            self.held.add(chunk)


# -- user state ------------------------------------------------------------------


class UserState(KeyedProcessFunction):
    """Keyed by user shard: applies events to profiles, kept as a log of profile blocks.

    Emits per call a Bundle of UserSnapshots keyed by the shard (to the scorer); per window, when its timer
    fires, the ItemDeltas (one per item shard) and the TrendDelta of every
    slice of the window; counters (:data:`STATS`) at the next timer of
    either kind after the bundles that counted them, at most
    :data:`STATS_FLUSH_MS` of processing time later.  Late events —
    whose window the watermark has already closed — are counted and folded
    into the open window.  Users inactive for ``user_ttl_ms`` of event time
    are dropped by a sweep.

    Attribution runs here too, on the same key, unless ``rec_id_secret`` is
    None (attribution off): the feedback rows of each bundle (impressions,
    outcomes, forgets; :func:`transforms.events.split_feedback`) go to
    :class:`FeedbackAttribution` on arrival, which emits what they counted as
    :class:`~pipelines.messages.AttributionCounts` (:data:`ATTRIBUTED`, one per
    window, sent when that window closes) and adds its counters to the
    bundle's; its dead letters leave with the call (and the counters held
    so far with them).  Its state is that of the ``attribution`` operator of
    earlier releases (same state names, now under ``user-state``); a savepoint
    of that layout is refused by Flink (its ``attribution`` state has no
    operator), and restored with ``--allow-non-restored-state`` it loses the
    impressions then in reach and the feedback of windows then open (see
    :mod:`pipelines.job`).

    Why deltas wait for their window: a live input record (a socket line, a
    Kafka message) carries a few events, and each record sent on to the item
    model and trending costs Python operator calls (the operator, its
    pending state) and a crossing between Java and Python; one record
    per window and user shard, whatever the number of input records, keeps
    that cost per window.  They wait in the MapState ``outbox`` (window ->
    the window's deltas and attribution's counts of each call,
    :func:`encode_pending`),
    emitted and removed by the window's timer: the watermark that closes the
    window downstream follows them, and a restore replays none twice.  The
    counters of such calls wait too (ValueState ``held-stats``), for the
    next timer: the window's, or a processing-time timer at most
    :data:`STATS_FLUSH_MS` away, so a live job whose windows wait for the
    events' own watermark still shows what it has read; they leave once.

    State: the MapState ``profile-log`` (block number -> profile block), laid
    out and cleaned by :class:`state.profile_log.ProfileLog`: one put per call
    with every user the call changed, not a put per user.  The shard's users
    are in memory; a shard is read from state when this instance first sees it
    (after a start, restore or rescale).  A savepoint of the earlier per-user
    layout (MapStates ``profiles`` and ``last_seen``) is migrated into the log
    then, and those states cleared.
    """

    def __init__(self, config: ModelConfig, item_shards: int, user_ttl_ms: int, sweep_every_ms: int = 3_600_000, rec_id_secret: str | None = None) -> None:
        self.config = config
        self.item_shards = item_shards
        self.user_ttl_ms = user_ttl_ms
        self.item_shard_of = ShardCache(item_shards)
        self.sweep_every_ms = sweep_every_ms
        self.rec_id_secret = rec_id_secret

    def open(self, runtime_context) -> None:
        tune_collector()
        self.blocks = runtime_context.get_map_state(MapStateDescriptor("profile-log", Types.LONG(), Types.PICKLED_BYTE_ARRAY()))
        # The per-user layout of earlier releases, read once per shard to migrate it.
        self.legacy_profiles = _bytes_map(runtime_context, "profiles")
        self.legacy_last_seen = runtime_context.get_map_state(MapStateDescriptor("last_seen", Types.STRING(), Types.LONG()))
        self.last_sweep = ValueByKey(runtime_context.get_state(ValueStateDescriptor("last_sweep", Types.LONG())))
        self.outbox = PendingByWindow(_bytes_map(runtime_context, "outbox"))
        self.timers = TimerMemo()
        self.held_stats = ValueByKey(_bytes_value(runtime_context, "held-stats"))
        self.flush_timers = TimerMemo(processing_time=True)
        self.logs: dict[int, ProfileLog] = {}
        # The most recently used profiles, decoded, of every shard this instance holds (one bound for all).
        self.decoded: RecentlyUsed[str, UserProfile] = RecentlyUsed(MAX_DECODED)
        metrics = runtime_context.get_metrics_group()
        self.late_counter = metrics.counter("late_events")
        self.users_counter = metrics.counter("profiles_updated")
        # Profiles updated since the last timer: the metric is told at timers, not per call (see TimerMemo).
        self.users_updated = 0
        self.attribution = FeedbackAttribution(runtime_context, self.config, self.rec_id_secret) if self.rec_id_secret is not None else None

    def _log(self, shard: int) -> ProfileLog:
        """The shard's profiles; read from state the first time (the current key must be ``shard``)."""
        found = self.logs.get(shard)
        if found is None:
            found = self.logs[shard] = ProfileLog.restore(self.blocks.items(), decoded=self.decoded)
            if not self.legacy_profiles.is_empty():
                migrated = found.migrate(self.legacy_profiles.items(), dict(self.legacy_last_seen.items()))
                self.legacy_profiles.clear()
                self.legacy_last_seen.clear()
                self._flush(found)
                log.info("user shard %d: migrated %d profiles of the per-user layout into the profile log", shard, migrated)
            elif found.blocks:
                log.info("user shard %d: %d profiles restored from %d blocks", shard, len(found), found.blocks)
        return found

    def _flush(self, profile_log: ProfileLog) -> None:
        puts, removes = profile_log.flush()
        for seq, raw in puts:
            self.blocks.put(seq, raw)
        for seq in removes:
            self.blocks.remove(seq)

    def process_element(self, value: Bundle | BootRecord | Tick, ctx) -> Iterable:
        if isinstance(value, Tick):
            return  # a heartbeat: it has moved event time on its way here
        if isinstance(value, BootRecord):
            yield from self._boot(value)
            return
        # One bundle in: [Bundle of UserSnapshot] out; the item and trend deltas and what
        # attribution counted (per window) into the outbox until their window's timer; the
        # counters held until the next timer, or out at once [SinkBatch] with attribution's
        # dead letters or when nothing waits for a window.
        clock = WindowClock.of(self.config)
        watermark = ctx.timer_service().current_watermark()
        profile_log = self._log(value.shard)
        snapshots: list[UserSnapshot] = []
        held: dict[int, dict] = {}  # window -> this call's outbox payload for it
        feedback: list[tuple[int, EventBatch]] = []
        events_in = late = 0
        for piece in value.parts:
            interactions, piece_feedback = split_feedback(piece.events)
            if self.attribution is not None and len(piece_feedback):
                feedback.append((piece.window, piece_feedback))
            events_in += len(piece.events)
            if not len(interactions):
                # Impressions alone: no window for the model.  Empty deltas would still make the
                # item model and trending close this window, and a refresh due in its slot would
                # then run here, before the slot's windows with events (the reference engine drops
                # impressions before windowing).
                continue
            snapshot, piece_deltas, trend, piece_late = self._apply(profile_log, piece, interactions, watermark)
            snapshots.append(snapshot)
            entry = held.setdefault(snapshot.window, _outbox_entry())
            entry["d"].append([[d.events, d.items, d.item_weights, d.pair_a, d.pair_b, d.pair_weights] for d in piece_deltas])
            entry["t"].append([trend.events, trend.items, trend.ts, trend.weights])
            late += piece_late
        self._sweep(value.shard, profile_log, value.max_ts)
        self._flush(profile_log)
        yield keyed(value.shard, Bundle(value.shard, snapshots))
        stats = {"events": events_in, "late_events": late}
        dead_letters: list = []
        if feedback:
            counts, attributed = self.attribution.attribute(value.shard, feedback, watermark)
            for found in counts:
                held.setdefault(found.window, _outbox_entry())["a"].append(encode_attribution_counts(found))
            stats |= attributed.stats
            dead_letters = attributed.dead_letters
        for window, payload in held.items():
            self.outbox.add(window, encode_pending("outbox", window, payload))
            self.timers.register(ctx, value.shard, clock.timer(window))
        if held and not dead_letters:
            self._hold_stats(ctx, value.shard, stats)
        else:
            # Nothing went to the outbox, so no window timer is sure to come: the counters leave now.
            yield STATS, SinkBatch(dead_letters=dead_letters, stats=self._release_stats(value.shard, stats))

    def _hold_stats(self, ctx, shard: int, stats: dict) -> None:
        """Add the call's counters to the shard's held ones, to leave within ``STATS_FLUSH_MS`` of processing time."""
        held = self.held_stats.get(shard)
        self.held_stats.set(shard, orjson.dumps(merge_stats(orjson.loads(held) if held else {}, stats)))
        if not self.flush_timers.pending(shard):
            self.flush_timers.register(ctx, shard, ctx.timer_service().current_processing_time() + STATS_FLUSH_MS)

    def _release_stats(self, shard: int, stats: dict) -> dict:
        """The shard's held counters (cleared) with ``stats`` added."""
        held = self.held_stats.get(shard)
        if not held:
            return stats
        self.held_stats.clear(shard)
        return merge_stats(orjson.loads(held), stats)

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        # Every window due: [Bundle of ItemDelta] per item shard and [Bundle of TrendDelta]
        # (a delta per window: its calls' deltas in order), what attribution counted
        # [AttributionCounts] (each call's, in order).
        key = ctx.get_current_key()
        if self.users_updated:
            self.users_counter.inc(self.users_updated)
            self.users_updated = 0
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.flush_timers.forget(key, timestamp)
            if stats := self._release_stats(key, {}):
                yield STATS, SinkBatch(stats=stats)
            return
        deltas: dict[int, list[ItemDelta]] = {shard: [] for shard in range(self.item_shards)}
        trends: list[TrendDelta] = []
        for window, raws in take_due_windows(ctx, timestamp, WindowClock.of(self.config), self.outbox, (self.timers, key)):
            shards = [[0, [], [], [], [], []] for _ in range(self.item_shards)]
            trend = [0, [], [], []]
            applied = False
            for raw in raws:
                _, _, payload = decode_pending(raw)
                for found in payload["a"]:
                    yield ATTRIBUTED, decode_attribution_counts(found)
                for piece in payload["d"]:
                    applied = True
                    for merged, delta in zip(shards, piece):
                        merged[0] += delta[0]
                        for column in range(1, 6):
                            merged[column] += delta[column]
                for piece in payload["t"]:
                    trend[0] += piece[0]
                    for column in range(1, 4):
                        trend[column] += piece[column]
            if applied:
                for shard, merged in enumerate(shards):
                    deltas[shard].append(ItemDelta(window, shard, *merged))
                trends.append(TrendDelta(window, *trend))
        for shard, parts in deltas.items():
            if parts:
                yield ITEM_DELTAS, keyed(shard, Bundle(shard, parts))
        if trends:
            yield TREND_DELTAS, keyed(0, Bundle(0, trends))
        if stats := self._release_stats(key, {}):
            yield STATS, SinkBatch(stats=stats)

    def _apply(self, profile_log: ProfileLog, value: EventSlice, events: EventBatch, watermark: int) -> tuple[UserSnapshot, list[ItemDelta], TrendDelta, int]:
        """One window's events of this shard (``events``: its interactions): profiles updated, and what they add to the item model and trending."""
        clock = WindowClock.of(self.config)
        window = value.window
        late = 0
        if clock.timer(window) <= watermark:
            late = len(value.events)
            self.late_counter.inc(late)
            window = clock.open_window(watermark)
        weights = event_weights(events.etype, events.rating, self.config)
        contribution = ItemContribution()
        snapshots: dict[str, bytes | None] = {}
        last_ts: dict[str, int] = {}
        for user, profile, latest in apply_window(profile_log.get, events.user, events.item, events.etype, events.ts, weights, self.config, contribution):
            if profile is None:
                profile_log.remove(user)
                snapshots[user] = None
            else:
                raw = encode_profile(profile)
                profile_log.put(user, profile, raw, profile.last_ts)
                # A forgotten user's tombstone stays in state; the scorer deletes their keys.
                snapshots[user] = None if scorable(profile) is None else raw
            last_ts[user] = latest
        self.users_updated += len(snapshots)
        counts = sum_by_key(contribution.items, contribution.item_weights)
        by_shard = split_pairs(contribution.pair_a, contribution.pair_b, contribution.pair_weights, self.item_shard_of)
        items, item_weights = list(counts.keys()), list(counts.values())
        deltas = [ItemDelta(window, shard, len(events), items, item_weights, pa, pb, pw) for shard, (pa, pb, pw) in enumerate(by_shard)]
        trend = TrendDelta(window, len(events), contribution.trend_items, contribution.trend_ts, contribution.trend_weights)
        return UserSnapshot(window, value.shard, snapshots, last_ts), deltas, trend, late

    def _boot(self, record: BootRecord) -> Iterable:
        """Bootstrap: load this shard's users; route item-model and trending records on."""
        if record.kind == "users":
            profile_log = self._log(record.shard)
            loaded = load_user_state(record, profile_log)
            self._flush(profile_log)
            log.info("user shard %d: loaded %d profiles from the snapshot", record.shard, loaded)
        elif record.kind == "items":
            yield ITEM_DELTAS, keyed(record.shard, record)
        elif record.kind == "trending":
            yield TREND_DELTAS, keyed(0, record)

    def _sweep(self, shard: int, profile_log: ProfileLog, now_ms: int) -> None:
        """Drop users not seen for ``user_ttl_ms`` of event time (at most once per sweep interval)."""
        last = self.last_sweep.get(shard)
        if last is not None and now_ms - last < self.sweep_every_ms:
            return
        self.last_sweep.set(shard, now_ms)
        if last is None:
            return
        for user in profile_log.expired(now_ms, self.user_ttl_ms):
            profile_log.remove(user)


def _outbox_entry() -> dict:
    """One call's outbox payload for one window: item deltas (per slice, per item shard), trend deltas
    (per slice) and attribution's counts (encoded AttributionCounts)."""
    return {"d": [], "t": [], "a": []}


# -- attribution --------------------------------------------------------------------


# Users' decoded attribution states kept in memory per user-state instance: about 3.3 KB each
# (386 MB for 117k users in the 1M-user replay, where the earlier bound of 200k grew to 650 MB).
ATTRIBUTION_STATES_CACHED = 50_000


class FeedbackAttribution:
    """Attribution inside :class:`UserState` (same key, the user shard): feeds each bundle's feedback rows on
    arrival to :func:`transforms.attribution.feed` (the maths is in :mod:`transforms.attribution`).

    Holds each user's attribution (managed MapState ``attribution``: user ->
    encoded :class:`~transforms.attribution.UserFeedback`, the settled state
    and the log of rows still within the bound; ``attribution_last_ms``: what
    the sweep reads; ``attribution_last_sweep``), the state names of the
    separate ``attribution`` operator of earlier releases.  No feedback waits
    for its window to close: :func:`~transforms.attribution.feed` places each
    row in the user's log by event time and replays the log when a row sorts
    before one already applied (``attribution_replays``), so a click read
    before its impression is attributed once the impression arrives, and the
    counts equal :func:`transforms.attribution.recount` whenever every row
    arrives at most ``attribution_window_ms`` of event time behind the
    watermark; rows later than that are not attributed
    (``attribution_too_late``).  Feedback whose window the watermark has
    already closed is counted in ``attribution_late`` and applied in the open
    window.  Everything is in managed state, and its outputs wait in
    user-state's outbox until their window closes (dead letters leave with
    the call that made them), so a restore replays them exactly once.

    Produces, per window of a bundle, :class:`~pipelines.messages.AttributionCounts`
    tagged with that window (to the metrics aggregator and the ad spend; a
    replay's differences may be negative), and the dead letters of impressions
    with a bad or unknown rec_id and the counters, for the bundle's stats
    batch.  Users whose state nothing within the bound can need any more are
    dropped (on their next feedback, or by a sweep once per attribution window
    of event time).
    """

    def __init__(self, runtime_context, config: ModelConfig, secret: str) -> None:
        self.config = config
        self.secret = secret
        # Decoded states, written through to managed state (rebuilt from it after a restore).
        self.states = MapByKey(_bytes_map(runtime_context, "attribution"), decode_attribution, encode_attribution, max_cached=ATTRIBUTION_STATES_CACHED)
        self.last_ms = runtime_context.get_map_state(MapStateDescriptor("attribution_last_ms", Types.STRING(), Types.LONG()))
        self.last_sweep = ValueByKey(runtime_context.get_state(ValueStateDescriptor("attribution_last_sweep", Types.LONG())))
        self.late_counter = runtime_context.get_metrics_group().counter("attribution_late")

    def attribute(self, shard: int, feedback: list[tuple[int, EventBatch]], watermark: int) -> tuple[list[AttributionCounts], SinkBatch]:
        """One bundle's feedback rows of ``shard`` (the current key), per window (``(window, rows)``), at ``watermark``:
        the counts they changed, per window, and their dead letters and counters."""
        clock = WindowClock.of(self.config)
        by_window: dict[int, list[EventBatch]] = {}
        late = 0
        for window, rows in feedback:
            if clock.timer(window) <= watermark:
                late += len(rows)
                window = clock.open_window(watermark)
            by_window.setdefault(window, []).append(rows)
        counts: list[AttributionCounts] = []
        rejections: list = []
        tallies = {"attribution_late": late, "attribution_duplicates": 0, "attribution_unattributed": 0, "attribution_too_late": 0, "attribution_replays": 0}
        for window in sorted(by_window):
            found = self._feed(shard, EventBatch.concat(by_window[window]), window, watermark, rejections, tallies)
            if found is not None:
                counts.append(found)
        if late:
            self.late_counter.inc(late)
        self._sweep(shard, watermark)
        batch = _dead_letter_batch(rejections) if rejections else SinkBatch()
        return counts, SinkBatch(dead_letters=batch.dead_letters, stats={**{k: v for k, v in tallies.items() if v}, **batch.stats})

    def _feed(self, shard: int, rows: EventBatch, window: int, watermark: int, rejections: list, tallies: dict) -> AttributionCounts | None:
        """Feed rows (any users of this shard) user by user; the counts they changed."""
        counts: dict = {}
        ad_counts: dict = {}
        for user, index in group_by_user(rows.user):
            before = self.states.get(shard, user)
            result = feed(before, user, rows.take(index), watermark, self.config, self.secret)
            if result.state is None:
                if before is not None:
                    self.states.remove(shard, user)
                    self.last_ms.remove(user)
            else:
                self.states.put(shard, user, result.state)
                self.last_ms.put(user, result.state.last_ms)
            for key, amount in result.counts.items():
                counts[key] = counts.get(key, 0) + amount
            for key, amount in result.ad_counts.items():
                ad_counts[key] = ad_counts.get(key, 0) + amount
            rejections += result.rejections
            tallies["attribution_duplicates"] += result.duplicates
            tallies["attribution_unattributed"] += result.unattributed
            tallies["attribution_too_late"] += result.too_late
            tallies["attribution_replays"] += int(result.replayed)
        return AttributionCounts(counts, ad_counts, window) if counts or ad_counts else None

    def _sweep(self, shard: int, now_ms: int) -> None:
        """Drop users nothing within the bound can need (at most once per attribution window of event time)."""
        last = self.last_sweep.get(shard)
        if last is not None and now_ms - last < self.config.attribution_window_ms:
            return
        self.last_sweep.set(shard, now_ms)
        for user in [u for u, last_ms in self.last_ms.items() if expired(last_ms, now_ms, self.config)]:
            self.states.remove(shard, user)
            self.last_ms.remove(user)


class MetricsAggregator(KeyedProcessFunction):
    """Single key: adds up attribution counts and writes the metrics hashes with absolute values.

    Running totals live in managed state: per minute and per UTC day (ads)
    while the watermark is within ``horizon_ms`` of their end, per experiment
    for ever.  Each call writes the new totals of the fields it touched with
    HSET (:mod:`state.metrics`), so a replay after a restore rewrites the same
    values: with checkpointed totals, each event counts exactly once in Redis.
    Sums commute, so the order counts arrive in (from several attribution
    instances) does not matter, up to float rounding of revenue.  Counts for
    a minute or day already past the horizon (very late feedback) still go
    into the experiment totals, not into the minute or day hashes (counted in
    ``metrics_too_late``): the minute's written values stay final.
    """

    def __init__(self, horizon_ms: int = 6 * 3600 * 1000) -> None:
        self.horizon_ms = horizon_ms

    def open(self, runtime_context) -> None:
        tune_collector()
        self.states = {
            MINUTES: _bytes_map(runtime_context, "metrics-minutes"),
            DAYS: _bytes_map(runtime_context, "metrics-days"),
            EXPERIMENTS: _bytes_map(runtime_context, "metrics-experiments"),
        }
        self.totals = RunningTotals(self._load, self.horizon_ms)
        self.evicted_at: int | None = None

    def _load(self, kind: str, part: str) -> dict[str, float]:
        state = self.states[kind]
        return decode_totals(state.get(part)) if state.contains(part) else {}

    def process_element(self, value: AttributionCounts, ctx) -> Iterable:
        watermark = ctx.timer_service().current_watermark()
        update = self.totals.add(value.counts, value.ad_counts, watermark)
        for kind, parts in update.changed.items():
            for part in parts:
                self.states[kind].put(part, encode_totals(self.totals.totals(kind, part)))
        # Evict at most once per minute of event time (a scan of the minutes and days held).
        if self.evicted_at is None or watermark >= self.evicted_at + MINUTE_MS:
            self.evicted_at = watermark
            for kind in (MINUTES, DAYS):
                for part in self.totals.expired(kind, list(self.states[kind].keys()), watermark):
                    self.states[kind].remove(part)
        writes = update.writes()
        if writes or update.too_late:
            yield SinkBatch(writes=writes, stats={"metrics_too_late": update.too_late} if update.too_late else {})


def _sponsorship_update(window: int, items: Iterable[CatalogItem]) -> SponsorshipUpdate:
    return SponsorshipUpdate(window, {item: (s.bid, s.campaign) for item, s in sponsorships(items).items()})


class AdSpend(KeyedProcessFunction):
    """Single key: impressions, clicks and spend per campaign and UTC day (:func:`transforms.ads.campaign_counts`).

    Input: attribution's counts (their per-item ad counts, tagged with their
    window) and the catalog's sponsorships (``SponsorshipUpdate``, from the
    window of the upsert on).  Both wait for their window's timer: once the
    watermark has passed it, every sponsorship change up to that window has
    arrived, so a window's clicks are priced with the bids in effect for that
    window (a change in the same window applies to it), whichever input came
    first.  Running totals per day live in managed state until the windows
    closed here are ``horizon_ms`` past the day's end (counts for a day after
    that are counted in ``ad_spend_too_late``, and its written values stay
    final) and go to ``metrics:ads:{day}`` as absolute values (HSET), so a
    replay after a restore rewrites the same numbers: exactly once.
    """

    def __init__(self, config: ModelConfig, horizon_ms: int = 6 * 3600 * 1000) -> None:
        self.config = config
        self.horizon_ms = horizon_ms

    def open(self, runtime_context) -> None:
        tune_collector()
        self.pending = PendingByWindow(_bytes_map(runtime_context, "pending-ad-spend"))
        self.days = _bytes_map(runtime_context, "ad-spend-days")
        self.current = _bytes_value(runtime_context, "ad-sponsorships")

    def process_element(self, value: AttributionCounts | SponsorshipUpdate, ctx) -> Iterable:
        clock = WindowClock.of(self.config)
        window = value.window
        watermark = ctx.timer_service().current_watermark()
        if clock.timer(window) <= watermark:
            window = clock.open_window(watermark)  # its window is closed here: the open one, as for late events
        if isinstance(value, SponsorshipUpdate):
            raw = encode_pending("sponsorships", window, {"s": {item: list(s) for item, s in value.sponsored.items()}})
        elif value.ad_counts:
            raw = encode_pending("ad_counts", window, {"a": [[day, item, measure, amount] for (day, item, measure), amount in value.ad_counts.items()]})
        else:
            return ()
        self.pending.add(window, raw)
        ctx.timer_service().register_event_time_timer(clock.timer(window))
        return ()

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        clock = WindowClock.of(self.config)
        raw_current = self.current.value()
        current = {item: Sponsorship(bid, campaign, math.nan) for item, (bid, campaign) in (decode_sponsorships(raw_current) if raw_current else {}).items()}
        changed_days: dict[str, dict[str, float]] = {}
        too_late = 0
        # Event time is measured by the windows closed here, not the watermark, which is
        # Long.MAX_VALUE at the end of a bounded input when the last timers fire.
        end = 0
        for window, raws in take_due_windows(ctx, timestamp, clock, self.pending):
            end = clock.end(window)
            messages = [decode_pending(raw) for raw in raws]
            for kind, _, payload in messages:  # sponsorships first: they apply to their own window's clicks
                if kind == "sponsorships":
                    current = {item: Sponsorship(float(bid), campaign, math.nan) for item, (bid, campaign) in payload["s"].items()}
                    self.current.update(encode_sponsorships({item: (s.bid, s.campaign) for item, s in current.items()}))
            ad_counts: dict[tuple[int, str, str], float] = {}
            for kind, _, payload in messages:
                if kind == "ad_counts":
                    for day, item, measure, amount in payload["a"]:
                        ad_counts[(day, item, measure)] = ad_counts.get((day, item, measure), 0) + amount
            for (day, campaign, measure), amount in campaign_counts(ad_counts, current).items():
                if day + DAY_MS + self.horizon_ms <= end:
                    too_late += 1  # the day's totals are gone from state: its written values stay final
                    continue
                part = str(day)
                totals = changed_days.get(part)
                if totals is None:
                    totals = changed_days[part] = decode_totals(self.days.get(part)) if self.days.contains(part) else {}
                field = ads_field(campaign, measure)
                totals[field] = totals.get(field, 0) + amount
        for part, totals in changed_days.items():
            self.days.put(part, encode_totals(totals))
        for part in [d for d in self.days.keys() if int(d) + DAY_MS + self.horizon_ms <= end]:
            self.days.remove(part)
        writes = [HashWrite(KeyKind.METRICS_ADS, part, {f: format_value(v) for f, v in totals.items()}, ADS_TTL_S) for part, totals in changed_days.items()]
        if writes or too_late:
            yield SinkBatch(writes=writes, stats={"ad_spend_too_late": too_late} if too_late else {})


# -- item model --------------------------------------------------------------------


class ItemModelOperator(KeyedProcessFunction):
    """Keyed by item shard: co-occurrence rows of the shard's items, counts of all items.

    At each window close: apply the window's deltas; at the first close of each
    refresh slot (and at the end of a bounded input), recompute the neighbours
    of changed items and emit them to the scorer and to Redis.

    The model lives in memory between windows; managed state is a columnar
    block plus a log of changes, one entry per timer pass whatever it closed
    (:class:`state.itemstate.ItemModelStore`), and is read back after a
    restore or rescale.

    Online item vectors (``online_item_vectors``): a second model of the same
    kind, the *evidence*, holds the co-occurrence since the embedding version
    in use took effect (``evidence-block``, ``evidence-log``,
    ``evidence-meta``, whose meta adds ``since``, the switch's window, -1 for
    the job's start, and ``active``; its ``slot`` is the online-vector slot).  Content sends each shard an
    :class:`EvidenceReset` when a switch takes effect; it clears the evidence
    at its window, before that window's deltas (as the reference engine
    does).  At the first refresh of each ``online_vector_refresh_ms`` slot
    (and at the end of a bounded input) the heaviest ``online_vector_evidence``
    entries of the items whose evidence changed go to the scorer as ``o:`` entries,
    which it turns into vectors (:class:`transforms.embedding.OnlineItemVectors`).
    """

    def __init__(self, config: ModelConfig, item_shards: int, ttls: Ttls, evidence_from_start: bool = False) -> None:
        self.config = config
        self.item_shards = item_shards
        self.ttls = ttls
        # Whether the job starts with an embedding version (settings.embeddings): evidence is kept from the start.
        self.evidence_from_start = evidence_from_start

    def open(self, runtime_context) -> None:
        tune_collector()
        self.pending = PendingByWindow(_bytes_map(runtime_context, "pending"))
        self.timers = TimerMemo()
        # "rows" and "counts" hold the row layout of earlier releases (and of a bootstrap): migrated on first use.
        self.rows = _bytes_map(runtime_context, "rows")
        self.counts = runtime_context.get_map_state(MapStateDescriptor("counts", Types.STRING(), Types.DOUBLE()))
        self.meta = _bytes_value(runtime_context, "meta")
        self.store = ItemModelStore(
            self.config, _bytes_value(runtime_context, "items-block"), _bytes_map(runtime_context, "items-log"), self.meta, self.rows, self.counts
        )
        self.models: dict[int, tuple[ItemModel, dict]] = {}
        self.evidence_store: ItemModelStore | None = None
        if self.config.online_item_vectors:
            self.evidence_store = ItemModelStore(
                self.config, _bytes_value(runtime_context, "evidence-block"), _bytes_map(runtime_context, "evidence-log"), _bytes_value(runtime_context, "evidence-meta")
            )
        self.evidence: dict[int, tuple[ItemModel, dict]] = {}

    def process_element(self, value: Bundle | BootRecord, ctx) -> Iterable:
        if isinstance(value, BootRecord):
            entries = load_item_state(value, self.rows, self.counts, self.meta)
            self.models.pop(ctx.get_current_key(), None)
            # The snapshot's dirty rows still owe the end-of-input refresh of a bounded run.
            ctx.timer_service().register_event_time_timer(LONG_MAX)
            yield from boot_model_updates(entries)
            return
        deltas = False
        for delta in value.parts:
            if isinstance(delta, EvidenceReset):
                # No timer of its own: it changes nothing until deltas follow, and the
                # timer of their window takes it first (pending windows close in order).
                self.pending.add(delta.window, encode_pending("reset", delta.window, {"a": delta.active}))
                continue
            payload = {"e": delta.events, "i": delta.items, "n": delta.item_weights, "a": delta.pair_a, "b": delta.pair_b, "w": delta.pair_weights}
            self.pending.add(delta.window, encode_pending("item", delta.window, payload))
            self.timers.register(ctx, value.shard, WindowClock.of(self.config).timer(delta.window))
            deltas = True
        if deltas:
            self.timers.register(ctx, value.shard, LONG_MAX)

    def _model(self, shard: int) -> tuple[ItemModel, dict]:
        loaded = self.models.get(shard)
        if loaded is None:
            shards = self.item_shards
            loaded = self.models[shard] = self.store.load(owns=lambda item: shard_of(item, shards) == shard)
        return loaded

    def _evidence(self, shard: int) -> tuple[ItemModel, dict] | None:
        """The shard's evidence model and meta (None: online item vectors are off)."""
        if self.evidence_store is None:
            return None
        loaded = self.evidence.get(shard)
        if loaded is None:
            shards = self.item_shards
            model, meta = self.evidence_store.load(owns=lambda item: shard_of(item, shards) == shard)
            meta.setdefault("since", -1)
            meta.setdefault("active", self.evidence_from_start)
            loaded = self.evidence[shard] = (model, meta)
        return loaded

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        shard = ctx.get_current_key()
        model, meta = self._model(shard)
        updates: list[ModelUpdate] = []
        writes: list = []
        if timestamp == LONG_MAX:
            self.timers.forget(shard, LONG_MAX)
            self._refresh(shard, model, meta["end"], updates, writes, final=True)
        else:
            for window, raws in take_due_windows(ctx, timestamp, WindowClock.of(self.config), self.pending, (self.timers, shard)):
                self._close(shard, model, meta, window, raws, updates, writes)
        self.store.save(model, meta)
        evidence = self._evidence(shard)
        if evidence is not None:
            self.evidence_store.save(*evidence)
        if updates:
            yield Bundle(0, updates)
        if writes:
            yield WRITES, SinkBatch(writes=writes)

    def _close(self, shard: int, model: ItemModel, meta: dict, window: int, raws: list[bytes], updates: list, writes: list) -> None:
        """Apply one window's deltas; at the first close of a refresh slot, refresh the changed neighbours."""
        end = WindowClock.of(self.config).end(window)
        pending = [decode_pending(raw) for raw in raws]
        resets = [payload for kind, _, payload in pending if kind == "reset"]
        if resets:
            self._reset_evidence(shard, window, bool(resets[-1]["a"]))
        deltas = [payload for kind, _, payload in pending if kind != "reset"]
        if not deltas:
            return  # a window with no events closes nothing (as in the reference engine)
        columns = (
            [i for d in deltas for i in d["i"]],
            [w for d in deltas for w in d["n"]],
            [a for d in deltas for a in d["a"]],
            [b for d in deltas for b in d["b"]],
            [w for d in deltas for w in d["w"]],
        )
        model.apply_window(*columns)
        evidence = self._evidence(shard)
        if evidence is not None and evidence[1]["active"]:
            evidence[0].apply_window(*columns)
        meta["end"] = end
        slot = WindowClock.of(self.config).refresh_slot(end)
        if slot != meta["slot"]:
            meta["slot"] = slot
            self._refresh(shard, model, end, updates, writes)

    def _reset_evidence(self, shard: int, window: int, active: bool) -> None:
        """An embedding switch took effect at ``window``: evidence starts anew (and is kept only if ``active``)."""
        if self.evidence_store is None:
            return
        shards = self.item_shards
        self.evidence_store.clear()
        meta = self.evidence_store.meta()
        meta.update(since=window, active=active)
        self.evidence[shard] = (ItemModel(self.config, owns=lambda item: shard_of(item, shards) == shard), meta)

    def _refresh(self, shard: int, model: ItemModel, end: int, updates: list, writes: list, final: bool = False) -> None:
        changed = model.refresh()
        window = WindowClock.of(self.config).window_of(end - 1)  # the window ending at `end`
        entries = [("n:" + item, encode_scored(ids, sims)) for item, (ids, sims) in changed.items()]
        for measure, lists in model.variant_neighbours.items():
            # The same items' lists by each variant measure (experiments; not written to Redis).
            entries += [(variant_neighbours_prefix(measure) + item, encode_scored(*lists[item])) for item in changed]
        evidence = self._evidence(shard)
        slot = WindowClock.of(self.config).vector_slot(end)
        if evidence is not None and evidence[1]["active"] and (final or slot != evidence[1]["slot"]):
            evidence[1]["slot"] = slot
            since = evidence[1]["since"]
            rows = evidence[0].refresh_rows(self.config.online_vector_evidence)
            entries += [("o:" + item, encode_evidence(since, ids, weights)) for item, (ids, weights) in rows.items()]
        if entries:
            updates.append(ModelUpdate(window, entries))
        writes += [neighbour_write(KeyKind.ITEM_NEIGHBOURS, item, end, nb, self.ttls.item_s) for item, nb in changed.items()]


# -- catalog and content -------------------------------------------------------------


class ContentOperator(KeyedProcessFunction):
    """Single key: the catalog and its TF-IDF index; content neighbours of changed items per window.

    When an upsert changes which items are sponsored or their bids, it sends
    every sponsored item's bid to the scorer (the ``a:`` entry) and, on the
    ``SPONSORSHIPS`` side output, with their campaigns to the ad spend.

    It also times the catalog input's embedding switches: like an upsert, a
    switch takes effect when its window closes (a late one in the open
    window), as the ``e:`` model entry (the newest switch of the window wins;
    equal times: the last to arrive), and, with ``online_item_vectors``, as
    an :class:`EvidenceReset` to each of the ``item_shards`` item shards on
    the ``EVIDENCE_RESETS`` side output.  With online item vectors it also
    sends the scorer the *cold prior* (``v:``, the vector the version's
    feature towers give an item's catalog record) of every catalog item the
    version in effect lacks: all of them when a version takes effect, then
    each upserted one; the version in effect is managed state
    (``embeddings``: path and the window it took effect, -1 from the start,
    ``embeddings`` given by the job).  Experiment controls are timed the same
    way and applied in order to the running experiment (managed state
    ``experiment``; :func:`transforms.experiments.apply_control`): the
    experiment in effect goes to the scorer as the ``x:`` model entry, its
    record to Redis, and a refused control to the dead letters.
    """

    def __init__(self, config: ModelConfig, ttls: Ttls, item_shards: int = 0, embeddings: str | None = None) -> None:
        self.config = config
        self.ttls = ttls
        self.item_shards = item_shards
        self.initial_embeddings = embeddings

    def open(self, runtime_context) -> None:
        tune_collector()
        self.pending = PendingByWindow(_bytes_map(runtime_context, "pending"))
        self.items = _bytes_map(runtime_context, "catalog")
        self.embeddings_state = _bytes_value(runtime_context, "embeddings")
        self.online: OnlineItemVectors | None = None
        self.online_path: str | None = None
        self.experiment = _bytes_value(runtime_context, "experiment")
        self.catalog: dict[str, CatalogItem] | None = None
        self.index: ContentIndex | None = None  # of self.catalog

    def process_element(self, item: CatalogItem | EmbeddingSwitch | ExperimentControl | BootRecord, ctx) -> Iterable:
        if isinstance(item, BootRecord):
            entries = load_content_state(item, self.items)
            self.catalog = None
            self.index = None
            yield from boot_model_updates(entries)
            windows = [w for w, key, _ in entries if key == "a:"]
            if windows:
                # The snapshot's sponsorships, for the ad spend of the windows from the cutoff on.
                items = [validate_catalog_record(orjson.loads(raw))[0] for raw in item.payload["items"].values()]
                yield SPONSORSHIPS, _sponsorship_update(max(windows), [c for c in items if c is not None])
            return
        clock = WindowClock.of(self.config)
        window = clock.window_of(item.ts)
        watermark = ctx.timer_service().current_watermark()
        if clock.timer(window) <= watermark:
            # Late upsert: like a late event, it takes effect in the open window.
            window = clock.open_window(watermark)
        kind = "embeddings" if isinstance(item, EmbeddingSwitch) else "experiment" if isinstance(item, (ExperimentStart, ExperimentStop)) else "catalog"
        self.pending.add(window, encode_pending(kind, window, item.to_dict()))
        ctx.timer_service().register_event_time_timer(clock.timer(window))

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        if self.catalog is None:
            self.catalog = {}
            for _, raw in self.items.items():
                item, rejection = validate_catalog_record(orjson.loads(raw))
                if item is None:  # kept by a release that did not check categories yet
                    log.warning("dropping a stored catalog item: %s: %s", rejection.detail, rejection.raw[:200])
                    continue
                self.catalog[item.item_id] = item
        clock = WindowClock.of(self.config)
        window = clock.window_of_timer(timestamp)
        end = clock.end(window)
        due: list[CatalogItem] = []
        switches: list[EmbeddingSwitch] = []
        controls: list[ExperimentControl] = []
        for raw in self.pending.take(window):
            kind, _, payload = decode_pending(raw)
            if kind == "embeddings":
                switches.append(validate_embedding_switch(payload)[0])
            elif kind == "experiment":
                control, rejection = validate_experiment_control(payload)
                if control is None:  # pending in state from a release with other rules
                    log.warning("dropping a pending experiment control: %s: %s", rejection.detail, rejection.raw)
                    continue
                controls.append(control)
            else:
                item, rejection = validate_catalog_record(payload)
                if item is None:  # pending in state from a release that did not check categories yet
                    log.warning("dropping a pending catalog upsert: %s: %s", rejection.detail, rejection.raw[:200])
                    continue
                due.append(item)
        if switches:
            newest = max(enumerate(switches), key=lambda ks: (ks[1].ts, ks[0]))[1]
            yield ModelUpdate(window, [("e:", encode_embedding_ref(newest.path))])
            if self.config.online_item_vectors:
                for shard in range(self.item_shards):
                    yield EVIDENCE_RESETS, keyed(shard, Bundle(shard, [EvidenceReset(window, shard, bool(newest.path))]))
                self.embeddings_state.update(orjson.dumps({"v": 1, "path": newest.path, "since": window}))
        if controls:
            yield from self._control_experiment(window, end, controls)
        if not due:
            priors = self._cold_priors(window, switched=bool(switches), due=due)
            if priors:
                yield ModelUpdate(window, priors)
            return
        sponsorship_changed = False
        for item in due:
            previous = self.catalog.get(item.item_id)
            sponsorship_changed |= sponsored_bids([item]) != sponsored_bids([previous] if previous is not None else [])
            self.catalog[item.item_id] = item
            self.items.put(item.item_id, item.to_json())
        # Kept in memory between windows (derived from the catalog state, rebuilt after a restore):
        # an upsert tokenises only the upserted items.
        index = self.index = ContentIndex.build(list(self.catalog.values())) if self.index is None else self.index.upsert(due)
        changed = sorted({i.item_id for i in due})
        content = content_neighbours(index, changed, self.config.content_neighbours)
        facts = {i.item_id: (i.top_category, i.in_stock) for i in due}
        entries = [("c:" + item, encode_scored(ids, sims)) for item, (ids, sims) in content.items()]
        entries += [("f:" + item, encode_facts(*fact)) for item, fact in facts.items()]
        entries += self._cold_priors(window, switched=bool(switches), due=due)
        if sponsorship_changed:
            # The whole set of sponsored items and bids, as one entry: the scorer ranks ads among all of them.
            entries.append(("a:", encode_sponsored(sponsored_bids(self.catalog.values()))))
            yield SPONSORSHIPS, _sponsorship_update(window, self.catalog.values())
        yield ModelUpdate(window, entries)
        yield FACTS, keyed(0, FactsUpdate(window, facts))
        writes = [catalog_write(i) for i in due]
        writes += [neighbour_write(KeyKind.CONTENT_NEIGHBOURS, item, end, nb, self.ttls.item_s) for item, nb in content.items()]
        yield WRITES, SinkBatch(writes=writes)

    def _cold_priors(self, window: int, switched: bool, due: list[CatalogItem]) -> list[tuple[str, bytes]]:
        """``v:`` entries of the items the version in effect lacks: every catalog item after a switch, else the upserted ones."""
        if not self.config.online_item_vectors or (not switched and not due):
            return []
        raw = self.embeddings_state.value()
        kept = orjson.loads(raw) if raw else {"path": self.initial_embeddings, "since": -1}
        path, since = kept["path"], kept["since"]
        if not path:
            return []
        if path != self.online_path:
            self.online_path = path
            try:
                self.online = OnlineItemVectors.of(EmbeddingModel(read_export(path)), self.config)
            except (ExportError, OSError, ValueError) as exc:
                # The scorer counts the failure (embedding_load_failures); items it lacks get no prior.
                log.error("cannot read embeddings %s for cold priors: %s", path, exc)
                self.online = None
        if self.online is None:
            return []
        records = list(self.catalog.values()) if switched else due
        return [("v:" + item, encode_cold_prior(since, vector)) for item, vector in sorted(self.online.cold_priors(records).items())]

    def _control_experiment(self, window: int, end: int, controls: list[ExperimentControl]) -> Iterable:
        """Apply one window's experiment controls (by ts, then arrival) to the running experiment."""
        raw = self.experiment.value()
        running = decode_experiment_record(raw) if raw else None
        before = running
        writes: list = []
        rejections = []
        for control in control_order(controls):
            outcome = apply_control(running, control, end, self.config)
            running = outcome.running
            if outcome.stored is not None:
                writes += experiment_writes(outcome.stored)
            if outcome.rejection is not None:
                rejections.append(outcome.rejection)
        self.experiment.update(encode_experiment_record(running))
        if running != before:
            log.info("experiment in effect from %d: %s", end, running.experiment.id if running else "none")
            yield ModelUpdate(window, [("x:", encode_experiment_ref(running.experiment if running else None))])
        batch = _dead_letter_batch(rejections) if rejections else SinkBatch()
        yield WRITES, SinkBatch(writes=writes, stats=batch.stats, dead_letters=batch.dead_letters)


# -- trending --------------------------------------------------------------------------


class TrendingOperator(KeyedProcessFunction):
    """Single key: sliding-window trending, global and per top category.

    State: the buckets as of the last refresh, ``bucket-log`` (the trend
    deltas applied since, in order), the catalog facts, meta (refresh slot,
    events since the last refresh, changed items, ``log``: the next log
    position) and ``listed``, each listed item's category as of the last
    refresh (the model files an item under a new category only when it next
    changes, as the reference does; meta ``v`` 2 marks state that keeps
    ``listed``, v1 state falls back to the facts).

    Why a log: a bucket spans ``trending_slide_ms`` and holds every item
    active in it, so re-encoding the touched buckets at every window close
    cost milliseconds per window at live rates.  A window now appends the
    delta it already holds as bytes; the touched buckets are written, and the
    log cleared, once per refresh.  A restore replays the log onto the
    buckets in order, the additions the model made (state without a log, of
    earlier releases, has its buckets complete).
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def open(self, runtime_context) -> None:
        tune_collector()
        self.pending = PendingByWindow(_bytes_map(runtime_context, "pending"))
        self.buckets = _bytes_map(runtime_context, "buckets")
        self.facts = _bytes_map(runtime_context, "facts")
        self.meta = _bytes_value(runtime_context, "meta")
        self.listed = runtime_context.get_map_state(MapStateDescriptor("listed", Types.STRING(), Types.STRING()))
        self.bucket_log = runtime_context.get_map_state(MapStateDescriptor("bucket-log", Types.LONG(), Types.PICKLED_BYTE_ARRAY()))
        self.model: TrendingModel | None = None
        self.categories: dict[str, str] = {}
        # Buckets changed since the last refresh (their state is the buckets' plus the log's deltas).
        self.dirty_buckets: set[int] = set()
        self.timers = TimerMemo()  # one key: 0

    def process_element(self, message, ctx) -> Iterable:
        if isinstance(message, BootRecord):
            entries = load_trending_state(message, self.buckets, self.facts, self.meta, self.listed)
            self.bucket_log.clear()
            self.model = None
            ctx.timer_service().register_event_time_timer(LONG_MAX)
            yield from boot_model_updates(entries)
            return
        for part in unbundled(message):
            if isinstance(part, FactsUpdate):
                raw = encode_pending("facts", part.window, {"f": part.facts})
            else:
                raw = encode_pending("trend", part.window, {"e": part.events, "i": part.items, "t": part.ts, "w": part.weights})
                self.timers.register(ctx, 0, LONG_MAX)
            self.pending.add(part.window, raw)
            self.timers.register(ctx, 0, WindowClock.of(self.config).timer(part.window))

    def _meta(self) -> dict:
        raw = self.meta.value()
        meta = orjson.loads(raw) if raw else {"v": 2, "slot": None, "end": 0, "since": 0, "changed": []}
        meta.setdefault("log", 0)
        return meta

    def _load(self) -> TrendingModel:
        if self.model is None:
            meta = self._meta()
            buckets = {}
            for bucket, raw in self.buckets.items():
                ids, weights = decode_scored(raw)
                buckets[int(bucket)] = dict(zip(ids.tolist(), weights.tolist()))
            self.categories = {item: decode_facts(raw)[0] for item, raw in self.facts.items()}
            if meta["v"] >= 2:
                listed = dict(self.listed.items())
            else:  # v1 state did not keep the listed categories: file every item under its current one
                listed = {item: self.categories.get(item, "") for values in buckets.values() for item in values}
            self.model = TrendingModel.from_state(self.config, TrendingState(buckets, None, meta["changed"], listed))
            self.dirty_buckets = set()
            for position in range(meta["log"]):
                _, _, p = decode_pending(self.bucket_log.get(position))
                self._add(self.model, p)
        return self.model

    def _add(self, model: TrendingModel, trend: dict) -> None:
        """Add a window's trend delta (a decoded "trend" payload) to the model; its buckets are now dirty."""
        self.dirty_buckets |= model.add(trend["i"], trend["t"], trend["w"])

    def _write_buckets(self, model: TrendingModel, meta: dict, kept: set[int]) -> None:
        """The dirty buckets still ``kept`` written to state and the log cleared (at a refresh)."""
        for bucket in self.dirty_buckets & kept:
            values = model.bucket(bucket)
            self.buckets.put(str(bucket), encode_scored(list(values.keys()), list(values.values())))
        self.dirty_buckets = set()
        if meta["log"]:
            self.bucket_log.clear()
            meta["log"] = 0

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        model = self._load()
        meta = self._meta()
        updates: list[ModelUpdate] = []
        writes: list = []
        if timestamp == LONG_MAX:
            self.timers.forget(0, LONG_MAX)
            self._lists(model, meta, meta["end"], updates, writes)
        else:
            for window, raws in take_due_windows(ctx, timestamp, WindowClock.of(self.config), self.pending, (self.timers, 0)):
                self._close(model, meta, window, raws, updates, writes)
        meta["changed"] = sorted(model.changed_items())
        self.meta.update(orjson.dumps(meta))
        if updates:
            yield Bundle(0, updates)
        if writes:
            yield WRITES, SinkBatch(writes=writes)

    def _close(self, model: TrendingModel, meta: dict, window: int, raws: list[bytes], updates: list, writes: list) -> None:
        """Apply one window's facts and trend deltas; at the first close of a refresh slot, recompute the lists."""
        end = WindowClock.of(self.config).end(window)
        events_window = False
        for raw in raws:
            kind, _, p = decode_pending(raw)
            if kind == "facts":
                for item, (category, in_stock) in p["f"].items():
                    self.categories[item] = category
                    self.facts.put(item, encode_facts(category, in_stock))
                continue
            events_window = True
            meta["since"] += p["e"]
            self._add(model, p)
            self.bucket_log.put(meta["log"], raw)
            meta["log"] += 1
        if events_window:
            meta["end"] = end
            slot = WindowClock.of(self.config).refresh_slot(end)
            if slot != meta["slot"]:
                meta["slot"] = slot
                self._lists(model, meta, end, updates, writes)

    def _lists(self, model: TrendingModel, meta: dict, end: int, updates: list, writes: list) -> None:
        if not meta["since"]:
            return
        meta["since"] = 0
        # lists() re-files the changed items, including those whose buckets expire now.
        model.expire(end)
        live = model.bucket_indices()
        self._write_buckets(model, meta, live)
        refiled = model.changed_items()
        global_list, per_category = model.lists(end, lambda item: self.categories.get(item, ""))
        if meta["v"] < 2:  # v1 state: record every listed item once
            refiled |= model.listed_items()
            meta["v"] = 2
        kept = model.bucket_indices()
        for item in refiled:
            category = model.listed_category(item)
            if category is not None:
                self.listed.put(item, category)
            else:
                self.listed.remove(item)
        for bucket in [int(b) for b in self.buckets.keys()]:
            if bucket not in live or bucket not in kept:
                self.buckets.remove(str(bucket))
        window = WindowClock.of(self.config).window_of(end - 1)  # the window ending at `end`
        entries = [("t:", encode_scored(*global_list))] + [("tc:" + c, encode_scored(*tl)) for c, tl in per_category.items()]
        updates.append(ModelUpdate(window, entries))
        writes += [trending_write(None, end, global_list)] + [trending_write(c, end, tl) for c, tl in per_category.items()]


# -- scoring -----------------------------------------------------------------------------


_ABSENT = object()


class _VersionedView:
    """``get(name)`` -> the latest value of ``prefix + name`` produced in a window <= ``window``.

    A view lives for one window's scoring, during which the mirror does not
    change, so each name is resolved once: the scorer reads the same facts and
    neighbour lists for many users of a window.
    """

    def __init__(self, mirror: dict, prefix: str, window: int) -> None:
        self.mirror = mirror
        self.prefix = prefix
        self.window = window
        self._resolved: dict[str, object] = {}

    def get(self, name: str, default=None):
        found = self._resolved.get(name, _ABSENT)
        if found is _ABSENT:
            found = self._resolved[name] = self._lookup(name)
        return default if found is _ABSENT else found

    def _lookup(self, name: str):
        version = _latest_version(self.mirror, self.prefix + name, self.window)
        return _ABSENT if version is None else version[2]


def _latest_version(mirror: dict, key: str, window: int) -> list | None:
    """``key``'s latest version ``[window, raw, decoded]`` produced in a window <= ``window``, decoded (None: none)."""
    for version in reversed(mirror.get(key) or []):
        if version[0] <= window:
            if version[2] is None:  # decoded on first use: most versions are never read
                version[2] = _decode_model_value(key, version[1])
            return version
    return None


def _version_window(mirror: dict, key: str, window: int) -> int:
    """The window of ``key``'s latest version produced in a window <= ``window`` (-1: none, the job's start)."""
    version = _latest_version(mirror, key, window)
    return -1 if version is None else version[0]


def variant_neighbours_prefix(measure: str) -> str:
    """The broadcast key prefix of the item neighbour lists by variant measure ``measure`` (main lists: ``n:``)."""
    return f"n~{measure}:"


def _decode_model_value(key: str, raw: bytes):
    if key.startswith("f:"):
        return decode_facts(raw)
    if key == "a:":
        return decode_sponsored(raw)
    if key == "x:":  # a one-tuple: a decoded None would read as "not decoded yet"
        return (decode_experiment_ref(raw),)
    if key.startswith("o:"):
        return decode_evidence(raw)
    if key.startswith("v:"):
        return decode_cold_prior(raw)
    return decode_embedding_ref(raw) if key == "e:" else decode_scored(raw)


class Scorer(KeyedBroadcastProcessFunction):
    """Keyed by user shard, with the item-side model as broadcast state.

    Broadcast state keeps every model entry with the window that produced it
    (``n:`` neighbours, ``n~M:`` neighbours by variant measure ``M``, ``c:`` content, ``f:`` facts, ``t:`` global trending,
    ``tc:`` category trending, ``e:`` the learned-embedding version, ``x:``
    the experiment in effect, ``a:`` the sponsored items' bids, which switch
    on the users' ads lists), so a window is scored with the model exactly
    as of its close, whatever order the inputs arrive in.  During an
    experiment the window's users are grouped by variant and each group is
    scored with its variant's configuration
    (:func:`transforms.experiments.score_by_variant`).

    Embeddings: ``embeddings`` is the export version directory in use from the
    start (None: none); an ``e:`` entry switches to another from its window
    on, so every list of a window is scored with one version and a new
    version needs no restart.  The state holds only the path; the vectors are
    read from it (a path every TaskManager reads) on first use and cached.  A
    version that cannot be read is logged and counted
    (``embedding_load_failures``) and the last readable one stays in use.
    Online item vectors: the item model's ``o:`` entries (evidence since the
    version took effect, tagged with that switch's window) move the version's
    vectors (:class:`transforms.embedding.OnlineItemVectors`, kept in memory
    and rebuilt from the broadcast state after a restore or a switch); each
    window applies the entries produced up to it, so the vectors a window is
    scored with are those of the item model's refreshes up to it, whatever
    else this instance scored.

    Blend learning (``blend_learning``, :mod:`transforms.blend`): the shard's
    learners by context (``blend-learners``) and each user's latest memos
    (``blend-memos``) are keyed state, stepped once per scored window exactly
    as the reference engine steps its learners of that shard; memos older than
    ``blend_memo_ms`` (which earn nothing) are swept at most once per that much
    event time.  The served settings and weights are gauges
    ``blend.{context}.{shard}.*`` (context ``home`` or ``cart``).
    """

    def __init__(self, config: ModelConfig, ttls: Ttls, record_freshness: bool, embeddings: str | None = None) -> None:
        self.config = config
        self.ttls = ttls
        self.record_freshness = record_freshness
        self.initial_embeddings = embeddings

    def open(self, runtime_context) -> None:
        tune_collector()
        self.pending = PendingByWindow(_bytes_map(runtime_context, "pending-users"))
        self.timers = TimerMemo()
        self.mirror: dict | None = None
        self.closed_window = -1
        metrics = runtime_context.get_metrics_group()
        self.windows_counter = metrics.counter("user_lists_written")
        self.embedding_failures = metrics.counter("embedding_load_failures")
        self.embeddings_path: str | None = None
        self.embeddings: EmbeddingModel | None = None
        # Online item vectors of the version in use (see _online).
        self.online: OnlineItemVectors | None = None
        self.online_since: int | None = None
        self.codes = ItemCodes()
        # The business filters' results by item code, kept while the facts hold (a cache, rebuilt after a restore).
        self.allowed = AllowedMemo()
        self.watermark_before: int | None = None
        self.watermark_now: int | None = None
        if self.config.blend_learning:
            self.blend_learners = MapByKey(_bytes_map(runtime_context, "blend-learners"))  # context -> learner
            self.blend_memos = MapByKey(_bytes_map(runtime_context, "blend-memos"))
            self.blend_swept = ValueByKey(runtime_context.get_state(ValueStateDescriptor("blend-swept", Types.LONG())))

    def _embeddings(self, path: str | None) -> EmbeddingModel | None:
        """The model of export ``path``, read once; on a read error the previous one stays."""
        if path != self.embeddings_path:
            if path is None:
                self.embeddings = None
            else:
                try:
                    self.embeddings = EmbeddingModel(read_export(path))
                    log.info("scoring with embeddings %s", path)
                except (ExportError, OSError, ValueError) as exc:
                    log.error("cannot read embeddings %s (keeping %s): %s", path, self.embeddings_path, exc)
                    self.embedding_failures.inc()
            self.embeddings_path = path
        return self.embeddings

    def _online(self, mirror: dict, base: EmbeddingModel, since: int, window: int) -> EmbeddingModel:
        """``base`` with the online item vectors of the ``o:`` evidence and ``v:`` cold priors visible at
        ``window`` for the version that took effect at ``since``.

        One watermark step may score a window after a later one (each key's
        timer closes its due windows in order, key after key), so models are
        kept by the newest entry version they include (a few) and vectors by
        the versions of their inputs; the broadcast state does not change
        between the timers of one step.
        """
        if self.online is None or self.online.base is not base or self.online_since != since:
            self.online = OnlineItemVectors.of(base, self.config)
            self.online_since = since
            self.online_vectors: dict[tuple[str, int, int], np.ndarray | None] = {}
            self.online_models: dict[int, EmbeddingModel] = {}
            self.online_prune_at = 10_000
            online_keys = [key for key in mirror if key.startswith(ONLINE_PREFIXES)]
            self.online_windows = sorted({version[0] for key in online_keys for version in mirror[key]})
            self.online_items = {key[2:] for key in online_keys}
        newest = bisect.bisect_right(self.online_windows, window)
        model_key = self.online_windows[newest - 1] if newest else -1
        model = self.online_models.get(model_key)
        if model is not None:
            return model
        vectors: dict[str, np.ndarray] = {}
        for item in sorted(self.online_items):
            # Each input's latest version at the window, if it counts from this version's switch.
            found, prior = (_latest_version(mirror, prefix + item, window) for prefix in ONLINE_PREFIXES)
            found = found if found is not None and found[2][0] == since else None
            prior = prior if prior is not None and prior[2][0] == since else None
            cached = (item, found[0] if found else -1, prior[0] if prior else -1)
            if cached not in self.online_vectors:
                partners, weights = (found[2][1], found[2][2]) if found else ((), ())
                self.online_vectors[cached] = self.online.vector_of(item, partners, weights, cold_prior=prior[2][1] if prior else None)
            vector = self.online_vectors[cached]
            if vector is not None:
                vectors[item] = vector
        model = base.with_item_vectors(vectors) if vectors else base
        self.online_models[model_key] = model
        while len(self.online_models) > ONLINE_MODELS_KEPT:
            self.online_models.pop(min(self.online_models))
        return model

    def _prune_online(self, mirror: dict) -> None:
        """Forget cached vectors and windows of entry versions the broadcast state no longer holds."""
        if self.online is None:
            return
        live_windows = {key: {version[0] for version in versions} for key, versions in mirror.items() if key.startswith(ONLINE_PREFIXES)}
        self.online_vectors = {
            k: v for k, v in self.online_vectors.items() if (k[1] == -1 or k[1] in live_windows.get("o:" + k[0], ())) and (k[2] == -1 or k[2] in live_windows.get("v:" + k[0], ()))
        }
        self.online_windows = sorted({w for windows in live_windows.values() for w in windows})
        self.online_models = {}
        self.online_prune_at = ONLINE_CACHE_FACTOR * len(self.online_vectors) + 10_000

    def _mirror(self, ctx) -> dict:
        if self.mirror is None:
            self.mirror = {}
            for key, raw in ctx.get_broadcast_state(model_descriptor()).items():
                self.mirror[key] = [[w, p, None] for w, p in decode_versions(raw)]
                if key.startswith("f:"):
                    for version in self.mirror[key]:
                        self.allowed.fact_at(version[0])
        return self.mirror

    def process_broadcast_element(self, value: Bundle | ModelUpdate, ctx) -> None:
        mirror = self._mirror(ctx)
        state = ctx.get_broadcast_state(model_descriptor())
        # The broadcast context's current_watermark() fails in thread mode
        # (PyFlink 2.3), so the last window whose timer fired stands in for it.
        closed = self.closed_window
        # A bundle may carry a version of one key per window of a long sparse stretch:
        # add them all, then prune and write each key once (not once per version).
        touched: dict[str, None] = {}
        online_windows: set[int] = set()
        for update in unbundled(value):
            for key, raw in update.entries:
                mirror.setdefault(key, []).append([update.window, raw, None])
                touched[key] = None
                if key.startswith("f:"):
                    self.allowed.fact_at(update.window)
                if key.startswith(ONLINE_PREFIXES) and self.online is not None:
                    online_windows.add(update.window)
                    self.online_items.add(key[2:])
        for key in touched:
            versions = sorted(mirror[key], key=lambda v: v[0])  # stable: equal windows keep arrival order
            # Versions older than the newest one already visible to every open window are dead.
            visible = [i for i, v in enumerate(versions) if v[0] <= closed]
            if visible:
                versions = versions[visible[-1]:]
            mirror[key] = versions
            state.put(key, encode_versions([(w, p) for w, p, _ in versions]))
        if online_windows:
            # A new evidence version changes the model of every window from its own on.
            self.online_windows = sorted(set(self.online_windows) | online_windows)
            first = min(online_windows)
            self.online_models = {k: m for k, m in self.online_models.items() if k < first}
            if len(self.online_vectors) > self.online_prune_at:
                self._prune_online(mirror)

    def process_element(self, value: Bundle, ctx) -> Iterable:
        # A snapshot waits for its scoring window (the window itself unless score_interval_ms
        # groups windows), where the latest snapshot of each user is scored.
        clock = WindowClock.of(self.config)
        for snapshot in value.parts:
            window = clock.score_window(snapshot.window)
            forgotten = {u for u, raw in snapshot.profiles.items() if raw is None}
            if forgotten:
                # Snapshots of a forgotten user waiting for later windows must not write them back.
                self.pending.drop_users_after(window, forgotten)
            payload = {"p": {u: (None if raw is None else raw.decode()) for u, raw in snapshot.profiles.items()}, "t": snapshot.last_ts}
            self.pending.add(window, encode_pending("users", window, payload))
            self.timers.register(ctx, value.shard, clock.timer(window))
        return ()

    def on_timer(self, timestamp: int, ctx) -> Iterable:
        self._note_watermark(ctx)
        shard = ctx.get_current_key()
        due = take_due_windows(ctx, timestamp, WindowClock.of(self.config), self.pending, (self.timers, shard))
        batches = [self._score_window(shard, window, raws, ctx) for window, raws in due]
        batches = [b for b in batches if b is not None]
        if not batches:
            return
        stats: dict = {}
        for batch in batches:
            merge_stats(stats, batch.stats)
        yield SinkBatch(writes=[w for b in batches for w in b.writes], stats=stats, lags_ms=[lag for b in batches for lag in b.lags_ms])

    def _note_watermark(self, ctx) -> None:
        """Track the watermark: once a newer one fires timers, every timer up to the one before has fired."""
        try:
            watermark = ctx.timer_service().current_watermark()
        except Exception:  # noqa: BLE001 - a context without the watermark: nothing is known to be settled
            return
        if watermark != self.watermark_now:
            self.watermark_before, self.watermark_now = self.watermark_now, watermark

    def _settled_window(self) -> int | None:
        """The last window no snapshot can come for any more (None: not known yet).

        Snapshots come for windows user-state has not closed, later than the
        scorer's watermark; and all timers up to the watermark before the
        current one have fired, so no window they close is scored again.
        """
        return None if self.watermark_before is None else WindowClock.of(self.config).window_of_timer(self.watermark_before)

    def _score_window(self, shard: int, window: int, raws: list[bytes], ctx) -> SinkBatch | None:
        """The lists of one window of ``shard`` (the current key), scored with the model as of the window's close."""
        end = WindowClock.of(self.config).end(window)
        self.closed_window = max(self.closed_window, window)
        latest: dict[str, str | None] = {}
        last_ts: dict[str, int] = {}
        for raw in raws:
            _, _, p = decode_pending(raw)
            latest.update(p["p"])
            last_ts.update(p["t"])
        if not latest:
            return None
        mirror = self._mirror(ctx)
        view = _VersionedView(mirror, "", window)
        embeddings = self._embeddings(view.get("e:", self.initial_embeddings))
        if embeddings is not None and self.config.online_item_vectors:
            embeddings = self._online(mirror, embeddings, _version_window(mirror, "e:", window), window)
        model = ScoringModel(
            neighbours=_VersionedView(mirror, "n:", window),
            content=_VersionedView(mirror, "c:", window),
            trending_global=view.get("t:", (np.empty(0, dtype=object), np.empty(0))),
            trending_by_category=_VersionedView(mirror, "tc:", window),
            facts=_VersionedView(mirror, "f:", window),
            embeddings=embeddings,
            sponsored=view.get("a:", {}),
            codes=self.codes,
            variant_neighbours={m: _VersionedView(mirror, variant_neighbours_prefix(m), window) for m in self.config.extra_similarities()},
            allowed_memo=self.allowed.for_window(window, self._settled_window()),
        )
        users = sorted(latest)
        kept = [u for u in users if latest[u] is not None]
        profiles = [decode_profile(latest[u].encode()) for u in kept]
        experiment = view.get("x:", (None,))[0]
        blend_stats: dict = {}
        if self.config.blend_learning and experiment is None:
            scored, blend_stats = self._score_learning(shard, kept, profiles, [u for u in users if latest[u] is None], end, model)
        else:
            scored = dict(zip(kept, score_by_variant(kept, profiles, end, model, self.config, experiment)))
            if self.config.blend_learning:
                # Lists an experiment scored teach the blend nothing (as in the reference engine).
                for user in users:
                    for context in CONTEXTS:
                        self.blend_memos.remove(shard, memo_key(context, user))
        writes = []
        for user in users:
            writes += user_writes(user, end, scored.get(user), self.ttls)
        self.windows_counter.inc(len(latest))
        now_ms = time.time_ns() // 1_000_000
        lags = [now_ms - t for t in last_ts.values()] if self.record_freshness else []
        stats = {"user_lists": len(latest), "last_window_ts": end, **blend_stats}
        if model.embeddings is not None:
            stats["embeddings_version"] = model.embeddings.version
            stats["embeddings_online_items"] = model.embeddings.online_items
        return SinkBatch(writes=writes, stats=stats, lags_ms=lags)


    def _score_learning(self, shard: int, users: list[str], profiles: list, forgotten: list[str], end: int, model: ScoringModel) -> tuple[dict, dict]:
        """One window of this shard with the blend learned (:func:`transforms.blend.score_and_learn`); (lists, gauges)."""
        learners = {}
        for context in CONTEXTS:
            raw = self.blend_learners.get(shard, context)
            if raw is not None:
                learners[context] = decode_blend_learner(raw)
        previous = {}
        for key in (memo_key(c, u) for u in users for c in CONTEXTS):
            found = self.blend_memos.get(shard, key)
            if found is not None:
                previous[key] = decode_blend_memo(found)
        lists, learners, memos = score_and_learn(users, profiles, end, model, self.config, learners, previous)
        for context, learner in learners.items():
            self.blend_learners.put(shard, context, encode_blend_learner(learner))
        for key, memo in memos.items():
            if memo is not None:
                self.blend_memos.put(shard, key, encode_blend_memo(memo))
            elif key in previous:
                self.blend_memos.remove(shard, key)
        for user in forgotten:
            for context in CONTEXTS:
                self.blend_memos.remove(shard, memo_key(context, user))
        self._sweep_memos(shard, end)
        gauges: dict = {}
        for context in CONTEXTS:
            name, weights = served_weights(learners.get(context), self.config, context)
            gauges[f"blend.{context}.{shard}.setting"] = name
            gauges.update((f"blend.{context}.{shard}.{field}", weight) for field, weight in weights.items())
        return dict(zip(users, lists)), gauges

    def _sweep_memos(self, shard: int, now_ms: int) -> None:
        """Drop memos older than ``blend_memo_ms`` (they earn nothing), at most once per that much event time."""
        horizon = self.config.blend_memo_ms
        last = self.blend_swept.get(shard)
        if last is not None and now_ms - last < horizon:
            return
        self.blend_swept.set(shard, now_ms)
        expired = [key for key, raw in self.blend_memos.items(shard) if now_ms - decode_blend_memo(raw).scored_ms > horizon]
        for key in expired:
            self.blend_memos.remove(shard, key)


# -- sink ----------------------------------------------------------------------------------


def processing_time_ms() -> int:
    """The wall clock, epoch ms: the sink's default clock for its per-minute counters."""
    return time.time_ns() // 1_000_000


class RedisSink(ProcessFunction):
    """Writes each SinkBatch to Redis in one pipeline, one round trip (retried with backoff; the writes are idempotent).

    Counters also go to the hash of the current minute of ``clock_ms``
    (processing time, not event time: the dashboard's events/s is how fast
    the job works now, whatever the events' timestamps).
    """

    def __init__(self, url: str, namespace: str, clock_ms: Callable[[], int] = processing_time_ms) -> None:
        self.url = url
        self.namespace = namespace
        self.clock_ms = clock_ms

    def open(self, runtime_context) -> None:
        tune_collector()
        from state.store import RedisStore

        self.store = RedisStore.from_url(self.url, namespace=self.namespace)
        metrics = runtime_context.get_metrics_group()
        self.writes_counter = metrics.counter("redis_writes")
        # A distribution lives on the Java side; a Python gauge would be called from Flink's
        # metric threads, which crashed a TaskManager (SIGSEGV in pemja) once the operator had
        # finished and its interpreter state was gone.
        self.latency_ms = metrics.distribution("redis_write_latency_ms")

    def close(self) -> None:
        self.store.client.close()

    def process_element(self, batch: SinkBatch, ctx) -> Iterable:
        started = time.perf_counter()
        writes, invalid = keyable(batch.writes, self.namespace)
        counters = {k: v for k, v in batch.stats.items() if not is_gauge(k)}
        if invalid:
            counters["dead_letters"] = counters.get("dead_letters", 0) + len(invalid)
            counters["dead_letters:invalid_key"] = counters.get("dead_letters:invalid_key", 0) + len(invalid)
        self.store.apply(
            writes,
            batch.dead_letters + [r.to_json() for r in invalid],
            counters,
            minute_ms=minute_start(self.clock_ms()),
            gauges={k: v for k, v in batch.stats.items() if is_gauge(k)},
            lags_ms=batch.lags_ms,
        )
        self.latency_ms.update(int((time.perf_counter() - started) * 1000))
        self.writes_counter.inc(len(writes))
        return ()
