"""Batch backfill on Apache Beam: the streaming job's final state computed from historical logs.

The result equals what :func:`transforms.engine.replay` (and so the Flink job)
computes on the same bounded input: the same Redis writes (via
:func:`state.writes.final_writes`) and a snapshot the streaming job can start
from (:mod:`pipelines.bootstrap`).

Why the decomposition below is exact
------------------------------------
The reference semantics (see :mod:`transforms.engine`) have two parts of very
different shape:

* **Per user** — a user's profile and the item-model deltas it yields depend
  only on that user's events, applied in event-time order.  This is
  embarrassingly parallel.
* **Per window, in order** — when window ``k`` closes, its summed deltas are
  applied to the item model and trending; at the first window of each refresh
  slot the neighbours of every item whose row changed since the last refresh
  are recomputed *from the counts as of that moment*; catalog upserts take
  effect; then the users whose last window is ``k`` are scored against the
  model as of that close.  A neighbour list's final value therefore depends on
  the counts at its item's last refresh, and a user's list on the model at the
  user's last window: the model's history, not just its end, is observable.
  Row pruning (``row_capacity``) also depends on the window-by-window path.

So the pipeline is:

1. *read* (parallel per file) -> *parse/validate* (parallel per chunk of
   lines; bad records go to a dead-letter output and are counted) -> events
   keyed by user shard (CRC-32 of the user id, like the job);
2. *replay users* (``GroupByKey`` user shard, parallel): each user's events in
   ``(ts, input position)`` order, cut at window boundaries, through
   :func:`transforms.profile.apply_user_events`.  Output: each user's final
   profile and last window, and the item-model deltas tagged with window,
   user-window order key and event count (columnar arrays, one element per
   shard);
3. *timeline* (one worker): merges the shards' deltas per window in the
   reference's order and replays the window timeline with the reference
   engine's own classes (:class:`transforms.engine.ReferenceEngine` driven
   window by window with pre-replayed users): this only applies deltas,
   refreshes the model and scores each user once, at the close of the user's
   last window.  It takes the snapshot (before the end-of-input refresh, see
   :mod:`pipelines.bootstrap`), then finishes and emits the final writes.
   Because the whole input is known, each refresh recomputes only the
   neighbour lists something reads later — a user scored before the item's
   next refresh (strongest interests and cart, listed per user in step 2), or
   the item's last refresh (its final and snapshot value); the others would
   be overwritten unseen (:func:`observed_refreshes`);
4. *write* (parallel): Redis writes in batches, dead letters to the
   dead-letter stream.

With integral event weights (the defaults, and ratings) every sum is exact, so
the output is bit-identical to the reference; with fractional weights the
deltas are still summed in the reference's order within a window, so results
agree to rounding (far below 1e-9).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import apache_beam as beam
import numpy as np

from pipelines.bootstrap import META_FILE, Snapshot, capture, check_cutoff, cutoff_for, write_snapshot, write_users_file
from state.schemas import decode_profile, encode_profile
from state.writes import Ttls, final_writes
from transforms.catalog import CatalogItem, parse_catalog_lines
from transforms.config import ModelConfig, event_weights
from transforms.engine import FinalState, ReferenceEngine
from transforms.derive import Derivation, derive_config
from transforms.events import EventBatch, parse_json_lines, split_feedback
from transforms.cooccurrence import ItemModel
from transforms.profile import ItemContribution, UserProfile, apply_user_events, top_interests
from transforms.windows import WindowClock

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "flowrec.backfill"
EVENT_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet")
# Event order key: (file << 44) | (chunk << 24) | event index within the chunk.
_FILE_BITS, _CHUNK_BITS, _EVENT_BITS = 19, 20, 24
REDIS_BATCH = 5_000


class BackfillError(ValueError):
    """Bad backfill arguments (no inputs, unsupported files, misaligned cutoff)."""


@dataclass(frozen=True)
class BackfillJob:
    """What to backfill and where to put it.

    ``cutoff_ms`` (a window boundary) limits the backfill to records with
    ``ts < cutoff_ms``; ``None`` takes every record and puts the cutoff at the
    first window boundary after the newest one.
    """

    inputs: tuple[Path, ...]
    config: ModelConfig = field(default_factory=ModelConfig)
    catalog: Path | None = None
    redis_url: str | None = None
    namespace: str = "flowrec"
    ttls: Ttls = field(default_factory=Ttls)
    snapshot_dir: Path | None = None
    cutoff_ms: int | None = None
    shards: int = 16
    chunk_lines: int = 20_000


def expand_inputs(patterns: Sequence[str | Path]) -> tuple[Path, ...]:
    """Files named by paths or glob patterns, in the order given (each glob sorted), without repeats."""
    out: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else ([text] if Path(text).is_file() else [])
        if not matches:
            raise BackfillError(f"no input file matches {text!r}")
        for match in matches:
            path = Path(match)
            if path.suffix.lower() not in EVENT_SUFFIXES:
                raise BackfillError(f"unsupported event file type {path.suffix!r} for {path} (use .jsonl, .csv or .parquet)")
            if path not in out:
                out.append(path)
    if len(out) >= 2**_FILE_BITS:
        raise BackfillError(f"at most {2**_FILE_BITS - 1} input files")
    return tuple(out)


# -- elements --------------------------------------------------------------------------------------


class EventColumns(NamedTuple):
    """Validated events of one chunk and one user shard; ``seq`` orders equal timestamps as the input does."""

    user: np.ndarray  # object[str]
    item: np.ndarray  # object[str]
    etype: np.ndarray  # int8
    ts: np.ndarray  # int64 ms
    weight: np.ndarray  # float64 interest points
    seq: np.ndarray  # int64 input position key


class ShardUsers(NamedTuple):
    """Every user of a shard: encoded final profile (None: forgotten), last event time and last window.

    ``reads`` lists, per user, the items whose neighbour lists scoring the
    user at the end of the last window reads (strongest interests and cart).
    """

    shard: int
    users: list
    profiles: list  # bytes | None
    last_ts: list
    last_window: list
    reads: list


# Columns of ShardDeltas.segments: one row per (user, window) with events.
SEG_WINDOW, SEG_FIRST_TS, SEG_FIRST_SEQ, SEG_EVENTS, SEG_OCC, SEG_PAIRS, SEG_TREND = range(7)


class ShardDeltas(NamedTuple):
    """A shard's item-model deltas: per (user, window) segment, the lengths of its runs in the flat arrays.

    Item ids are codes into ``vocab``.  Segments are in the shard's replay
    order; the flat arrays hold each segment's entries contiguously, in the
    order :func:`apply_user_events` appended them.
    """

    vocab: np.ndarray  # object[str]
    segments: np.ndarray  # int64 (n, 7)
    occ_item: np.ndarray
    occ_weight: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    pair_weight: np.ndarray
    trend_item: np.ndarray
    trend_ts: np.ndarray
    trend_weight: np.ndarray


# -- pure steps (each Beam stage calls one) -----------------------------------------------------------


def parse_chunk(
    file_index: int, chunk_index: int, lines: Sequence[str], config: ModelConfig, shards: int, cutoff_ms: int | None
) -> tuple[dict[int, EventColumns], list[bytes], int]:
    """Validate a chunk of JSON lines; return events per user shard, dead letters, and events at/after the cutoff."""
    from pipelines.messages import shard_of

    if chunk_index >= 2**_CHUNK_BITS:
        raise BackfillError(f"file {file_index} has more than {2**_CHUNK_BITS} chunks; raise chunk_lines")
    parsed = parse_json_lines(lines)
    # The backfill learns state; it does not count what was shown (no impressions).
    events = split_feedback(parsed.events)[0]
    dead = [r.to_json() for r in parsed.rejections]
    if len(events) >= 2**_EVENT_BITS:
        raise BackfillError(f"a chunk holds {len(events)} events (limit {2**_EVENT_BITS}); lower chunk_lines")
    seq = (np.int64(file_index) << (_CHUNK_BITS + _EVENT_BITS)) | (np.int64(chunk_index) << _EVENT_BITS) | np.arange(len(events), dtype=np.int64)
    deferred = 0
    if cutoff_ms is not None and len(events):
        keep = events.ts < cutoff_ms
        deferred = int(len(events) - keep.sum())
        if deferred:
            events, seq = events.take(keep), seq[keep]
    if not len(events):
        return {}, dead, deferred
    weights = event_weights(events.etype, events.rating, config)
    shard_by_user = {u: shard_of(u, shards) for u in set(events.user.tolist())}
    shard = np.fromiter((shard_by_user[u] for u in events.user.tolist()), dtype=np.int64, count=len(events))
    out = {}
    for s in np.unique(shard).tolist():
        rows = np.flatnonzero(shard == s)
        out[s] = EventColumns(events.user[rows], events.item[rows], events.etype[rows], events.ts[rows], weights[rows], seq[rows])
    return out, dead, deferred


def replay_users(shard: int, parts: Iterable[EventColumns], config: ModelConfig) -> tuple[ShardUsers, ShardDeltas]:
    """Apply each user's events of a shard in ``(ts, seq)`` order, one window at a time.

    Returns the users' final state and the item-model deltas, segmented per
    (user, window) so the timeline can put them in the reference's order.
    """
    parts = [p for p in parts if len(p.ts)]
    if not parts:
        return ShardUsers(shard, [], [], [], [], []), _deltas(ItemContribution(), np.zeros((0, 7), dtype=np.int64))
    user = np.concatenate([p.user for p in parts])
    item = np.concatenate([p.item for p in parts])
    etype = np.concatenate([p.etype for p in parts])
    ts = np.concatenate([p.ts for p in parts])
    weight = np.concatenate([p.weight for p in parts])
    seq = np.concatenate([p.seq for p in parts])
    by_time = np.lexsort((seq, ts))
    _, user_code = np.unique(user, return_inverse=True)
    order = by_time[np.argsort(user_code[by_time], kind="stable")]
    user, item, etype, ts, weight, seq = (a[order] for a in (user, item, etype, ts, weight, seq))
    window = ts // config.window_ms
    # Runs of equal (user, window): each is one apply_user_events call.
    starts = np.flatnonzero(np.r_[True, (user[1:] != user[:-1]) | (window[1:] != window[:-1])])
    ends = np.r_[starts[1:], len(ts)]
    items, codes, times, weights = item.tolist(), etype.tolist(), ts.tolist(), weight.tolist()
    contribution = ItemContribution()
    segments = np.empty((len(starts), 7), dtype=np.int64)
    users_out: list[str] = []
    profiles: list[bytes | None] = []
    last_ts: list[int] = []
    last_window: list[int] = []
    reads: list[list[str]] = []
    profile = None
    for k, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        if s == 0 or user[s] != user[s - 1]:
            profile = None
        occ, pairs, trend = len(contribution.items), len(contribution.pair_a), len(contribution.trend_items)
        profile = apply_user_events(profile, items[s:e], codes[s:e], times[s:e], weights[s:e], config, contribution)
        segments[k] = (window[s], ts[s], seq[s], e - s, len(contribution.items) - occ, len(contribution.pair_a) - pairs, len(contribution.trend_items) - trend)
        if e == len(ts) or user[e] != user[s]:
            users_out.append(user[s])
            profiles.append(None if profile is None else encode_profile(profile))
            last_ts.append(int(ts[s:e].max()))
            last_window.append(int(window[s]))
            reads.append(neighbour_reads(profile, (int(window[s]) + 1) * config.window_ms, config))
    return ShardUsers(shard, users_out, profiles, last_ts, last_window, reads), _deltas(contribution, segments)


def neighbour_reads(profile: UserProfile | None, now_ms: int, config: ModelConfig) -> list[str]:
    """Items whose collaborative neighbours :func:`transforms.scoring.score_user` reads for this profile at ``now_ms``.

    Those are the strongest ``interest_items`` interests (positive only) and
    the items in the cart.
    """
    if profile is None:
        return []
    strongest = [item for item, _ in top_interests(profile, now_ms, config, limit=config.interest_items)]
    seen = set(strongest)
    return strongest + [item for item in profile.cart if item not in seen]


def _deltas(c: ItemContribution, segments: np.ndarray) -> ShardDeltas:
    names = c.items + c.pair_a + c.pair_b + c.trend_items
    vocab, inverse = np.unique(np.array(names, dtype=object), return_inverse=True) if names else (np.empty(0, dtype=object), np.empty(0, dtype=np.int64))
    inverse = inverse.astype(np.int32)
    n_occ, n_pair = len(c.items), len(c.pair_a)
    bounds = np.cumsum([0, n_occ, n_pair, n_pair, len(c.trend_items)])
    return ShardDeltas(
        vocab=vocab,
        segments=segments,
        occ_item=inverse[bounds[0] : bounds[1]],
        occ_weight=np.asarray(c.item_weights, dtype=np.float64),
        pair_a=inverse[bounds[1] : bounds[2]],
        pair_b=inverse[bounds[2] : bounds[3]],
        pair_weight=np.asarray(c.pair_weights, dtype=np.float64),
        trend_item=inverse[bounds[3] : bounds[4]],
        trend_ts=np.asarray(c.trend_ts, dtype=np.int64),
        trend_weight=np.asarray(c.trend_weights, dtype=np.float64),
    )


def _gather(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices of the runs ``[starts[i], starts[i] + lengths[i])`` concatenated in order."""
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total, dtype=np.int64)


