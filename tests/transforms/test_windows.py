"""The event-time grid: windows, timers, refresh slots and scoring windows; the score interval in the engine."""

from __future__ import annotations

import pytest

from transforms.config import ModelConfig
from transforms.engine import ReferenceEngine
from transforms.events import EventBatch
from transforms.synthetic import generate_shop
from transforms.windows import WindowClock


def test_windows_timers_and_slots():
    clock = WindowClock(window_ms=200, refresh_ms=1000)
    assert clock.window_of(0) == 0 and clock.window_of(199) == 0 and clock.window_of(200) == 1
    assert clock.end(0) == 200 and clock.timer(0) == 199
    assert clock.window_of_timer(clock.timer(7)) == 7
    assert clock.refresh_slot(clock.end(4)) == 0 and clock.refresh_slot(clock.end(5)) == 1


@pytest.mark.parametrize("interval, window, expected", [(0, 3, 3), (200, 3, 3), (1000, 0, 4), (1000, 4, 4), (1000, 5, 9), (1000, 7, 9)])
def test_scoring_window_is_the_last_window_of_the_interval(interval, window, expected):
    assert WindowClock(window_ms=200, refresh_ms=1000, score_interval_ms=interval).score_window(window) == expected


def test_score_interval_must_be_a_multiple_of_the_window():
    with pytest.raises(ValueError, match="score_interval_ms"):
        ModelConfig(window_ms=200, score_interval_ms=300)


def test_lists_are_recomputed_at_most_once_per_interval():
    catalog, stream = generate_shop(users=50, items=60, events=3000, seed=3)
    events = EventBatch.concat(list(stream))
    # 3000 events in 30 s of event time: each user is active in many 200 ms windows per second.
    events = events.sorted_by_time()
    events = type(events)(**{**events.__dict__, "ts": events.ts[0] + (events.ts - events.ts[0]) * 30_000 // max(int(events.ts[-1] - events.ts[0]), 1)})
    interval = 1000
    config = ModelConfig(score_interval_ms=interval)
    scored: list[tuple[int, str]] = []
    engine = ReferenceEngine(config, catalog, on_window=lambda out: scored.extend((out.window_end_ms, u) for u in out.users))
    engine.process(events)
    engine.finish()
    # Exactly one list per user and interval in which the user had events, at the interval's end.
    clock = WindowClock.of(config)
    expected = {(clock.end(clock.score_window(int(t) // config.window_ms)), u) for t, u in zip(events.ts.tolist(), events.user.tolist())}
    assert len(scored) == len(set(scored)) and set(scored) == expected
    assert all(end % interval == 0 for end, _ in scored)
    every: list[str] = []
    full = ReferenceEngine(ModelConfig(), catalog, on_window=lambda out: every.extend(out.users))
    full.process(events)
    full.finish()
    assert len(scored) < len(every)  # fewer lists than scoring every window a user is active in
