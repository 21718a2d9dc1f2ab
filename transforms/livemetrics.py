"""The dashboard's arithmetic: per-minute series of the attribution counts and the job's own counters.

The job counts, per minute of event time, what each experiment variant's lists
did in each context (``state.metrics``: impressions, clicks, carts, purchases,
revenue, and the live hit-rate's choices and hits), and, per minute of
processing time, its own counters (``events``, ``late_events``,
``dead_letters``; :class:`state.store.RedisStore.add_stats`).  Everything here
turns such counts into what ``GET /v1/metrics/live`` answers:

* :func:`minute_starts` — the ``minutes`` minute starts ending with the one
  holding ``end_ms`` (minutes are aligned to the epoch, 60,000 ms);
* :func:`group_series` — one series per (experiment, variant, context) with a
  value per minute (0 where nothing was counted) and the rates per minute;
* :func:`per_second` — a per-minute count as a rate: the count over the
  minute's 60 s, or over the part of the current minute that has passed;
* :func:`percentile` — nearest-rank percentiles of the freshness lags.

Rates are ``None`` when their denominator is 0 (no impressions: no CTR, not
a CTR of 0).  Definitions, per group and minute:

* CTR = clicks / impressions (one impression = one shown item);
* conversion = purchases / impressions (per shown item, like CTR, so variants
  compare on the same denominator);
* live HR = hits / choices (a choice is an outcome attributed to the user's
  latest impression; a hit when the chosen item was in it).

Pure: no I/O, no clock (``now_ms`` is passed in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

MINUTE_MS = 60_000
# What the job counts per group and minute (state.metrics' measures), in the order the API lists them.
MEASURES: tuple[str, ...] = ("impressions", "clicks", "carts", "purchases", "revenue", "choices", "hits")
# Rate name -> (numerator, denominator).
RATES: dict[str, tuple[str, str]] = {
    "ctr": ("clicks", "impressions"),
    "conversion": ("purchases", "impressions"),
    "hit_rate": ("hits", "choices"),
}
# The job's counters the dashboard charts per minute (stats hash field names).
OPS_COUNTERS: tuple[str, ...] = ("events", "late_events", "dead_letters")

# (experiment, variant, context)
Group = tuple[str, str, str]
# minute start -> group -> measure -> value
MinuteCounts = Mapping[int, Mapping[Group, Mapping[str, float]]]


def minute_start(ts_ms: int) -> int:
    """The start of the epoch-aligned minute holding ``ts_ms``."""
    return ts_ms - ts_ms % MINUTE_MS


def minute_starts(end_ms: int, minutes: int) -> list[int]:
    """The ``minutes`` minute starts up to and including the minute holding ``end_ms``, oldest first."""
    if minutes < 1:
        raise ValueError(f"minutes must be at least 1, got {minutes}")
    last = minute_start(end_ms)
    return [last - (minutes - 1 - k) * MINUTE_MS for k in range(minutes)]


def rate(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when nothing was counted in the denominator."""
    return numerator / denominator if denominator > 0 else None


def rates_of(counts: Mapping[str, float]) -> dict[str, float | None]:
    """The rates of :data:`RATES` from one group's counts (a missing measure counts 0)."""
    return {name: rate(counts.get(num, 0), counts.get(den, 0)) for name, (num, den) in RATES.items()}


@dataclass
class GroupSeries:
    """One (experiment, variant, context)'s counts and rates, one value per minute of ``minute_starts``."""

    experiment: str
    variant: str
    context: str
    counts: dict[str, list[float]] = field(default_factory=dict)
    rates: dict[str, list[float | None]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    total_rates: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "context": self.context,
            **self.counts,
            **self.rates,
            "totals": {**self.totals, **self.total_rates},
        }


def _number(value: float) -> float:
    """Counts are whole numbers (kept as ints in JSON); revenue may not be."""
    return int(value) if float(value).is_integer() else float(value)


def group_series(counts: MinuteCounts, starts: Sequence[int], experiment: str | None = None, all_contexts: str | None = None) -> list[GroupSeries]:
    """A :class:`GroupSeries` per group counted in any minute of ``starts``, sorted by experiment, variant, context.

    ``experiment`` keeps only that experiment's groups.  With ``all_contexts``
    (a name that is not a context, e.g. ``"*"``), each (experiment, variant)
    also gets a series summed over its contexts under that context name.
    Minutes of ``counts`` outside ``starts`` are ignored.
    """
    index = {start: k for k, start in enumerate(starts)}
    table: dict[Group, dict[str, list[float]]] = {}

    def add(group: Group, k: int, measures: Mapping[str, float]) -> None:
        row = table.get(group)
        if row is None:
            row = table[group] = {m: [0] * len(starts) for m in MEASURES}
        for measure, value in measures.items():
            if measure in row:
                row[measure][k] += value

    for minute, groups in counts.items():
        k = index.get(minute)
        if k is None:
            continue
        for group, measures in groups.items():
            if experiment is not None and group[0] != experiment:
                continue
            add(group, k, measures)
            if all_contexts is not None:
                add((group[0], group[1], all_contexts), k, measures)
    out = []
    for group in sorted(table):
        row = table[group]
        series = GroupSeries(*group)
        series.counts = {m: [_number(v) for v in values] for m, values in row.items()}
        series.rates = {name: [rate(row[num][k], row[den][k]) for k in range(len(starts))] for name, (num, den) in RATES.items()}
        series.totals = {m: _number(sum(values)) for m, values in row.items()}
        series.total_rates = rates_of(series.totals)
        out.append(series)
    return out


def per_second(counts: Sequence[float], starts: Sequence[int], now_ms: int) -> list[float | None]:
    """Per-minute counts as per-second rates.

    A finished minute's count is spread over its 60 s; the minute holding
    ``now_ms`` over the seconds of it that have passed (at least one, so a
    count in the first millisecond is not a division by zero); a minute that
    has not started yet has no rate (``None``).
    """
    out: list[float | None] = []
    for count, start in zip(counts, starts):
        if now_ms >= start + MINUTE_MS:
            out.append(count / (MINUTE_MS / 1000))
        elif now_ms >= start:
            out.append(count / max((now_ms - start) / 1000, 1.0))
        else:
            out.append(None)
    return out


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of ``values``; ``None`` for no values.

    Nearest rank returns a value that was observed (the p99 of 1,000 lags is
    the 990th smallest), which is what a freshness figure should be.
    """
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]