@dataclass
class MergedDeltas:
    """All shards' deltas with one vocabulary, segments sorted as the reference applies them."""

    ids: np.ndarray  # object[str] by global code
    windows: np.ndarray  # distinct windows with events, ascending
    events: np.ndarray  # events per window
    occ: np.ndarray  # per window: offsets into the occurrence arrays (len windows + 1)
    pairs: np.ndarray
    trend: np.ndarray
    occ_item: np.ndarray
    occ_weight: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    pair_weight: np.ndarray
    trend_item: np.ndarray
    trend_ts: np.ndarray
    trend_weight: np.ndarray

    def contribution(self, k: int) -> ItemContribution:
        """Window ``k``'s deltas as the reference engine holds them at the window's close."""
        ids = self.ids
        o0, o1 = self.occ[k], self.occ[k + 1]
        p0, p1 = self.pairs[k], self.pairs[k + 1]
        t0, t1 = self.trend[k], self.trend[k + 1]
        return ItemContribution(
            items=ids[self.occ_item[o0:o1]].tolist(),
            item_weights=self.occ_weight[o0:o1].tolist(),
            pair_a=ids[self.pair_a[p0:p1]].tolist(),
            pair_b=ids[self.pair_b[p0:p1]].tolist(),
            pair_weights=self.pair_weight[p0:p1].tolist(),
            trend_items=ids[self.trend_item[t0:t1]].tolist(),
            trend_ts=self.trend_ts[t0:t1].tolist(),
            trend_weights=self.trend_weight[t0:t1].tolist(),
        )


