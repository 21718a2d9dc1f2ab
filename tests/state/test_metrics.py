"""The metrics hash layout (fields built and parsed in one place) and its readers against a real redis-server."""

from __future__ import annotations

import pytest

from state.keys import KeyKind
from state.metrics import (
    ALL_POSITIONS,
    DAYS,
    EXPERIMENTS,
    MINUTES,
    MAX_READ_MINUTES,
    MINUTE_TTL_S,
    BadMetricField,
    RunningTotals,
    ads_field,
    day_start,
    experiment_field,
    format_value,
    metric_field,
    minute_start,
    parse_ads_field,
    parse_experiment_field,
    parse_metric_field,
    read_ads_day,
    read_all_experiment_totals,
    read_experiment_names,
    read_experiment_totals,
    read_minute_sums,
    read_minutes,
)
from state.store import HashWrite, RedisStore

T0 = 1_700_000_040_000  # the start of a minute


def test_minute_field_round_trip():
    assert metric_field("exp1", "control", "home", 3, "clicks") == "exp1|control|home|3|clicks"
    assert metric_field("~", "~", "ads", ALL_POSITIONS, "hits") == "~|~|ads|all|hits"
    assert parse_metric_field("exp1|control|home|3|clicks") == ("exp1", "control", "home", 3, "clicks")
    assert parse_metric_field(b"~|~|ads|all|hits") == ("~", "~", "ads", "all", "hits")
    assert parse_metric_field(metric_field("e", "v", "cart", 0, "revenue")) == ("e", "v", "cart", 0, "revenue")


@pytest.mark.parametrize(
    "args",
    [
        ("e", "v", "home", 2, "choices"),  # HR measures only over all positions
        ("e", "v", "home", -1, "clicks"),
        ("e", "v", "home", True, "clicks"),
        ("e", "v", "home", "2", "clicks"),
        ("e", "v", "home", 2, "views"),
        ("e|x", "v", "home", 2, "clicks"),
        ("e", "", "home", 2, "clicks"),
    ],
    ids=repr,
)
def test_bad_minute_fields_are_refused(args):
    with pytest.raises(BadMetricField):
        metric_field(*args)


@pytest.mark.parametrize("field", ["e|v|home|2", "e|v|home|x|clicks", "e|v|home|2|hits", "e|v|home|2|clicks|x", "e|v|home|-1|clicks", "e|v|home|２|clicks"])
def test_bad_minute_fields_do_not_parse(field):
    with pytest.raises(BadMetricField):
        parse_metric_field(field)


def test_experiment_and_ads_fields_round_trip():
    assert experiment_field("treatment", "all", "revenue") == "treatment|all|revenue"
    assert parse_experiment_field(b"treatment|home|hits") == ("treatment", "home", "hits")
    assert ads_field("sku:1", "impressions") == "sku:1|impressions"
    assert parse_ads_field("sku:1|clicks") == ("sku:1", "clicks")
    for bad in ("v|home", "v|home|views", "v||clicks"):
        with pytest.raises(BadMetricField):
            parse_experiment_field(bad)
    with pytest.raises(BadMetricField):
        parse_ads_field("no-separator")


def test_periods_and_values():
    assert minute_start(T0 + 59_999) == T0 and minute_start(T0 + 60_000) == T0 + 60_000
    assert day_start(T0) == T0 - T0 % 86_400_000
    assert format_value(3) == "3" and format_value(3.0) == "3" and format_value(0.1 + 0.2) == repr(0.1 + 0.2)


@pytest.fixture
def store(redis_url):
    s = RedisStore.from_url(redis_url, namespace="shop")
    yield s
    s.client.close()


def test_read_minutes_and_totals_from_hash_writes(store, redis_client):
    store.write(
        [
            HashWrite(KeyKind.METRICS_MINUTE, str(T0), {metric_field("e", "a", "home", 0, "impressions"): "4", metric_field("e", "a", "home", ALL_POSITIONS, "revenue"): format_value(12.5)}, MINUTE_TTL_S),
            HashWrite(KeyKind.METRICS_MINUTE, str(T0 + 120_000), {metric_field("~", "~", "ads", 1, "clicks"): "1"}, MINUTE_TTL_S),
            HashWrite(KeyKind.METRICS_EXPERIMENT, "e", {experiment_field("a", "all", "clicks"): "7", experiment_field("b", "home", "hits"): "2"}),
            HashWrite(KeyKind.METRICS_ADS, str(day_start(T0)), {ads_field("sku1", "impressions"): "9"}, 3 * 24 * 3600),
        ]
    )
    assert MINUTE_TTL_S - 10 <= redis_client.ttl(f"shop:v1:metrics:min:{T0}") <= MINUTE_TTL_S
    assert redis_client.ttl("shop:v1:metrics:exp:e") == -1
    minutes = read_minutes(redis_client, "shop", T0 + 5, T0 + 180_000)  # start inside the first minute
    assert minutes == {
        T0: {("e", "a", "home", 0, "impressions"): 4.0, ("e", "a", "home", "all", "revenue"): 12.5},
        T0 + 120_000: {("~", "~", "ads", 1, "clicks"): 1.0},
    }
    assert read_minutes(redis_client, "shop", T0 + 60_000, T0 + 120_000) == {}  # the end is exclusive
    assert read_minutes(redis_client, "flowrec", T0, T0 + 180_000) == {}  # another namespace
    assert read_experiment_totals(redis_client, "shop", "e") == {("a", "all", "clicks"): 7.0, ("b", "home", "hits"): 2.0}
    assert read_experiment_totals(redis_client, "shop", "nobody") == {}
    assert read_ads_day(redis_client, "shop", T0) == {("sku1", "impressions"): 9.0}
    assert read_experiment_names(redis_client, "shop") == [] and read_all_experiment_totals(redis_client, "shop") == {}
    store.write([HashWrite(KeyKind.METRICS_EXPERIMENTS, None, {"e": "1", "~": "1"})])
    assert read_experiment_names(redis_client, "shop") == ["e", "~"]
    assert read_all_experiment_totals(redis_client, "shop") == {"e": read_experiment_totals(redis_client, "shop", "e"), "~": {}}


