"""The progress reporter of `flowrec run`, over a real Redis holding the job's counters."""

from __future__ import annotations

import io

from flowrec.progress import JobCounters, ProgressReporter, progress_line

STATS = "flowrec:v1:stats"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reporter_counts_from_where_the_hash_stood_and_shows_rates_and_lag(redis_client):
    # Counters of an earlier run in the same namespace are not this run's.
    redis_client.hset(STATS, mapping={"events": 1000, "user_lists": 50, "dead_letters": 3})
    clock, out = Clock(), io.StringIO()
    reporter = ProgressReporter(redis_client, STATS, 5.0, out, live=True, clock=clock, wall_ms=lambda: 1_700_000_002_500)
    assert not reporter.due()
    redis_client.hincrby(STATS, "events", 400)
    redis_client.hincrby(STATS, "user_lists", 20)
    redis_client.hincrby(STATS, "dead_letters:bad_json", 1)
    redis_client.hincrby(STATS, "dead_letters", 1)
    redis_client.hincrby(STATS, "late_events", 2)
    redis_client.hset(STATS, "last_window_ts", 1_700_000_000_000)
    clock.now += 5.0
    assert reporter.due()
    reporter.report()
    assert out.getvalue() == ("5 s: events 400 (80/s), lists written 20, dead letters 1, late events 2, "
                              "event time 2023-11-14T22:13:20Z (lag 2.5 s)\n")
    redis_client.hincrby(STATS, "events", 100)
    clock.now += 10.0
    assert reporter.summary() == {"events": 500, "dead_letters": 1, "late_events": 2, "user_lists": 20, "seconds": 15.0, "events_per_s": 33.3}


def test_an_unreachable_redis_skips_a_line_instead_of_failing(redis_client):
    import redis

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    out = io.StringIO()
    reporter = ProgressReporter(dead, STATS, 1.0, out, live=False, clock=Clock())
    reporter.report()
    assert out.getvalue() == "" and reporter.summary()["events"] == 0


def test_counters_read_absent_and_garbled_fields_as_zero():
    assert JobCounters.from_hash({b"events": b"7", b"late_events": b"x"}) == JobCounters(events=7)
    # A bounded replay of history shows event time but no lag: it would be the data's age.
    line = progress_line(JobCounters(events=3, last_window_ts=1_700_000_000_000), 1.5, 2.0, None)
    assert line.endswith("event time 2023-11-14T22:13:20Z") and "lag" not in line
