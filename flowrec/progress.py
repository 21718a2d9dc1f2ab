"""What a running job has done so far, from its counters in Redis (`flowrec run`'s progress lines and summary).

The job adds its counters to the hash ``{ns}:v1:stats`` (see :mod:`state.keys`
and the sinks in :mod:`pipelines.operators`); a reporter polls that hash.  The
counters are cumulative over every run that wrote to the namespace, so a
reporter counts from what the hash held when it started.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Callable, Mapping, TextIO

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobCounters:
    """The job's counters: events read, dead letters, late events, user lists written; and the last closed window."""

    events: int = 0
    dead_letters: int = 0
    late_events: int = 0
    user_lists: int = 0
    last_window_ts: int = 0  # event time, epoch ms; a gauge, not a counter

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> "JobCounters":
        """From the stats hash as redis-py returns it (absent or unreadable fields are 0)."""
        values = {}
        for field in fields(cls):
            value = raw.get(field.name.encode(), raw.get(field.name))
            try:
                values[field.name] = int(value) if value is not None else 0
            except ValueError:
                values[field.name] = 0
        return cls(**values)

    def since(self, start: "JobCounters") -> "JobCounters":
        """What was counted after ``start`` (the window gauge stays as it is)."""
        return JobCounters(
            self.events - start.events,
            self.dead_letters - start.dead_letters,
            self.late_events - start.late_events,
            self.user_lists - start.user_lists,
            self.last_window_ts,
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def progress_line(done: JobCounters, events_per_s: float, seconds: float, now_ms: int | None) -> str:
    """One progress line.  ``now_ms`` (live inputs) adds the event-time lag: wall clock minus the last closed window."""
    parts = [
        f"{seconds:.0f} s:",
        f"events {done.events:,} ({events_per_s:,.0f}/s),",
        f"lists written {done.user_lists:,},",
        f"dead letters {done.dead_letters:,},",
        f"late events {done.late_events:,}",
    ]
    if done.last_window_ts:
        parts[-1] += ","
        parts.append(f"event time {_iso(done.last_window_ts)}")
        if now_ms is not None:
            parts.append(f"(lag {max(0, now_ms - done.last_window_ts) / 1000:,.1f} s)")
    return " ".join(parts)


def summary(done: JobCounters, seconds: float) -> dict[str, object]:
    """The end-of-run summary (the same shape as `flowrec replay`'s)."""
    return {
        "events": done.events,
        "dead_letters": done.dead_letters,
        "late_events": done.late_events,
        "user_lists": done.user_lists,
        "seconds": round(seconds, 3),
        "events_per_s": round(done.events / seconds, 1) if seconds > 0 else None,
    }


class ProgressReporter:
    """Polls the job's counters in Redis and prints a progress line every ``interval_s``.

    ``live``: the input is live, so the lines show the event-time lag.  A Redis
    read that fails is logged once and skipped (the job's own sink retries).
    """

    def __init__(self, client, stats_key: str, interval_s: float, out: TextIO, live: bool,
                 clock: Callable[[], float] = time.monotonic, wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.client = client
        self.stats_key = stats_key
        self.interval_s = interval_s
        self.out = out
        self.live = live
        self._clock = clock
        self._wall_ms = wall_ms
        self._warned = False
        self.start = self.read() or JobCounters()
        self.started = clock()
        self._last = (self.started, self.start)
        self._next = self.started + interval_s

    def read(self) -> JobCounters | None:
        import redis

        try:
            return JobCounters.from_hash(self.client.hgetall(self.stats_key))
        except redis.RedisError as exc:
            if not self._warned:
                log.warning("cannot read the job's counters from Redis: %s", exc)
                self._warned = True
            return None

    def due(self) -> bool:
        return self.interval_s > 0 and self._clock() >= self._next

    def report(self) -> None:
        """Print a progress line (rates over the time since the previous line)."""
        now = self._clock()
        self._next = now + self.interval_s
        current = self.read()
        if current is None:
            return
        last_time, last = self._last
        self._last = (now, current)
        rate = (current.events - last.events) / (now - last_time) if now > last_time else 0.0
        line = progress_line(current.since(self.start), rate, now - self.started, self._wall_ms() if self.live else None)
        print(line, file=self.out, flush=True)

    def summary(self) -> dict[str, object]:
        current = self.read() or self._last[1]
        return summary(current.since(self.start), self._clock() - self.started)
