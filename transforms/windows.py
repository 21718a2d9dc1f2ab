"""Event-time window arithmetic, in one place: windows, their timers, refresh slots and scoring windows.

Window ``w`` covers event time ``[w*W, (w+1)*W)`` with ``W = window_ms``; it
closes when the watermark passes ``(w+1)*W - 1`` (its timer).  The model
refreshes at most once per slot of ``model_refresh_ms``.  Users are scored at
the close of their *scoring window*: with ``score_interval_ms`` (a multiple
of ``W``; 0 means every window) the lists of users active anywhere in an
interval ``[k*I, (k+1)*I)`` are computed once, when the interval's last
window closes, so a user's list is recomputed at most once per interval
however many windows the user is active in.  Every engine (reference, job,
backfill) takes its window arithmetic from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from transforms.config import ModelConfig


@dataclass(frozen=True)
class WindowClock:
    """The event-time grid of one model configuration (times in ms)."""

    window_ms: int
    refresh_ms: int
    score_interval_ms: int = 0
    # Online item vectors move at most once per slot of this much event time (0: at every refresh).
    vector_refresh_ms: int = 0

    @classmethod
    def of(cls, config: ModelConfig) -> "WindowClock":
        return cls(config.window_ms, config.model_refresh_ms, config.score_interval_ms, config.online_vector_refresh_ms)

    def window_of(self, ts):
        """The window holding event time ``ts`` (an int or an integer array)."""
        return ts // self.window_ms

    def end(self, window: int) -> int:
        """The first instant after ``window`` (outputs of the window carry this time)."""
        return (window + 1) * self.window_ms

    def timer(self, window: int) -> int:
        """The event-time timer that closes ``window``: its last millisecond."""
        return (window + 1) * self.window_ms - 1

    def window_of_timer(self, timestamp: int) -> int:
        """The window whose timer is ``timestamp`` (for a watermark: the last window it has closed)."""
        return (timestamp + 1) // self.window_ms - 1

    def open_window(self, watermark: int) -> int:
        """The first window ``watermark`` has not closed: where a late event or upsert takes effect."""
        return self.window_of_timer(watermark) + 1

    def refresh_slot(self, end: int) -> int:
        """The refresh slot of a window ending at ``end``."""
        return (end - 1) // self.refresh_ms

    def vector_slot(self, end: int) -> int:
        """The online-vector slot of a refresh at ``end``: evidence goes out at the first refresh of each."""
        return (end - 1) // (self.vector_refresh_ms or self.refresh_ms)

    def score_window(self, window: int) -> int:
        """The window at whose close users active in ``window`` are scored (``window`` itself without an interval)."""
        interval = self.score_interval_ms
        if interval <= self.window_ms:
            return window
        end = self.end(window)
        return -(-end // interval) * interval // self.window_ms - 1