def test_hash_writes_are_absolute_so_replays_are_idempotent(store, redis_client):
    write = HashWrite(KeyKind.METRICS_EXPERIMENT, "e", {experiment_field("a", "home", "clicks"): "3"})
    store.write([write])
    store.write([write])
    assert read_experiment_totals(redis_client, "shop", "e") == {("a", "home", "clicks"): 3.0}


def test_foreign_fields_are_skipped_not_fatal(redis_client):
    redis_client.hset(f"shop:v1:metrics:min:{T0}", mapping={"junk": "1", "e|a|home|0|clicks": "2", "e|a|home|1|clicks": "not-a-number"})
    assert read_minutes(redis_client, "shop", T0, T0 + 60_000) == {T0: {("e", "a", "home", 0, "clicks"): 2.0}}


def test_read_minutes_refuses_huge_ranges(redis_client):
    with pytest.raises(ValueError, match="at most"):
        read_minutes(redis_client, "shop", T0, T0 + (MAX_READ_MINUTES + 1) * 60_000)
    assert read_minutes(redis_client, "shop", T0, T0) == {}


# -- running totals ------------------------------------------------------------------------

HOUR = 3_600_000
DAY0 = T0 - T0 % 86_400_000


def test_running_totals_sum_and_write_absolute_values():
    totals = RunningTotals(lambda kind, part: {}, horizon_ms=HOUR)
    first = totals.add({(T0, "e", "a", "home", 0, "clicks"): 1, (T0, "e", "a", "home", "all", "clicks"): 1}, {(DAY0, "sku1", "clicks"): 1}, watermark=T0)
    assert first.changed == {
        MINUTES: {str(T0): {"e|a|home|0|clicks": 1, "e|a|home|all|clicks": 1}},
        DAYS: {str(DAY0): {"sku1|clicks": 1}},
        EXPERIMENTS: {"e": {"a|home|clicks": 1, "a|all|clicks": 1}},
    }
    second = totals.add({(T0, "e", "a", "cart", "all", "revenue"): 2.5, (T0, "e", "a", "cart", 1, "revenue"): 2.5}, {}, watermark=T0 + 1)
    assert second.changed[EXPERIMENTS] == {"e": {"a|cart|revenue": 2.5, "a|all|revenue": 2.5}}  # only what changed, as totals
    third = totals.add({(T0, "e", "a", "home", "all", "clicks"): 2}, {}, watermark=T0 + 2)
    assert third.changed[MINUTES] == {str(T0): {"e|a|home|all|clicks": 3}}
    assert third.changed[EXPERIMENTS] == {"e": {"a|home|clicks": 3, "a|all|clicks": 3}}
    kinds = {(w.kind, w.part): (dict(w.fields), w.ttl_s) for w in third.writes()}
    assert kinds == {
        (KeyKind.METRICS_MINUTE, str(T0)): ({"e|a|home|all|clicks": "3"}, MINUTE_TTL_S),
        (KeyKind.METRICS_EXPERIMENT, "e"): ({"a|home|clicks": "3", "a|all|clicks": "3"}, None),
        (KeyKind.METRICS_EXPERIMENTS, None): ({"e": "1"}, None),
    }


def test_running_totals_continue_from_what_was_stored():
    stored = {(MINUTES, str(T0)): {"e|a|home|all|clicks": 5.0}, (EXPERIMENTS, "e"): {"a|home|clicks": 5.0, "a|all|clicks": 5.0}}
    totals = RunningTotals(lambda kind, part: stored.get((kind, part), {}), horizon_ms=HOUR)
    update = totals.add({(T0, "e", "a", "home", "all", "clicks"): 1}, {}, watermark=T0)
    assert update.changed[MINUTES] == {str(T0): {"e|a|home|all|clicks": 6.0}}
    assert update.changed[EXPERIMENTS]["e"]["a|all|clicks"] == 6.0
    assert stored[(MINUTES, str(T0))] == {"e|a|home|all|clicks": 5.0}  # the loader's dict is not changed behind its back