def merge_deltas(shards: Sequence[ShardDeltas]) -> MergedDeltas:
    """Merge shards: within a window, users in order of their first event ``(ts, seq)``, as the reference does."""
    shards = list(shards)
    vocab = np.concatenate([s.vocab for s in shards]) if shards else np.empty(0, dtype=object)
    ids, inverse = np.unique(vocab, return_inverse=True) if len(vocab) else (np.empty(0, dtype=object), np.empty(0, dtype=np.int64))
    remap, offset = [], 0
    for s in shards:
        remap.append(inverse[offset : offset + len(s.vocab)].astype(np.int64))
        offset += len(s.vocab)

    def flat(name: str, codes: bool) -> np.ndarray:
        parts = [m[getattr(s, name)] if codes else getattr(s, name) for s, m in zip(shards, remap)]
        return np.concatenate(parts) if parts else np.empty(0)

    segments = np.concatenate([s.segments for s in shards]) if shards else np.zeros((0, 7), dtype=np.int64)
    # Entry offsets of each segment in the concatenated flat arrays.
    starts = {}
    for column in (SEG_OCC, SEG_PAIRS, SEG_TREND):
        lengths = segments[:, column]
        starts[column] = np.cumsum(lengths) - lengths
    order = np.lexsort((segments[:, SEG_FIRST_SEQ], segments[:, SEG_FIRST_TS], segments[:, SEG_WINDOW]))
    segments = segments[order]
    occ_index = _gather(starts[SEG_OCC][order], segments[:, SEG_OCC])
    pair_index = _gather(starts[SEG_PAIRS][order], segments[:, SEG_PAIRS])
    trend_index = _gather(starts[SEG_TREND][order], segments[:, SEG_TREND])
    windows, first = np.unique(segments[:, SEG_WINDOW], return_index=True)
    bounds = np.r_[first, len(segments)]

    def offsets(column: int) -> np.ndarray:
        return np.r_[0, np.cumsum(segments[:, column])][bounds]

    events = np.add.reduceat(segments[:, SEG_EVENTS], first) if len(first) else np.empty(0, dtype=np.int64)
    return MergedDeltas(
        ids=ids,
        windows=windows,
        events=events,
        occ=offsets(SEG_OCC),
        pairs=offsets(SEG_PAIRS),
        trend=offsets(SEG_TREND),
        occ_item=flat("occ_item", True)[occ_index].astype(np.int64),
        occ_weight=flat("occ_weight", False)[occ_index],
        pair_a=flat("pair_a", True)[pair_index].astype(np.int64),
        pair_b=flat("pair_b", True)[pair_index].astype(np.int64),
        pair_weight=flat("pair_weight", False)[pair_index],
        trend_item=flat("trend_item", True)[trend_index].astype(np.int64),
        trend_ts=flat("trend_ts", False)[trend_index].astype(np.int64),
        trend_weight=flat("trend_weight", False)[trend_index],
    )


