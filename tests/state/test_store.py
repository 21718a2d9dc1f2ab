"""RedisStore against a real private redis-server; the retry policy with a tiny fake client."""

from __future__ import annotations

import orjson
import pytest
import redis

from state.keys import InvalidKeyPart, KeyKind
from transforms.reasons import UNSTRUCTURED, Reason, because_you
from state.store import STATS_MINUTE_TTL_S, RedisStore, RetryPolicy, ScoredItem, Write, decode_list, encode_list


@pytest.fixture
def store(redis_url):
    s = RedisStore.from_url(redis_url)
    yield s
    s.client.close()


def test_encode_decode_list_round_trip():
    items = [ScoredItem("a", 1.5, because_you("view", "b")), ScoredItem("c", 0.1 + 0.2), ScoredItem("d", 1e-300, None)]
    raw = encode_list(1_700_000_000_123, items, categories={"books": 2.0}, cart=["x"])
    assert orjson.loads(raw) == {
        "v": 2,
        "ts": 1_700_000_000_123,
        "items": [
            {"item": "a", "score": 1.5, "reason": "because you viewed b", "why": {"code": "because_you_viewed", "item": "b"}},
            {"item": "c", "score": 0.1 + 0.2},
            {"item": "d", "score": 1e-300},
        ],
        "categories": {"books": 2.0},
        "cart": ["x"],
    }
    ts, decoded, extra = decode_list(raw)
    assert ts == 1_700_000_000_123 and decoded == items and extra == {"categories": {"books": 2.0}, "cart": ["x"]}
    assert decode_list(raw.decode()) == (ts, items, extra)  # str works too
    assert decode_list(None) == (0, [], {})  # an absent key is an empty list
    assert encode_list(5, items) == encode_list(5, items)  # deterministic bytes


def test_write_set_ttl_and_delete(store, redis_client):
    count = store.write(
        [
            Write(KeyKind.USER_RECS, "u1", b"home", ttl_s=3600),
            Write(KeyKind.ITEM, "i1", b"item"),
            Write(KeyKind.TRENDING_GLOBAL, None, b"trend"),
            Write(KeyKind.PROFILE, "u1", b"profile", ttl_s=0),  # 0 = no expiry
        ]
    )
    assert count == 4
    assert redis_client.get("flowrec:v1:rec:u1") == b"home"
    assert 3590 <= redis_client.ttl("flowrec:v1:rec:u1") <= 3600
    assert redis_client.ttl("flowrec:v1:item:i1") == -1 and redis_client.ttl("flowrec:v1:profile:u1") == -1
    assert redis_client.get("flowrec:v1:trend:global") == b"trend"
    assert store.write([Write(KeyKind.USER_RECS, "u1", None)]) == 1
    assert redis_client.exists("flowrec:v1:rec:u1") == 0
    assert store.write([]) == 0


def test_bad_id_stops_the_whole_batch_before_redis(store, redis_client):
    with pytest.raises(InvalidKeyPart):
        store.write([Write(KeyKind.USER_RECS, "u1", b"x"), Write(KeyKind.USER_RECS, "bad id", b"y")])
    assert redis_client.dbsize() == 0


def test_get_many(store):
    store.write([Write(KeyKind.USER_RECS, "u1", b"a"), Write(KeyKind.ITEM_NEIGHBOURS, "i1", b"b")])
    assert store.get_many([(KeyKind.ITEM_NEIGHBOURS, "i1"), (KeyKind.USER_RECS, "nobody"), (KeyKind.USER_RECS, "u1")]) == [b"b", None, b"a"]
    assert store.get_many([]) == []


def test_delete_user(store, redis_client):
    store.write([Write(k, "u1", b"x") for k in (KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE, KeyKind.LEGACY_CART)] + [Write(KeyKind.USER_RECS, "u2", b"x"), Write(KeyKind.ITEM, "u1", b"x")])
    assert store.delete_user("u1") == 4
    assert sorted(redis_client.keys()) == [b"flowrec:v1:item:u1", b"flowrec:v1:rec:u2"]  # other users and items stay
    assert store.delete_user("u1") == 0


def test_dead_letter_stream(store, redis_client):
    assert store.dead_letter([b'{"reason":"bad_id"}', b'{"reason":"bad_json"}']) == 2
    entries = redis_client.xrange("flowrec:v1:deadletter")
    assert [fields[b"record"] for _, fields in entries] == [b'{"reason":"bad_id"}', b'{"reason":"bad_json"}']
    assert store.dead_letter([]) == 0 and redis_client.xlen("flowrec:v1:deadletter") == 2


