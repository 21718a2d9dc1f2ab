"""UserState's state layout without a cluster: the operator's calls on dict-backed state handles.

The Flink equality, restore and kill tests run the same code on a real
mini-cluster; here the cases a cluster run cannot set up: a savepoint of the
earlier per-user layout (migrated, or refused with a clear message), the
number of state calls per window, and the TTL sweep; and what a window of
impressions alone emits.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from pipelines.messages import AttributionCounts, Bundle, EventSlice, SinkBatch, UserSnapshot
from pyflink.datastream import TimeDomain

from pipelines.operators import ATTRIBUTED, ITEM_DELTAS, STATS, STATS_FLUSH_MS, TREND_DELTAS, PendingByWindow, TimerMemo, UserState, ValueByKey
from state.profile_log import MAX_DECODED, ProfileLog
from state.recent import RecentlyUsed
from tests.pipelines.records import tagged
from tests.pipelines.fakestate import CountingMap
from state.schemas import SchemaError, encode_profile
from transforms.config import ModelConfig
from transforms.engine import ReferenceEngine
from transforms.events import EventBatch, parse_records, split_feedback
from transforms.synthetic import generate_shop
from transforms.windows import WindowClock

CONFIG = ModelConfig()
LONG_MIN = -(2**63)


class _Value:
    def __init__(self) -> None:
        self.value_ = None

    def value(self):
        return self.value_

    def update(self, value):
        self.value_ = value

    def clear(self):
        self.value_ = None


class _Counter:
    def inc(self, n=1):
        pass


class _Ctx:
    """Timer service of one key: the watermark the test sets and the timers registered."""

    def __init__(self, watermark: int = LONG_MIN) -> None:
        self.watermark = watermark
        self.timers: set[int] = set()
        self.registrations = 0
        self.processing_timers: set[int] = set()
        self.processing_registrations = 0
        self.now = 1_000
        self.domain = TimeDomain.EVENT_TIME

    def time_domain(self):
        return self.domain

    def current_processing_time(self) -> int:
        return self.now

    def register_processing_time_timer(self, t: int) -> None:
        self.processing_registrations += 1
        self.processing_timers.add(t)

    def get_current_key(self) -> int:
        return 0

    def timer_service(self):
        return self

    def current_watermark(self):
        return self.watermark

    def register_event_time_timer(self, t: int) -> None:
        self.registrations += 1
        self.timers.add(t)

    def delete_event_time_timer(self, t: int) -> None:
        self.timers.discard(t)


def _operator(blocks: CountingMap, legacy_profiles: CountingMap | None = None, legacy_last_seen: CountingMap | None = None, ttl_ms: int = 10**12, sweep_every_ms: int = 3_600_000) -> UserState:
    operator = UserState(CONFIG, 2, ttl_ms, sweep_every_ms=sweep_every_ms)
    operator.blocks = blocks
    operator.legacy_profiles = legacy_profiles if legacy_profiles is not None else CountingMap()
    operator.legacy_last_seen = legacy_last_seen if legacy_last_seen is not None else CountingMap()
    operator.last_sweep = ValueByKey(_Value())
    operator.outbox = PendingByWindow(CountingMap())
    operator.timers = TimerMemo()
    operator.held_stats = ValueByKey(_Value())
    operator.flush_timers = TimerMemo(processing_time=True)
    operator.logs = {}
    operator.decoded = RecentlyUsed(MAX_DECODED)
    operator.late_counter = operator.users_counter = _Counter()
    operator.users_updated = 0
    operator.attribution = None  # attribution off (no rec_id secret)
    return operator


def _events() -> EventBatch:
    _, stream = generate_shop(users=300, items=100, events=4_000, seed=3)
    return split_feedback(EventBatch.concat(list(stream)).sorted_by_time())[0]


def _bundles(events: EventBatch, chunk: int = 500) -> list[Bundle]:
    """The events in chunks, each chunk split by window (one user shard: 0), as ParseEvents bundles them."""
    clock = WindowClock.of(CONFIG)
    out = []
    for start in range(0, len(events), chunk):
        part = events.take(slice(start, start + chunk))
        windows = clock.window_of(part.ts)
        slices = []
        for window in sorted(set(windows.tolist())):
            rows = part.take(windows == window)
            slices.append(EventSlice(window, 0, rows, int(rows.ts.max())))
        out.append(Bundle(0, slices, max(s.max_ts for s in slices)))
    return out


def _run(operator: UserState, bundles: list[Bundle]) -> dict[str, bytes | None]:
    """Feed the bundles; the latest snapshot bytes per user."""
    latest: dict[str, bytes | None] = {}
    for bundle in bundles:
        for tag, out in map(tagged, operator.process_element(bundle, _Ctx())):
            if tag is None and out.parts and isinstance(out.parts[0], UserSnapshot):
                for snapshot in out.parts:
                    latest.update(snapshot.profiles)
    return latest


def _engine_profiles(events: EventBatch) -> dict[str, bytes]:
    engine = ReferenceEngine(CONFIG, score_users=False)
    engine.process(events)
    return {user: encode_profile(profile) for user, profile in engine.profiles.items()}


def test_one_put_per_call_and_a_restore_continues_exactly():
    events = _events()
    bundles = _bundles(events)
    half = len(bundles) // 2
    blocks = CountingMap()
    first = _operator(blocks)
    _run(first, bundles[:half])
    # A put per call (plus the removes of cleaned blocks), not a put per user.
    assert blocks.writes <= 3 * half
    # A restarted operator (memory empty) reads the shard back from its blocks and goes on.
    second = _operator(blocks)
    latest = _run(second, bundles[half:])
    expected = _engine_profiles(events)
    assert {u: second.logs[0].encoded(u) for u in second.logs[0].users()} == expected
    assert latest and {u: raw for u, raw in latest.items()} == {u: expected[u] for u in latest}
    assert {u: raw for u, raw in ProfileLog.restore(blocks.items())._raw.items()} == expected


def test_a_savepoint_of_the_per_user_layout_is_migrated():
    events = _events()
    bundles = _bundles(events)
    half = len(bundles) // 2
    before = EventBatch.concat([s.events for b in bundles[:half] for s in b.parts])
    # What the earlier release kept: a profile and a last-seen time per user.
    legacy_profiles, legacy_last_seen = CountingMap(), CountingMap()
    engine = ReferenceEngine(CONFIG, score_users=False)
    engine.process(before)
    for user, profile in engine.profiles.items():
        legacy_profiles[user] = encode_profile(profile)
        legacy_last_seen[user] = profile.last_ts
    blocks = CountingMap()
    operator = _operator(blocks, legacy_profiles, legacy_last_seen)
    _run(operator, bundles[half:])
    assert not legacy_profiles and not legacy_last_seen  # migrated, then cleared
    expected = _engine_profiles(events)
    restored = ProfileLog.restore(blocks.items())
    assert {u: restored.encoded(u) for u in restored.users()} == expected


def test_a_per_user_value_of_an_unknown_version_is_refused_clearly():
    legacy = CountingMap()
    legacy["u1"] = orjson.dumps({"v": 99})
    operator = _operator(CountingMap(), legacy)
    with pytest.raises(SchemaError, match="cannot migrate user state of the per-user layout \\(user 'u1'\\)"):
        _run(operator, _bundles(_events())[:1])


def test_users_unseen_for_the_ttl_are_dropped_from_state():
    events = _events()
    bundles = _bundles(events)
    blocks = CountingMap()
    # Event time of the shop spans days: a one-hour TTL swept every 10 minutes drops most users.
    operator = _operator(blocks, ttl_ms=3_600_000, sweep_every_ms=600_000)
    _run(operator, bundles)
    end = int(events.ts.max())
    restored = ProfileLog.restore(blocks.items())
    kept = set(restored.users())
    assert kept == set(operator.logs[0].users())
    assert kept and len(kept) < len(set(events.user.tolist()))
    assert all(end - restored.last_seen(u) <= 3_600_000 + 600_000 for u in kept)


class _RecordingAttribution:
    """Stands in for FeedbackAttribution: records the (window, rows) it is fed, counts nothing."""

    def __init__(self) -> None:
        self.fed: list = []

    def attribute(self, shard, feedback, watermark):
        self.fed += feedback
        # A count per window fed, and a counter, as FeedbackAttribution reports them.
        return [AttributionCounts({(window, "", "", "home", "all", "fed"): len(rows)}, {}, window) for window, rows in feedback], SinkBatch(stats={"attribution_replays": 1})


def test_a_window_of_impressions_alone_goes_to_attribution_only():
    """Impressions leave the learning path (as in the reference engine): a window holding only impressions
    sends attribution its rows, but the item model and trending no delta, so they close no window there
    (a refresh due in its slot would otherwise run before the slot's first window with events)."""
    clock = WindowClock.of(CONFIG)
    t0 = 1_700_000_000_000
    shown_w = clock.window_of(t0)
    clicked_w = shown_w + 2
    shown = parse_records([{"user_id": "u1", "event_type": "impression", "rec_id": "r", "items": ["i1", "i2"], "ts": t0}]).events
    clicked = parse_records([{"user_id": "u1", "event_type": "click", "item_id": "i1", "ts": t0 + 2 * CONFIG.window_ms}]).events
    assert clock.window_of(int(clicked.ts[0])) == clicked_w
    operator = _operator(CountingMap())
    operator.attribution = _RecordingAttribution()
    bundle = Bundle(0, [EventSlice(shown_w, 0, shown, int(shown.ts.max())), EventSlice(clicked_w, 0, clicked, int(clicked.ts.max()))], int(clicked.ts.max()))
    ctx = _Ctx()
    out = [tagged(r) for r in operator.process_element(bundle, ctx)]
    # The snapshot leaves with the call; the counters wait for the next timer, the deltas and counts for their window's.
    assert [r.parts[0].window if tag is None else tag.tag_id for tag, r in out] == [clicked_w]
    assert ctx.timers == {clock.timer(shown_w), clock.timer(clicked_w)}
    ctx.watermark = clock.timer(clicked_w)
    out += [tagged(r) for r in operator.on_timer(clock.timer(shown_w), ctx)]
    snapshots = [part.window for tag, record in out if tag is None for part in record.parts]
    side = {}
    for tag, record in (r for r in out if r[0] is not None):
        side.setdefault(tag.tag_id, []).append(record)
    assert snapshots == [clicked_w]
    assert {d.window for b in side[ITEM_DELTAS.tag_id] for d in b.parts} == {clicked_w}
    assert [d.window for b in side[TREND_DELTAS.tag_id] for d in b.parts] == [clicked_w]
    assert [window for window, _ in operator.attribution.fed] == [shown_w, clicked_w]
    assert [(c.window, c.counts) for c in side[ATTRIBUTED.tag_id]] == [(w, {(w, "", "", "home", "all", "fed"): len(rows)}) for w, rows in ((shown_w, shown), (clicked_w, clicked))]
    assert sum(batch.stats.get("attribution_replays", 0) for batch in side[STATS.tag_id]) == 1
    assert sum(batch.stats.get("events", 0) for batch in side[STATS.tag_id]) == len(shown) + len(clicked)  # every row is counted in


def _outputs(bundles: list[Bundle], restart_every: int | None = None, ctx: _Ctx | None = None) -> list:
    """Every output of the calls and of the timers as the watermark passes each bundle's windows, of an
    operator on fresh state (a new operator on the same state every ``restart_every`` bundles), each as
    (tag or None, record); ``ctx`` is the timer service (a new one by default)."""
    clock = WindowClock.of(CONFIG)
    blocks, outbox, held_stats = CountingMap(), CountingMap(), _Value()
    ctx = ctx if ctx is not None else _Ctx()
    out: list = []

    def opened() -> UserState:
        fresh = _operator(blocks)
        fresh.outbox = PendingByWindow(outbox)
        fresh.held_stats = ValueByKey(held_stats)
        return fresh

    operator = opened()
    for k, bundle in enumerate(bundles):
        if restart_every and k and k % restart_every == 0:
            operator = opened()
        out += [tagged(r) for r in operator.process_element(bundle, ctx)]
        # The watermark moves to the window before the bundle's last: a window stays open across calls.
        watermark = clock.timer(max(p.window for p in bundle.parts) - 1)
        if watermark > ctx.watermark:
            ctx.watermark = watermark
            for timer in sorted(t for t in ctx.timers if t <= watermark):
                if timer in ctx.timers:
                    ctx.timers.discard(timer)
                    out += [tagged(r) for r in operator.on_timer(timer, ctx)]
    ctx.watermark = 2**63 - 1
    for timer in sorted(ctx.timers):
        if timer in ctx.timers:
            ctx.timers.discard(timer)
            out += [tagged(r) for r in operator.on_timer(timer, ctx)]
    return out


def _dense_bundles() -> list[Bundle]:
    """About 20 events per 200 ms window, as a busy shop sends them, in calls of 40 events: windows span calls."""
    shop = _events()
    events = dataclasses.replace(shop, ts=int(shop.ts[0]) + np.arange(len(shop), dtype=np.int64) * 10)
    return _bundles(events, chunk=40)


def test_each_windows_timer_is_registered_once_however_many_calls_it_spans():
    """Calls into Flink cost the interpreter lock in thread mode: a window's timer is registered by its
    first call only, every window still gets one (so each closes), and a restarted operator registers
    again (its memo is empty; Flink ignores a timer it holds)."""
    bundles = _dense_bundles()
    windows = {p.window for b in bundles for p in b.parts}
    ctx = _Ctx()
    _outputs(bundles, ctx=ctx)
    assert sum(len(b.parts) for b in bundles) > 1.4 * len(windows)  # windows span calls
    assert ctx.registrations == len(windows)
    assert not ctx.timers  # every registered timer fired
    restarted = _Ctx()
    _outputs(bundles, restart_every=3, ctx=restarted)
    assert len(windows) < restarted.registrations <= len(windows) + len(bundles) // 3
    assert not restarted.timers


def test_counters_wait_for_the_next_timer_and_leave_once():
    """A call that filled the outbox holds its counters (an output and a Redis round trip per input
    record cost the interpreter lock): they leave with the next timer of either kind, added up, once;
    a processing-time timer bounds the wait when no window closes."""
    bundles = _dense_bundles()[:3]
    operator = _operator(CountingMap())
    ctx = _Ctx()
    calls = [list(operator.process_element(bundle, ctx)) for bundle in bundles]
    assert all(not [r for r in out if isinstance(r, tuple) and r[0] is STATS] for out in calls)
    assert ctx.processing_timers == {1_000 + STATS_FLUSH_MS} and ctx.processing_registrations == 1  # one timer while counters wait
    ctx.domain = TimeDomain.PROCESSING_TIME
    flushed = list(operator.on_timer(1_000 + STATS_FLUSH_MS, ctx))
    assert [batch.stats["events"] for tag, batch in flushed if tag is STATS] == [sum(len(p.events) for b in bundles for p in b.parts)]
    assert list(operator.on_timer(1_000 + STATS_FLUSH_MS, ctx)) == []  # nothing twice
    # Held again by the next call (a new timer: the last one fired), then released by a window's timer.
    ctx.domain = TimeDomain.EVENT_TIME
    more = _dense_bundles()[3]
    list(operator.process_element(more, ctx))
    assert ctx.processing_registrations == 2
    ctx.watermark = 2**63 - 1
    released = [batch.stats["events"] for timer in sorted(ctx.timers) for tag, batch in operator.on_timer(timer, ctx) if tag is STATS]
    assert released == [sum(len(p.events) for p in more.parts)]


def _per_window(outputs: list, tag) -> dict:
    """The records of side output ``tag``, per (window, shard), in order: what the item model or trending sees."""
    found: dict = {}
    for out_tag, record in outputs:
        if out_tag is tag:
            for part in record.parts:
                found.setdefault((part.window, getattr(part, "shard", 0)), []).append(part)
    return found


def test_a_windows_deltas_leave_once_when_it_closes_as_the_calls_made_them():
    """Bundles of 40 events, windows open across several calls: each window's item deltas (per item shard)
    and trend delta leave in one record when the watermark passes it, the calls' columns concatenated
    in order, and the counters count every event once; a restart between calls changes nothing."""
    bundles = _dense_bundles()
    outputs = _outputs(bundles)
    items = _per_window(outputs, ITEM_DELTAS)
    trends = _per_window(outputs, TREND_DELTAS)
    # What each call applied, per window (as the calls' deltas went out one record per call before).
    expected: dict = {}
    replay = _operator(CountingMap())
    for bundle in bundles:
        profile_log = replay._log(0)
        for piece in bundle.parts:
            interactions, _ = split_feedback(piece.events)
            if len(interactions):
                _, deltas, trend, _ = replay._apply(profile_log, piece, interactions, LONG_MIN)
                for delta in deltas:
                    expected.setdefault((delta.window, delta.shard), []).append(delta)
                expected.setdefault((trend.window, "trend"), []).append(trend)
    calls_per_window = max(len(v) for k, v in expected.items() if k[1] == "trend")
    assert calls_per_window > 1  # the test needs windows spanning calls
    assert set(items) == {k for k in expected if k[1] != "trend"}
    for key, parts in items.items():
        assert len(parts) == 1
        made = expected[key]
        assert parts[0].events == sum(d.events for d in made)
        for column in ("items", "item_weights", "pair_a", "pair_b", "pair_weights"):
            assert list(getattr(parts[0], column)) == [x for d in made for x in getattr(d, column)]
    assert {w for w, _ in trends} == {w for w, kind in expected if kind == "trend"}
    for (window, _), parts in trends.items():
        made = expected[(window, "trend")]
        assert len(parts) == 1 and parts[0].events == sum(t.events for t in made)
        assert (list(parts[0].items), list(parts[0].ts), list(parts[0].weights)) == ([x for t in made for x in t.items], [x for t in made for x in t.ts], [x for t in made for x in t.weights])
    assert sum(batch.stats.get("events", 0) for tag, batch in outputs if tag is STATS) == sum(len(p.events) for b in bundles for p in b.parts)
    # The same, with the operator restarted (memory lost, state kept) every third call.
    assert _outputs(bundles, restart_every=3) == outputs