def test_counts_past_the_horizon_reach_only_the_experiment_totals():
    totals = RunningTotals(lambda kind, part: {}, horizon_ms=HOUR)
    open_until = T0 + 60_000 + HOUR  # the minute's end plus the horizon
    update = totals.add({(T0, "e", "a", "home", 0, "impressions"): 1, (T0, "e", "a", "home", "all", "impressions"): 1}, {(DAY0, "sku1", "impressions"): 1}, watermark=open_until)
    assert update.too_late == 2 and update.changed[MINUTES] == {} and update.changed[DAYS] == {str(DAY0): {"sku1|impressions": 1}}
    assert update.changed[EXPERIMENTS] == {"e": {"a|home|impressions": 1, "a|all|impressions": 1}}
    assert totals.add({(T0, "e", "a", "home", 0, "impressions"): 1}, {}, watermark=open_until - 1).too_late == 0
    late_day = totals.add({}, {(DAY0, "sku1", "clicks"): 1}, watermark=DAY0 + 86_400_000 + HOUR)
    assert late_day.too_late == 1 and late_day.changed[DAYS] == {}


def test_expired_parts_leave_the_cache():
    totals = RunningTotals(lambda kind, part: {}, horizon_ms=HOUR)
    totals.add({(T0, "e", "a", "home", "all", "clicks"): 1, (T0 + HOUR, "e", "a", "home", "all", "clicks"): 1}, {}, watermark=T0)
    assert totals.expired(MINUTES, [str(T0), str(T0 + HOUR)], watermark=T0 + 60_000 + HOUR) == [str(T0)]
    assert (MINUTES, str(T0)) not in totals.cache and (MINUTES, str(T0 + HOUR)) in totals.cache

def test_read_minute_sums_keeps_only_the_rows_summed_over_positions(redis_client):
    minute = 1_700_000_040_000
    redis_client.hset(f"flowrec:v1:metrics:min:{minute}", mapping={
        metric_field("e", "A", "home", ALL_POSITIONS, "impressions"): 30,
        metric_field("e", "A", "home", ALL_POSITIONS, "revenue"): "12.5",
        metric_field("e", "A", "home", 0, "impressions"): 20,
        metric_field("e", "all", "home", 3, "clicks"): 9,  # a variant named "all": its per-position row still left out
        metric_field("e", "all", "home", ALL_POSITIONS, "clicks"): 4,
        "not|a|field": 1,
        metric_field("e", "A", "cart", ALL_POSITIONS, "hits"): "x",  # unreadable value
    })
    redis_client.hset(f"flowrec:v1:metrics:min:{minute + 60_000}", mapping={metric_field("~", "~", "cart", ALL_POSITIONS, "choices"): 2})
    redis_client.hset(f"flowrec:v1:metrics:min:{minute + 120_000}", mapping={metric_field("~", "~", "cart", ALL_POSITIONS, "choices"): 5})
    got = read_minute_sums(redis_client, "flowrec", minute + 1, minute + 120_000)
    assert got == {
        minute: {("e", "A", "home"): {"impressions": 30.0, "revenue": 12.5}, ("e", "all", "home"): {"clicks": 4.0}},
        minute + 60_000: {("~", "~", "cart"): {"choices": 2.0}},
    }
    assert read_minute_sums(redis_client, "flowrec", minute, minute) == {}
    with pytest.raises(ValueError):
        read_minute_sums(redis_client, "flowrec", 0, (MAX_READ_MINUTES + 1) * 60_000)


def test_read_minute_sums_of_a_hash_larger_than_one_scan(redis_client, monkeypatch):
    import state.metrics

    monkeypatch.setattr(state.metrics, "_SCAN_COUNT", 10)
    minute = 1_700_000_040_000
    rows = {metric_field("e", f"v{k}", "home", ALL_POSITIONS, "impressions"): k for k in range(300)}
    rows.update({metric_field("e", f"v{k}", "home", 1, "impressions"): k for k in range(300)})
    redis_client.hset(f"flowrec:v1:metrics:min:{minute}", mapping=rows)
    got = read_minute_sums(redis_client, "flowrec", minute, minute + 60_000)
    assert got[minute] == {("e", f"v{k}", "home"): {"impressions": float(k)} for k in range(300)}


def test_read_minute_sums_over_several_round_trips(redis_client, monkeypatch):
    import state.metrics

    monkeypatch.setattr(state.metrics, "_SCAN_BATCH", 2)
    minute = 1_700_000_040_000
    for k in range(5):
        redis_client.hset(f"flowrec:v1:metrics:min:{minute + k * 60_000}", mapping={metric_field("e", "A", "home", ALL_POSITIONS, "clicks"): k + 1})
    got = read_minute_sums(redis_client, "flowrec", minute, minute + 5 * 60_000)
    assert got == {minute + k * 60_000: {("e", "A", "home"): {"clicks": float(k + 1)}} for k in range(5)}