class ObservedItemModel(ItemModel):
    """An item model whose refresh recomputes only the dirty items in ``keep`` (all when ``keep`` is None).

    Dropping a dirty item from a refresh is exact when nothing reads the list
    that refresh would compute: the refresh clears the item's dirty mark
    either way, and the item's list is read only through later refreshes.
    """

    keep: set[str] | None = None

    def refresh(self):
        if self.keep is not None:
            ids = self.vocab.ids
            self.dirty = {c for c in self.dirty if ids[c] in self.keep}
        return super().refresh()


def refresh_windows(windows: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Which event windows refresh the model: the first window closing in each refresh slot."""
    if len(windows) == 0:
        return np.zeros(0, dtype=bool)
    clock = WindowClock.of(config)
    slots = clock.refresh_slot(clock.end(windows))
    return np.r_[True, slots[1:] != slots[:-1]]


def observed_refreshes(merged: MergedDeltas, config: ModelConfig, reads: Mapping[int, Iterable[str]]) -> dict[int, set[str]]:
    """For each refresh (by its index among refreshing windows), the dirty items whose new lists are read.

    An item is dirty at refresh ``r`` when its row changed in a window after
    the previous refresh and up to ``r``.  The list computed at ``r`` is read
    when ``r`` is the item's last refresh before the end (its final and
    snapshot value), or when a user scored at a window ``w`` (with ``r`` the
    item's last dirty refresh at or before ``w``) reads the item (``reads``:
    window -> items read by the users scored there).
    """
    refreshing = merged.windows[refresh_windows(merged.windows, config)]
    if len(refreshing) == 0:
        return {}
    pair_window = np.repeat(merged.windows, np.diff(merged.pairs))
    at = np.searchsorted(refreshing, pair_window, side="left")  # first refresh at or after the change
    inside = at < len(refreshing)  # later changes are refreshed at the end, unfiltered
    codes = merged.pair_a[inside]
    keys = np.unique(codes * len(refreshing) + at[inside])
    item_codes, refresh_index = keys // len(refreshing), keys % len(refreshing)
    bounds = np.flatnonzero(np.r_[True, item_codes[1:] != item_codes[:-1], True])
    dirty_at = {int(item_codes[a]): refresh_index[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())}
    observed: dict[int, set[str]] = {}
    ids = merged.ids
    for code, indices in dirty_at.items():
        observed.setdefault(int(indices[-1]), set()).add(ids[code])
    code_of = {item: code for code, item in enumerate(ids.tolist())}
    for window, items in reads.items():
        last = int(np.searchsorted(refreshing, window, side="right")) - 1
        if last < 0:
            continue
        for item in items:
            indices = dirty_at.get(code_of.get(item, -1))
            if indices is None:
                continue
            j = int(np.searchsorted(indices, last, side="right")) - 1
            if j >= 0:
                observed.setdefault(int(indices[j]), set()).add(item)
    return observed


@dataclass
class TimelineResult:
    final: FinalState
    snapshot: Snapshot | None  # None with a score interval (see waits_for_scoring)
    windows: int
    events: int
    items: int
    cutoff_ms: int


def waits_for_scoring(config: ModelConfig) -> bool:
    """Whether lists may wait for a later scoring window (``score_interval_ms``), which a snapshot cannot hold yet."""
    return config.score_interval_ms > config.window_ms


def replay_timeline(
    config: ModelConfig,
    catalog: Sequence[CatalogItem],
    deltas: Sequence[ShardDeltas],
    users: Sequence[ShardUsers],
    cutoff_ms: int | None = None,
    counters: dict[str, int] | None = None,
    progress_every_s: float = 10.0,
    skip_unread_refreshes: bool = True,
) -> TimelineResult:
    """Replay the window timeline with pre-replayed users; return the final state and the snapshot.

    ``catalog`` is in input order (the engine orders upserts by ``ts``, ties
    by that order).  Drives a :class:`ReferenceEngine` window by window: each
    window's deltas, event count and the users whose last window it is go in,
    and the engine's own close runs, so catalog windows, refresh slots and
    scoring follow the reference exactly.

    A learned blend (``blend_learning``) learns from every list of every
    window, which a backfill (each user listed once, in their last window)
    does not compute: its lists are scored with the configured weights, and a
    job started from its snapshot starts learning afresh.
    """
    if config.blend_learning:
        log.info("backfill: lists scored with the configured blend weights (blend learning starts in the job)")
        config = config.replace(blend_learning=False)
    merged = merge_deltas(deltas)
    profiles: dict[str, bytes | None] = {}
    last_ts: dict[str, int] = {}
    last_window: dict[str, int] = {}
    by_window: dict[int, list[str]] = {}
    reads: dict[int, set[str]] = {}
    clock = WindowClock.of(config)
    for shard in users:
        for user, raw, ts, window, read in zip(shard.users, shard.profiles, shard.last_ts, shard.last_window, shard.reads):
            profiles[user] = raw
            last_ts[user] = ts
            last_window[user] = window
            by_window.setdefault(window, []).append(user)
            # A user's reads happen where the user is scored: the scoring window of the last active one.
            reads.setdefault(clock.score_window(window), set()).update(read)
    if cutoff_ms is None:
        newest = max([*last_ts.values(), *(c.ts for c in catalog)], default=0)
        cutoff_ms = cutoff_for(newest, config)
    check_cutoff(cutoff_ms, config)

    final = FinalState()
    engine = ReferenceEngine(config, list(catalog), on_window=final.merge, score_users=last_window)
    items = engine.items = ObservedItemModel(config)
    engine.model.neighbours = items.neighbours
    engine.model.variant_neighbours = items.variant_neighbours
    observed = observed_refreshes(merged, config, reads) if skip_unread_refreshes else None
    refreshing = refresh_windows(merged.windows, config)
    refresh_index = -1
    started = last_report = time.perf_counter()
    total = len(merged.windows)
    for k, window in enumerate(merged.windows.tolist()):
        if refreshing[k]:
            refresh_index += 1
            if observed is not None:
                items.keep = observed.get(refresh_index, set())
        scored = by_window.get(window, ())
        engine.close_replayed_window(window, merged.contribution(k), int(merged.events[k]), {u: None if profiles[u] is None else decode_profile(profiles[u]) for u in scored})
        now = time.perf_counter()
        if now - last_report >= progress_every_s:
            last_report = now
            log.info("timeline: window %d/%d (%.0f%%), %.0f windows/s", k + 1, total, 100 * (k + 1) / total, (k + 1) / (now - started))
    items.keep = None  # the end-of-input refresh recomputes every dirty item
    snapshot = None
    if not waits_for_scoring(config):
        engine.close_catalog()
        snapshot = capture(
            engine,
            final,
            cutoff_ms,
            {u: raw for u, raw in profiles.items() if raw is not None},
            {u: last_ts[u] for u, raw in profiles.items() if raw is not None},
            {u: last_window[u] for u, raw in profiles.items() if raw is not None},
            counters={**(counters or {}), "events": engine.events_applied, "users": len(profiles)},
        )
    engine.finish()
    log.info("timeline: %d windows, %d events, %d users in %.1f s", total, engine.events_applied, len(profiles), time.perf_counter() - started)
    return TimelineResult(final=final, snapshot=snapshot, windows=total, events=engine.events_applied, items=len(items.vocab), cutoff_ms=cutoff_ms)


def read_catalog(path: Path, cutoff_ms: int | None) -> tuple[list[CatalogItem], list[bytes], int]:
    """Catalog upserts with ``ts < cutoff`` in file order, dead letters, and the count left to the stream."""
    from pipelines.sources import read_catalog_lines

    items, rejections = parse_catalog_lines(read_catalog_lines(path))
    kept = [c for c in items if cutoff_ms is None or c.ts < cutoff_ms]
    return kept, [r.to_json() for r in rejections], len(items) - len(kept)


def read_chunks(path: Path, chunk_lines: int) -> Iterator[tuple[int, list[str]]]:
    """A file's event records as JSON lines (CSV/Parquet rows converted as `flowrec replay` does), in chunks."""
    from pipelines.sources import read_event_lines

    lines = read_event_lines(Path(path))
    for index, start in enumerate(range(0, len(lines), chunk_lines)):
        yield index, lines[start : start + chunk_lines]


