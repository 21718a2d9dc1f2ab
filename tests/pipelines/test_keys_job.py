"""Issue 16 through the real job (PyFlink mini-cluster, real Redis): what becomes a key, what expires,
and that a forgotten user stays forgotten.  One bounded run, read by several tests."""

from __future__ import annotations

import orjson
import pytest
import redis

from flowrec.config import Settings
from flowrec.localredis import LocalRedis
from pipelines.sources import CollectionSource, pack_chunks
from state.keys import KeyKind, redis_key
from tests.pipelines.jobkit import catalog_lines, differences, event_lines, reference_content, results, run_job
from transforms.events import EventBatch, parse_json_lines
from transforms.synthetic import generate_shop

pytestmark = pytest.mark.flink

SETTINGS = Settings(parallelism=1, restart_attempts=0, item_ttl_s=7 * 24 * 3600)
BAD_CATALOG = [
    orjson.dumps({"item_id": "probe_glob", "category": "bad*cat/x", "ts": 1_700_000_000_000}).decode(),
    orjson.dumps({"item_id": "probe_nl", "category": "line\nbreak", "ts": 1_700_000_000_000}).decode(),
]


def run_shop_job(tail: list[dict], catalog_extra: list[str]) -> dict:
    """The shop, then ``tail`` events in the order given (``{user}`` in a user id: a shop user), on the real job."""
    catalog, stream = generate_shop(users=40, items=50, events=1200, seed=11)
    shop = EventBatch.concat(list(stream))
    t = int(shop.ts.max()) + 1_000
    user, item = str(shop.user[0]), str(shop.item[0])
    tail = [{**r, "user_id": r["user_id"].format(user=user), "item_id": item, "ts": t + r["ts"]} for r in tail]
    lines = event_lines(shop) + [orjson.dumps(r).decode() for r in tail]
    chunks = list(pack_chunks(event_lines(shop), 200)) + [orjson.dumps(r).decode() for r in tail]
    catalog_chunks = list(pack_chunks(catalog_lines(catalog), 20)) + catalog_extra
    with LocalRedis() as server:
        run_job(CollectionSource(chunks, catalog_chunks), SETTINGS, server.url)
        client = redis.Redis.from_url(server.url)
        ttls = {key: client.ttl(key) for key in client.keys("*")}
        dead = [orjson.loads(fields[b"record"]) for _, fields in client.xrange(redis_key(KeyKind.DEAD_LETTER))]
        job = results(server.url)
        client.close()
    events = parse_json_lines(lines).events
    return {"job": job, "ttls": ttls, "dead": dead, "user": user, "events": events, "catalog": catalog}


def keys_of(job: dict[bytes, bytes], user: str) -> list[bytes]:
    return [k for k in job if k.endswith(b":" + user.encode())]


@pytest.fixture(scope="module")
def run():
    """In event-time order: a forget at T, then the same user's view stamped T + 240 s (within the 5 min skew)."""
    tail = [
        {"user_id": "{user}", "event_type": "forget", "ts": 0},
        {"user_id": "{user}", "event_type": "view", "ts": 240_000},
        {"user_id": "someone_else", "event_type": "click", "ts": 241_000},
    ]
    out = run_shop_job(tail, BAD_CATALOG)
    out["reference"] = reference_content(out["events"], out["catalog"], SETTINGS)
    return out


def test_catalog_categories_that_cannot_be_keys_are_dead_lettered(run):
    """Before: the job accepted them (item:probe_glob was written; once trending, the category's key would fail the sink)."""
    assert sorted(d["reason"] for d in run["dead"]) == ["bad_category", "bad_category"]
    assert not [k for k in run["job"] if b"probe_" in k or b"bad" in k]
    assert any(b":trend:cat:" in k for k in run["job"])


def test_content_lists_expire_like_the_other_item_lists(run):
    content = {k: ttl for k, ttl in run["ttls"].items() if b":content:" in k}
    neighbours = {k: ttl for k, ttl in run["ttls"].items() if b":sim:" in k}
    assert content and neighbours
    assert all(0 < ttl <= SETTINGS.item_ttl_s for ttl in [*content.values(), *neighbours.values()])
    assert all(ttl == -1 for k, ttl in run["ttls"].items() if b":item:" in k or b":trend:" in k)


def test_a_forget_wins_over_the_users_events_up_to_the_clock_skew(run):
    """Before: the view stamped 240 s after the forget recreated rec: and profile: (engine and job alike)."""
    assert keys_of(run["job"], run["user"]) == []
    assert keys_of(run["reference"], run["user"]) == []
    assert keys_of(run["job"], "someone_else")


def test_a_forget_wins_over_a_view_stamped_ahead_and_sent_before_it():
    """Arrival order as in issue 16: the view (stamped T + 240 s) reaches the job before the forget (T).
    Before: the view's window closed after the forget's and wrote the user's rec: and profile: again."""
    tail = [
        {"user_id": "{user}", "event_type": "view", "ts": 240_000},
        {"user_id": "{user}", "event_type": "forget", "ts": 0},
        {"user_id": "{user}", "event_type": "view", "ts": 200_000},  # a straggler, also before forget + skew
    ]
    out = run_shop_job(tail, [])
    assert keys_of(out["job"], out["user"]) == []
    assert any(b":rec:" in k for k in out["job"])


def test_keys_are_named_by_what_they_hold_and_reasons_are_structured(run):
    job = run["job"]
    assert not [k for k in job if b":cart:" in k]
    complements = [orjson.loads(v) for k, v in job.items() if b":complements:" in k]
    assert complements, "no user had a cart"
    entries = [e for value in complements for e in value["items"]]
    assert all(value["v"] == 2 for value in complements)
    assert all(e["why"]["code"] == "goes_with" and e["reason"] == f"goes with {e['why']['item']} in your cart" for e in entries)
    home = [e for k, v in job.items() if b":rec:" in k for e in orjson.loads(v)["items"]]
    assert {e["why"]["code"] for e in home} >= {"because_you_viewed", "popular_now"}


def test_job_still_equals_the_reference_engine(run):
    assert differences(run["job"], run["reference"]) == []