def test_add_stats(store, redis_client):
    store.add_stats({"events": 5, "rejected": 0, "windows": 1})
    store.add_stats({"events": 2})
    assert redis_client.hgetall("flowrec:v1:stats") == {b"events": b"7", b"windows": b"1"}  # zero counters skipped
    store.add_stats({"rejected": 0})
    assert redis_client.hgetall("flowrec:v1:stats") == {b"events": b"7", b"windows": b"1"}
    assert redis_client.keys("flowrec:v1:stats:min:*") == []  # no minute given: no minute hash


def test_add_stats_also_counts_per_minute(store, redis_client):
    store.add_stats({"events": 5, "late_events": 1}, minute_ms=1_700_000_040_000)
    store.add_stats({"events": 2, "dead_letters": 0}, minute_ms=1_700_000_040_000)
    store.add_stats({"events": 3}, minute_ms=1_700_000_100_000)
    assert redis_client.hgetall("flowrec:v1:stats") == {b"events": b"10", b"late_events": b"1"}
    assert redis_client.hgetall("flowrec:v1:stats:min:1700000040000") == {b"events": b"7", b"late_events": b"1"}
    assert redis_client.hgetall("flowrec:v1:stats:min:1700000100000") == {b"events": b"3"}
    assert 0 < redis_client.ttl("flowrec:v1:stats:min:1700000040000") <= STATS_MINUTE_TTL_S


def test_record_freshness_is_capped(store, redis_client):
    store.record_freshness([5, 6, 7], keep=4)
    store.record_freshness([8, 9], keep=4)
    store.record_freshness([], keep=4)
    assert redis_client.lrange("flowrec:v1:freshness", 0, -1) == [b"6", b"7", b"8", b"9"]


def test_apply_writes_a_whole_sink_batch(store, redis_client):
    store.apply(
        [Write(KeyKind.ITEM, "i1", b"x", ttl_s=60), Write(KeyKind.ITEM, "i2", b"y")],
        [b'{"reason":"bad_id"}'],
        {"events": 3, "late_events": 0},
        minute_ms=1_700_000_040_000,
        gauges={"last_window_ts": 1200},
        lags_ms=[4, 5],
    )
    assert redis_client.get("flowrec:v1:item:i1") == b"x" and 0 < redis_client.ttl("flowrec:v1:item:i1") <= 60
    assert redis_client.get("flowrec:v1:item:i2") == b"y"
    assert [fields[b"record"] for _, fields in redis_client.xrange("flowrec:v1:deadletter")] == [b'{"reason":"bad_id"}']
    assert redis_client.hgetall("flowrec:v1:stats") == {b"events": b"3", b"last_window_ts": b"1200"}  # zero counters skipped
    assert redis_client.hgetall("flowrec:v1:stats:min:1700000040000") == {b"events": b"3"}
    assert redis_client.lrange("flowrec:v1:freshness", 0, -1) == [b"4", b"5"]
    store.apply()  # nothing to do: no round trip, nothing written
    assert redis_client.hgetall("flowrec:v1:stats") == {b"events": b"3", b"last_window_ts": b"1200"}


def test_namespace(redis_url, redis_client):
    other = RedisStore.from_url(redis_url, namespace="shop2")
    other.write([Write(KeyKind.USER_RECS, "u1", b"x")])
    assert redis_client.keys() == [b"shop2:v1:rec:u1"]
    other.client.close()


# -- the retry policy (pure unit test: a tiny fake client) ---------------------------------


