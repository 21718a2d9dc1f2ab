"""The dashboard's arithmetic: minute alignment, series per group with their rates, per-second rates, percentiles."""

from __future__ import annotations

import pytest

from state.metrics import ALL_MEASURES
from transforms.livemetrics import MEASURES, MINUTE_MS, group_series, minute_start, minute_starts, per_second, percentile, rate, rates_of

M = 1_700_000_040_000  # a minute start


def test_measures_are_the_metric_layouts():
    assert MEASURES == ALL_MEASURES


def test_minutes_are_epoch_aligned_and_end_with_the_minute_of_end():
    assert minute_start(M) == M and minute_start(M + 59_999) == M and minute_start(M - 1) == M - MINUTE_MS
    assert minute_starts(M + 30_000, 3) == [M - 2 * MINUTE_MS, M - MINUTE_MS, M]
    assert minute_starts(M, 1) == [M]
    with pytest.raises(ValueError):
        minute_starts(M, 0)


def test_rates_are_none_without_a_denominator():
    assert rate(3, 4) == 0.75 and rate(0, 4) == 0.0 and rate(2, 0) is None
    assert rates_of({"impressions": 10, "clicks": 2, "purchases": 1, "choices": 4, "hits": 3}) == {"ctr": 0.2, "conversion": 0.1, "hit_rate": 0.75}
    assert rates_of({}) == {"ctr": None, "conversion": None, "hit_rate": None}


def test_group_series_per_minute_with_sums_over_contexts():
    counts = {
        M: {("e", "A", "home"): {"impressions": 10, "clicks": 1}, ("e", "B", "home"): {"impressions": 5}},
        M + MINUTE_MS: {("e", "A", "home"): {"impressions": 10, "clicks": 3, "revenue": 12.5}, ("e", "A", "cart"): {"impressions": 10, "clicks": 1, "purchases": 2}},
        M - 10 * MINUTE_MS: {("e", "A", "home"): {"impressions": 99}},  # outside the minutes asked for
        M + 2 * MINUTE_MS: {("x", "A", "home"): {"impressions": 7}},
    }
    starts = [M, M + MINUTE_MS, M + 2 * MINUTE_MS]
    series = {(s.experiment, s.variant, s.context): s for s in group_series(counts, starts, experiment="e", all_contexts="all")}
    assert sorted(series) == [("e", "A", "all"), ("e", "A", "cart"), ("e", "A", "home"), ("e", "B", "all"), ("e", "B", "home")]
    home = series["e", "A", "home"]
    assert home.counts["impressions"] == [10, 10, 0] and home.counts["clicks"] == [1, 3, 0]
    assert home.rates["ctr"] == [0.1, 0.3, None]
    assert home.counts["revenue"] == [0, 12.5, 0]
    assert home.totals["impressions"] == 20 and home.total_rates["ctr"] == 0.2
    both = series["e", "A", "all"]
    assert both.counts["impressions"] == [10, 20, 0] and both.rates["ctr"] == [0.1, 0.2, None]
    assert both.rates["conversion"] == [0.0, 0.1, None]
    assert both.total_rates == {"ctr": 5 / 30, "conversion": 2 / 30, "hit_rate": None}
    assert series["e", "B", "home"].rates["ctr"] == [0.0, None, None]
    as_json = home.to_dict()
    assert as_json["experiment"] == "e" and as_json["ctr"] == [0.1, 0.3, None] and as_json["totals"]["ctr"] == 0.2
    assert type(as_json["impressions"][0]) is int  # counts stay whole numbers in JSON
    everything = group_series(counts, starts)
    assert [(s.experiment, s.variant, s.context) for s in everything] == [("e", "A", "cart"), ("e", "A", "home"), ("e", "B", "home"), ("x", "A", "home")]


def test_no_counts_no_series():
    assert group_series({}, [M], all_contexts="all") == []


def test_per_second_over_finished_and_current_minutes():
    starts = [M, M + MINUTE_MS, M + 2 * MINUTE_MS]
    now = M + MINUTE_MS + 20_000  # 20 s into the second minute
    assert per_second([600, 200, 0], starts, now) == [10.0, 10.0, None]
    assert per_second([0, 5, 0], starts, M + MINUTE_MS) == [0.0, 5.0, None]  # at least one second passed
    assert per_second([60], [M], M + MINUTE_MS) == [1.0]


def test_nearest_rank_percentiles():
    lags = list(range(1, 1001))
    assert percentile(lags, 50) == 500 and percentile(lags, 99) == 990 and percentile(lags, 100) == 1000
    assert percentile([7], 99) == 7 and percentile([], 50) is None
    assert percentile([30, 10, 20], 50) == 20
    with pytest.raises(ValueError):
        percentile(lags, 0)
