"""The trending operator's managed state: buckets written once per refresh, a log of the window deltas
applied since, and a restore at any window boundary that continues exactly as an uninterrupted run."""

from __future__ import annotations

import random

import pytest

from pipelines.messages import Bundle, FactsUpdate, ModelUpdate, SinkBatch, TrendDelta
from pipelines.operators import PendingByWindow, TimerMemo, TrendingOperator, WRITES
from state.schemas import decode_scored
from tests.pipelines.fakestate import CountingMap, FakeValue
from transforms.config import ModelConfig
from transforms.trending import TrendingModel
from transforms.windows import WindowClock

# Windows of 100 ms, a refresh every 500 ms, buckets of 1 s kept for 4 s: a refresh sees several
# windows' deltas in its log, and buckets both fill across refreshes and expire.
CONFIG = ModelConfig(window_ms=100, model_refresh_ms=500, trending_window_ms=4_000, trending_slide_ms=1_000, trending_size=5)
CATEGORIES = ("shoes", "hats")


class _Ctx:
    """Timer service of one key: timers registered and the watermark the test moves."""

    def __init__(self) -> None:
        self.watermark = -(2**63)
        self.timers: set[int] = set()

    def timer_service(self):
        return self

    def current_watermark(self) -> int:
        return self.watermark

    def register_event_time_timer(self, t: int) -> None:
        self.timers.add(t)

    def delete_event_time_timer(self, t: int) -> None:
        self.timers.discard(t)


class _State:
    """Everything the operator keeps in managed state (survives a restart; the operator's memory does not)."""

    def __init__(self) -> None:
        self.pending, self.buckets, self.facts, self.listed, self.bucket_log = CountingMap(), CountingMap(), CountingMap(), CountingMap(), CountingMap()
        self.meta = FakeValue()


def _operator(state: _State) -> TrendingOperator:
    """A freshly opened operator on ``state`` (as after a restore)."""
    operator = TrendingOperator(CONFIG)
    operator.pending = PendingByWindow(state.pending)
    operator.buckets, operator.facts, operator.listed, operator.bucket_log, operator.meta = state.buckets, state.facts, state.listed, state.bucket_log, state.meta
    operator.model = None
    operator.categories = {}
    operator.dirty_buckets = set()
    operator.timers = TimerMemo()
    return operator


def _windows(n: int, seed: int) -> list[list]:
    """Per window, its messages: a trend delta with integral weights at times inside the window, and now and then facts."""
    rng = random.Random(seed)
    clock = WindowClock.of(CONFIG)
    out = []
    for window in range(n):
        start = clock.end(window) - CONFIG.window_ms
        k = rng.randint(1, 12)
        items = [f"i{rng.randint(0, 30)}" for _ in range(k)]
        ts = sorted(rng.randrange(start, start + CONFIG.window_ms) for _ in range(k))
        messages: list = [TrendDelta(window, k, items, ts, [float(rng.choice((1, 2, 3, 5))) for _ in range(k)])]
        if rng.random() < 0.1:
            messages.append(FactsUpdate(window, {f"i{rng.randint(0, 30)}": (rng.choice(CATEGORIES), True) for _ in range(3)}))
        out.append(messages)
    return out


def _run(windows: list[list], restart_every: int | None) -> tuple[list, _State]:
    """Feed the windows, closing each at its timer; a new operator on the same state every ``restart_every`` windows."""
    state = _State()
    ctx = _Ctx()
    clock = WindowClock.of(CONFIG)
    operator = _operator(state)
    produced: list = []
    for window, messages in enumerate(windows):
        if restart_every and window and window % restart_every == 0:
            operator = _operator(state)
        list(operator.process_element(Bundle(0, messages), ctx))
        ctx.watermark = clock.timer(window)
        ctx.timers.discard(ctx.watermark)
        for out in operator.on_timer(ctx.watermark, ctx):
            produced.append(_shape(out))
    if restart_every:
        operator = _operator(state)
    for out in operator.on_timer(2**63 - 1, ctx):
        produced.append(_shape(out))
    return produced, state


def _shape(out) -> tuple:
    """An output as comparable data: ("updates", [(window, entries)]) or ("writes", [Write])."""
    if isinstance(out, Bundle):
        assert all(isinstance(u, ModelUpdate) for u in out.parts)
        return "updates", [(u.window, u.entries) for u in out.parts]
    tag, batch = out
    assert tag == WRITES and isinstance(batch, SinkBatch)
    return "writes", batch.writes


@pytest.mark.parametrize("restart_every", [1, 2, 3, 7])
def test_a_restart_at_any_window_continues_exactly(restart_every):
    windows = _windows(120, seed=restart_every)
    uninterrupted, _ = _run(windows, None)
    restarted, _ = _run(windows, restart_every)
    # Lists were produced (global and per category), and a restarted run produced exactly the same.
    keys = {key for kind, parts in uninterrupted if kind == "updates" for _, entries in parts for key, _ in entries}
    assert {"t:", "tc:shoes", "tc:hats"} <= keys
    assert restarted == uninterrupted


def test_buckets_are_written_once_per_refresh_and_the_log_holds_the_windows_since():
    windows = _windows(120, seed=5)
    produced, state = _run(windows, None)
    refreshes = sum(1 for kind, parts in produced if kind == "updates" for _, entries in parts if entries[0][0] == "t:")
    assert refreshes >= 120 * CONFIG.window_ms // CONFIG.model_refresh_ms - 1
    # One log entry per window with events; a bucket write per refresh and bucket it changed (2 at most:
    # a refresh's windows span at most two 1 s buckets), not per window.
    assert state.bucket_log.puts == 120
    assert state.buckets.puts <= 2 * refreshes < 120
    assert not state.bucket_log  # the end-of-input refresh wrote the buckets and cleared the log


def test_state_between_refreshes_is_the_buckets_plus_the_log():
    """Stopped between two refreshes: the buckets in state lag the model, the log makes up the difference."""
    windows = _windows(13, seed=9)
    state = _State()
    ctx = _Ctx()
    clock = WindowClock.of(CONFIG)
    operator = _operator(state)
    model = TrendingModel(CONFIG)
    for window, messages in enumerate(windows):
        list(operator.process_element(Bundle(0, messages), ctx))
        ctx.watermark = clock.timer(window)
        list(operator.on_timer(ctx.watermark, ctx))
        for m in messages:
            if isinstance(m, TrendDelta):
                model.add(m.items, m.ts, m.weights)
    # The windows after the last refresh (the first close of each refresh slot) are in the log.
    slots = [clock.refresh_slot(clock.end(w)) for w in range(len(windows))]
    last_refresh = max(w for w in range(1, len(windows)) if slots[w] != slots[w - 1])
    assert last_refresh < len(windows) - 1
    assert len(state.bucket_log) == len(windows) - 1 - last_refresh
    in_state = {int(b): dict(zip(*(v.tolist() for v in decode_scored(raw)))) for b, raw in state.buckets.items()}
    assert in_state != model.to_state().buckets
    restored = _operator(state)._load()
    assert restored.to_state().buckets == model.to_state().buckets
    assert restored.to_state().totals == model.to_state().totals