class FlakyClient:
    """A client whose pipelines fail with ``errors`` (one per execute) before succeeding."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.executed: list[list[tuple]] = []

    def pipeline(self, transaction=False):
        return FlakyPipeline(self)


class FlakyPipeline:
    def __init__(self, client):
        self.client = client
        self.commands: list[tuple] = []

    def set(self, key, value, ex=None):
        self.commands.append(("set", key, value, ex))

    def delete(self, key):
        self.commands.append(("delete", key))

    def hincrby(self, key, name, value):
        self.commands.append(("hincrby", key, name, value))

    def xadd(self, key, fields, maxlen=None, approximate=True):
        self.commands.append(("xadd", key, fields["record"]))

    def execute(self):
        if self.client.errors:
            raise self.client.errors.pop(0)
        self.client.executed.append(self.commands)


def make(errors, policy=RetryPolicy()):
    sleeps: list[float] = []
    client = FlakyClient(errors)
    return RedisStore(client, retry=policy, sleep=sleeps.append), client, sleeps


def test_retry_backoff_then_success():
    store, client, sleeps = make([redis.ConnectionError("down")] * 3)
    assert store.write([Write(KeyKind.ITEM, "i1", b"x", ttl_s=10), Write(KeyKind.ITEM, "i2", None)]) == 2
    assert sleeps == [0.05, 0.1, 0.2]  # doubling from first_delay_s
    # The whole batch is sent once, after the failures.
    assert client.executed == [[("set", "flowrec:v1:item:i1", b"x", 10), ("delete", "flowrec:v1:item:i2")]]


def test_retry_delay_is_capped_and_attempts_are_bounded():
    store, client, sleeps = make([redis.ConnectionError("down")] * 10, RetryPolicy(attempts=6, first_delay_s=0.5, max_delay_s=1.0))
    with pytest.raises(redis.ConnectionError):
        store.write([Write(KeyKind.ITEM, "i1", b"x")])
    assert sleeps == [0.5, 1.0, 1.0, 1.0, 1.0]  # 6 attempts, 5 waits
    assert client.executed == [] and len(client.errors) == 4


@pytest.mark.parametrize("error", [redis.TimeoutError("slow"), redis.BusyLoadingError("loading")], ids=["timeout", "loading"])
def test_transient_errors_are_retried(error):
    store, client, sleeps = make([error])
    store.add_stats({"events": 1})
    assert sleeps == [0.05] and client.executed == [[("hincrby", "flowrec:v1:stats", "events", 1)]]


def test_a_sink_batch_is_one_round_trip_retried_whole():
    store, client, sleeps = make([redis.ConnectionError("down")])
    store.apply([Write(KeyKind.ITEM, "i1", b"x")], [b"bad"], {"events": 2})
    assert sleeps == [0.05]
    assert client.executed == [[("set", "flowrec:v1:item:i1", b"x", None), ("xadd", "flowrec:v1:deadletter", b"bad"), ("hincrby", "flowrec:v1:stats", "events", 2)]]


def test_other_errors_are_not_retried():
    store, client, sleeps = make([redis.ResponseError("WRONGTYPE")])
    with pytest.raises(redis.ResponseError):
        store.dead_letter([b"x"])
    assert sleeps == [] and client.executed == []


def test_version_1_values_still_read_and_unknown_versions_are_refused():
    """A list written before reasons had codes reads with its text (code "unstructured")."""
    old = orjson.dumps({"ts": 7, "items": [{"item": "a", "score": 1.0, "reason": "goes with b"}, {"item": "c", "score": 0.5}], "cart": []})
    ts, items, extra = decode_list(old)
    assert (ts, extra) == (7, {"cart": []})
    assert items == [ScoredItem("a", 1.0, Reason(UNSTRUCTURED, text="goes with b")), ScoredItem("c", 0.5)]
    with pytest.raises(ValueError, match="version"):
        decode_list(orjson.dumps({"v": 3, "ts": 7, "items": []}))


def test_read_job_stats(store, redis_client):
    minute = 1_700_000_040_000
    store.add_stats({"events": 7, "dead_letters": 1}, minute_ms=minute)
    store.add_stats({"events": 3}, minute_ms=minute + 120_000)
    store.set_stats({"last_window_ts": minute + 125_000})
    store.record_freshness([40, 50, 60])
    redis_client.rpush("flowrec:v1:freshness", b"not a lag")
    redis_client.hset(f"flowrec:v1:stats:min:{minute}", "odd", b"x")  # not written by the job: skipped
    read = store.read_job_stats([minute, minute + 60_000, minute + 120_000], recent_lags=3)
    assert read.counters == {"events": "10", "dead_letters": "1", "last_window_ts": str(minute + 125_000)}
    assert read.per_minute == {minute: {"events": 7, "dead_letters": 1}, minute + 120_000: {"events": 3}}
    assert read.lags_ms == [50, 60]  # the newest 3 entries, one of them unreadable
    with pytest.raises(ValueError):
        store.read_job_stats([minute], recent_lags=0)


def test_read_job_stats_of_an_empty_store(store):
    read = store.read_job_stats([0, 60_000], recent_lags=100)
    assert (read.counters, read.per_minute, read.lags_ms) == ({}, {}, [])


def test_a_write_of_a_set_key_adds_a_member(store, redis_client):
    store.write([Write(KeyKind.EXPERIMENTS, None, b"e1"), Write(KeyKind.EXPERIMENTS, None, b"e2"), Write(KeyKind.EXPERIMENTS, None, b"e1")])
    assert redis_client.smembers("flowrec:v1:experiments") == {b"e1", b"e2"}
