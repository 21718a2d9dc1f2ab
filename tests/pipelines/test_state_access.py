"""The operators' shortcuts to Flink state and timers (:class:`TimerMemo`, :class:`ValueByKey`,
:class:`MapByKey`): in thread mode every call from Python into Java lets go of the interpreter lock,
so they save calls, and must never skip one that matters."""

from __future__ import annotations

from pipelines.operators import MapByKey, TimerMemo, ValueByKey
from tests.pipelines.fakestate import FakeValue, RecordingMap


class Timers:
    """A timer service that counts registrations of each kind."""

    def __init__(self) -> None:
        self.event_time: list[int] = []
        self.processing_time: list[int] = []

    def timer_service(self):
        return self

    def register_event_time_timer(self, t: int) -> None:
        self.event_time.append(t)

    def register_processing_time_timer(self, t: int) -> None:
        self.processing_time.append(t)


def test_timer_memo_registers_once_until_the_timer_fires_or_is_deleted():
    ctx = Timers()
    memo = TimerMemo()
    for key in (0, 1, 0):
        memo.register(ctx, key, 100)
    assert ctx.event_time == [100, 100]  # once per key
    memo.register(ctx, 0, 300)
    assert memo.pending(0) and not memo.pending(2)
    memo.forget(0, 200)
    memo.register(ctx, 0, 100)  # fired: registered again
    memo.register(ctx, 0, 300)  # still held: not
    memo.register(ctx, 1, 100)  # another key's timers are not touched
    assert ctx.event_time == [100, 100, 300, 100]
    memo.forget(0, 300)
    assert not memo.pending(0)


def test_timer_memo_of_processing_time():
    ctx = Timers()
    memo = TimerMemo(processing_time=True)
    memo.register(ctx, 0, 50)
    memo.register(ctx, 0, 50)
    assert ctx.processing_time == [50] and ctx.event_time == []


def test_value_by_key_reads_each_keys_state_once_and_writes_through():
    reads = []

    class Spy(FakeValue):
        def value(self):
            reads.append(self.raw)
            return self.raw

        def clear(self):
            self.raw = None

    state = Spy()
    cached = ValueByKey(state)
    assert cached.get(3) is None and cached.get(3) is None
    cached.set(3, 42)
    assert cached.get(3) == 42 and state.raw == 42
    cached.clear(3)
    assert cached.get(3) is None and state.raw is None
    assert reads == [None]


def test_map_by_key_reads_each_entry_once_and_writes_through():
    state = RecordingMap(a=b"1")
    calls = state.calls
    cached = MapByKey(state, max_cached=10)
    assert cached.get(0, "a") == b"1" and cached.get(0, "a") == b"1"
    assert cached.get(0, "b") is None and cached.get(0, "b") is None  # absent: known after one call
    cached.put(0, "b", b"2")
    cached.put(0, "c", b"3")
    assert cached.get(0, "b") == b"2" and dict(state) == {"a": b"1", "b": b"2", "c": b"3"}
    cached.remove(0, "a")
    cached.remove(0, "a")  # known absent: no call
    cached.remove(0, "z")  # unknown: asked of the state
    assert calls == [("get", "a"), ("get", "b"), ("put", "b"), ("put", "c"), ("remove", "a"), ("remove", "z")]
    assert sorted(cached.items(0)) == [("b", b"2"), ("c", b"3")]


def test_map_by_key_forgets_the_least_recently_used_entry_beyond_its_bound():
    state = RecordingMap(a=b"1", b=b"2", c=b"3", d=b"4")
    calls = state.calls
    cached = MapByKey(state, max_cached=3)
    for entry in ("a", "b", "c"):
        cached.get(0, entry)
    cached.get(0, "a")  # used again: now "b" is the least recently used
    cached.get(0, "d")  # over the bound: "b" is forgotten
    assert len(cached) == 3
    calls.clear()
    assert [cached.get(0, e) for e in ("a", "c", "d")] == [b"1", b"3", b"4"] and calls == []  # kept: no state call
    cached.put(0, "e", b"5")  # a put is a use too: "a" goes
    calls.clear()
    assert cached.get(0, "b") == b"2" and cached.get(0, "a") == b"1"  # forgotten: read again, unchanged
    assert calls == [("get", "b"), ("get", "a")]
    assert len(cached) == 3