# -- the Beam pipeline ------------------------------------------------------------------------------------

DEAD = "dead_letters"
DELTAS = "deltas"


def _counter(name: str):
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


class ReadChunks(beam.DoFn):
    """(file index, path) -> (file index, chunk index, JSON lines)."""

    def __init__(self, chunk_lines: int) -> None:
        self.chunk_lines = chunk_lines

    def setup(self) -> None:
        self.lines = _counter("lines")

    def process(self, element):
        file_index, path = element
        count = 0
        for chunk_index, lines in read_chunks(Path(path), self.chunk_lines):
            count += len(lines)
            yield file_index, chunk_index, lines
        self.lines.inc(count)
        log.info("read %d records from %s", count, path)


@beam.typehints.with_output_types(beam.typehints.Tuple[int, EventColumns])
class ParseChunks(beam.DoFn):
    """Chunk -> (user shard, EventColumns); bad records -> the dead-letter output."""

    def __init__(self, config: ModelConfig, shards: int, cutoff_ms: int | None) -> None:
        self.config = config
        self.shards = shards
        self.cutoff_ms = cutoff_ms

    def setup(self) -> None:
        self.events = _counter("events")
        self.rejected = _counter("rejected")
        self.after_cutoff = _counter("after_cutoff")

    def process(self, element):
        file_index, chunk_index, lines = element
        by_shard, dead, deferred = parse_chunk(file_index, chunk_index, lines, self.config, self.shards, self.cutoff_ms)
        if dead:
            self.rejected.inc(len(dead))
            yield beam.pvalue.TaggedOutput(DEAD, dead)
        self.after_cutoff.inc(deferred)
        for shard, columns in by_shard.items():
            self.events.inc(len(columns.ts))
            yield shard, columns


