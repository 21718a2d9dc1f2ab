"""The Redis sink adds the job's counters to the hash of the current minute of its clock (the dashboard's events/s)."""

from __future__ import annotations

from pipelines.messages import SinkBatch
from pipelines.operators import RedisSink

MINUTE = 1_700_000_040_000


class _Metrics:
    """Stands in for Flink's metric group: counters, gauges and distributions that go nowhere."""

    def counter(self, name: str) -> "_Metrics":
        return self

    def distribution(self, name: str) -> "_Metrics":
        return self

    def gauge(self, name: str, read) -> None:
        pass

    def inc(self, n: int = 1) -> None:
        pass

    def update(self, value: int) -> None:
        pass


class _Runtime:
    def get_metrics_group(self) -> _Metrics:
        return _Metrics()


def test_counters_go_to_the_minute_of_the_sink_clock(redis_url, redis_client):
    now = [MINUTE + 59_999]
    sink = RedisSink(redis_url, "flowrec", clock_ms=lambda: now[0])
    sink.open(_Runtime())
    try:
        sink.process_element(SinkBatch(stats={"events": 40, "late_events": 2, "last_window_ts": MINUTE}), None)
        now[0] = MINUTE + 60_000
        sink.process_element(SinkBatch(stats={"events": 5}, dead_letters=[b'{"reason":"bad_json"}']), None)
        sink.process_element(SinkBatch(stats={"events": 1, "dead_letters": 1}), None)
    finally:
        sink.close()
    assert redis_client.hgetall(f"flowrec:v1:stats:min:{MINUTE}") == {b"events": b"40", b"late_events": b"2"}  # gauges are not per-minute counts
    assert redis_client.hgetall(f"flowrec:v1:stats:min:{MINUTE + 60_000}") == {b"events": b"6", b"dead_letters": b"1"}
    assert redis_client.hget("flowrec:v1:stats", "events") == b"46"