@beam.typehints.with_output_types(ShardUsers)
class ReplayUsers(beam.DoFn):
    """(user shard, [EventColumns]) -> ShardUsers; ShardDeltas to the deltas output."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    def setup(self) -> None:
        self.users = _counter("users")

    def process(self, element):
        shard, parts = element
        started = time.perf_counter()
        users, deltas = replay_users(shard, list(parts), self.config)
        self.users.inc(len(users.users))
        log.debug("user shard %d: %d users replayed in %.1f s", shard, len(users.users), time.perf_counter() - started)
        yield users
        yield beam.pvalue.TaggedOutput(DELTAS, deltas)


@beam.typehints.with_output_types(beam.typehints.List[CatalogItem])
class ReadCatalog(beam.DoFn):
    """Catalog path -> one element: its items with ts < cutoff, in file order; rejections dead-lettered."""

    def __init__(self, cutoff_ms: int | None) -> None:
        self.cutoff_ms = cutoff_ms

    def setup(self) -> None:
        self.items = _counter("catalog_items")
        self.rejected = _counter("catalog_rejected")
        self.after_cutoff = _counter("catalog_after_cutoff")

    def process(self, path):
        items, dead, deferred = read_catalog(Path(path), self.cutoff_ms)
        self.items.inc(len(items))
        self.rejected.inc(len(dead))
        self.after_cutoff.inc(deferred)
        if dead:
            yield beam.pvalue.TaggedOutput(DEAD, dead)
        yield items


class Timeline(beam.DoFn):
    """Everything on one worker: the window timeline, the snapshot files, and the final Redis writes in batches."""

    def __init__(self, config: ModelConfig, cutoff_ms: int | None, snapshot_dir: Path | None, ttls: Ttls) -> None:
        self.config = config
        self.cutoff_ms = cutoff_ms
        self.snapshot_dir = snapshot_dir
        self.ttls = ttls

    def setup(self) -> None:
        self.counters = {name: _counter(name) for name in ("windows", "items", "users_written", "items_written")}
        self.cutoff = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "cutoff_ms")

    def process(self, element):
        _, inputs = element
        catalog = [item for part in inputs["catalog"] for item in part]
        users = list(inputs["users"])
        result = replay_timeline(self.config, catalog, list(inputs["deltas"]), users, self.cutoff_ms)
        final, snapshot = result.final, result.snapshot
        self.counters["windows"].inc(result.windows)
        self.counters["items"].inc(result.items)
        self.counters["users_written"].inc(sum(1 for _, lists in final.users.values() if lists is not None))
        self.counters["items_written"].inc(len(final.neighbours))
        self.cutoff.update(result.cutoff_ms)
        if self.snapshot_dir is not None:
            write_snapshot_files(snapshot, users, Path(self.snapshot_dir))
        writes = final_writes(final, self.ttls)
        for start in range(0, len(writes), REDIS_BATCH):
            yield writes[start : start + REDIS_BATCH]


def write_snapshot_files(snapshot: Snapshot, users: Sequence[ShardUsers], directory: Path) -> None:
    """The snapshot with one users file per shard (the meta file, written last, marks it complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    for shard in users:
        kept = [k for k, raw in enumerate(shard.profiles) if raw is not None]
        if kept:
            write_users_file(
                directory / f"users-{shard.shard:05d}.parquet",
                {shard.users[k]: shard.profiles[k] for k in kept},
                {shard.users[k]: shard.last_ts[k] for k in kept},
                {shard.users[k]: shard.last_window[k] for k in kept},
            )
    write_snapshot(snapshot, directory, write_users=False)


class WriteRedis(beam.DoFn):
    """Batches of writes -> Redis (one pipeline per batch, retried; every write is idempotent)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace

    def setup(self) -> None:
        from state.store import RedisStore

        self.store = RedisStore.from_url(self.url, namespace=self.namespace)
        self.writes = _counter("redis_writes")

    def process(self, batch):
        self.writes.inc(self.store.write(batch))
        return ()

    def teardown(self) -> None:
        self.store.client.close()


class WriteDeadLetters(WriteRedis):
    """Dead-lettered records -> the capped dead-letter stream."""

    def setup(self) -> None:
        super().setup()
        self.writes = _counter("dead_letters_written")

    def process(self, batch):
        self.writes.inc(self.store.dead_letter(batch))
        return ()


def build_pipeline(pipeline, job: BackfillJob) -> None:
    """Add the backfill to a ``beam.Pipeline`` (see the module doc for the stages)."""
    files = pipeline | "input files" >> beam.Create([(i, str(p)) for i, p in enumerate(job.inputs)])
    chunks = files | "read" >> beam.ParDo(ReadChunks(job.chunk_lines)) | "spread chunks" >> beam.Reshuffle()
    parsed = chunks | "parse" >> beam.ParDo(ParseChunks(job.config, job.shards, job.cutoff_ms)).with_outputs(DEAD, main="events")
    replayed = (
        parsed.events
        | "by user shard" >> beam.GroupByKey()
        | "replay users" >> beam.ParDo(ReplayUsers(job.config)).with_outputs(DELTAS, main="users")
    )
    dead_letters = [parsed[DEAD]]
    if job.catalog is not None:
        catalog = (
            pipeline
            | "catalog file" >> beam.Create([str(job.catalog)])
            | "read catalog" >> beam.ParDo(ReadCatalog(job.cutoff_ms)).with_outputs(DEAD, main="items")
        )
        dead_letters.append(catalog[DEAD])
        catalog_items = catalog.items
    else:
        catalog_items = pipeline | "no catalog" >> beam.Create([[]])
    timeline_input = {
        "users": replayed.users | "key users" >> beam.Map(lambda v: (0, v)),
        "deltas": replayed[DELTAS] | "key deltas" >> beam.Map(lambda v: (0, v)),
        "catalog": catalog_items | "key catalog" >> beam.Map(lambda v: (0, v)),
    }
    writes = (
        timeline_input
        | "to one worker" >> beam.CoGroupByKey()
        | "timeline" >> beam.ParDo(Timeline(job.config, job.cutoff_ms, job.snapshot_dir, job.ttls))
    )
    if job.redis_url:
        _ = writes | "spread writes" >> beam.Reshuffle() | "write redis" >> beam.ParDo(WriteRedis(job.redis_url, job.namespace))
        _ = (
            dead_letters
            | "all dead letters" >> beam.Flatten()
            | "write dead letters" >> beam.ParDo(WriteDeadLetters(job.redis_url, job.namespace))
        )


@dataclass(frozen=True)
class BackfillResult:
    """Counters of a finished backfill (Beam metrics), its wall-clock time and the settings it derived."""

    counters: dict[str, int]
    cutoff_ms: int | None
    seconds: float
    # Settings measured from the history (transforms.derive): name -> value, and the evidence.
    derived: dict[str, int] = field(default_factory=dict)
    derivation: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> dict:
        c = self.counters
        events = c.get("events", 0)
        return {
            "events": events,
            "rejected": c.get("rejected", 0),
            "after_cutoff": c.get("after_cutoff", 0),
            "users": c.get("users", 0),
            "users_written": c.get("users_written", 0),
            "items": c.get("items", 0),
            "items_written": c.get("items_written", 0),
            "catalog_items": c.get("catalog_items", 0),
            "windows": c.get("windows", 0),
            "redis_writes": c.get("redis_writes", 0),
            "cutoff_ms": self.cutoff_ms,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(events / self.seconds, 1) if self.seconds > 0 else None,
            **{f"derived_{name}": value for name, value in self.derived.items()},
        }


def prepare_snapshot_dir(directory: Path) -> None:
    """Remove an earlier snapshot's files (meta first, so a half-replaced snapshot never looks complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = directory / META_FILE
    if meta.exists():
        meta.unlink()
    for pattern in ("users-*.parquet", "items.parquet", "catalog.parquet", "trending_*.parquet"):
        for old in directory.glob(pattern):
            old.unlink()


def run_backfill(job: BackfillJob, runner: str = "DirectRunner", beam_args: Sequence[str] = ()) -> BackfillResult:
    """Run the backfill to completion and return its counters.

    ``beam_args`` are Beam pipeline options (``--flink_master=...``,
    ``--direct_num_workers=2`` ...), passed through unchanged.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    if _pyflink_runtime_loaded():
        return _in_fresh_process(job, runner, beam_args)
    if not job.inputs:
        raise BackfillError("no input files")
    if job.cutoff_ms is not None:
        check_cutoff(job.cutoff_ms, job.config)
    job, derivation = with_derived_config(job)
    if job.snapshot_dir is not None:
        if waits_for_scoring(job.config):
            raise BackfillError(
                f"a snapshot cannot carry lists still waiting for their scoring interval (score_interval_ms={job.config.score_interval_ms}): "
                "take the snapshot with score_interval_ms 0; the streaming job started from it may use any interval"
            )
        prepare_snapshot_dir(Path(job.snapshot_dir))
    options = PipelineOptions([f"--runner={runner}", *beam_args])
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, job)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - started
    counters, cutoff = _metrics(result)
    derived = {name: getattr(job.config, name) for name in derivation.evidence if "value_ms" in derivation.evidence[name]}
    return BackfillResult(
        counters=counters, cutoff_ms=cutoff if cutoff is not None else job.cutoff_ms, seconds=seconds, derived=derived, derivation=derivation.to_json()
    )


def with_derived_config(job: BackfillJob) -> tuple[BackfillJob, Derivation]:
    """``job`` with the settings its config derives from history measured on its inputs (before the cutoff).

    The backfill is the history a streaming job starts from, so this is where
    such settings get their values: the snapshot records the derived config,
    and a job started from it continues under it (see
    :func:`pipelines.bootstrap.continued_config`).  The inputs are read once
    more for this (the user, item, type and time columns of every event).
    """
    from pipelines.sources import read_event_lines

    if not job.config.derive_from_history:
        return job, Derivation(config=job.config, evidence={})
    batches = []
    for path in job.inputs:
        events = split_feedback(parse_json_lines(read_event_lines(Path(path))).events)[0]
        if job.cutoff_ms is not None:
            events = events.take(events.ts < job.cutoff_ms)
        batches.append(events)
    derivation = derive_config(EventBatch.concat(batches), job.config)
    return dataclasses.replace(job, config=derivation.config), derivation


def _pyflink_runtime_loaded() -> bool:
    """True once PyFlink's Python runtime is imported here: it replaces parts of Beam's
    worker (its ParDo creator and compiled operations), so a Beam pipeline can no
    longer run in this process (it fails to decode, or crashes the interpreter)."""
    return any(name.startswith("pyflink.fn_execution.beam") for name in sys.modules)


def _in_fresh_process(job: BackfillJob, runner: str, beam_args: Sequence[str]) -> BackfillResult:
    """Run the backfill in a new interpreter (spawned, so it inherits no PyFlink state)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_backfill, job, runner, tuple(beam_args)).result()


def _metrics(result) -> tuple[dict[str, int], int | None]:
    from apache_beam.metrics.metric import MetricsFilter

    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    counters: dict[str, int] = {}
    for metric in query["counters"]:
        value = metric.committed if metric.committed is not None else metric.attempted
        counters[metric.key.metric.name] = counters.get(metric.key.metric.name, 0) + int(value or 0)
    cutoff = None
    for metric in query["distributions"]:
        if metric.key.metric.name == "cutoff_ms":
            value = metric.committed if metric.committed is not None else metric.attempted
            if value is not None and value.count:
                cutoff = int(value.max)
    return counters, cutoff


__all__ = [
    "BackfillError",
    "BackfillJob",
    "BackfillResult",
    "EventColumns",
    "MergedDeltas",
    "ShardDeltas",
    "ShardUsers",
    "TimelineResult",
    "build_pipeline",
    "expand_inputs",
    "merge_deltas",
    "parse_chunk",
    "read_catalog",
    "read_chunks",
    "replay_timeline",
    "replay_users",
    "run_backfill",
    "write_snapshot_files",
]
