"""Write endpoints: auth, validation with the job's rules, spool files for the job, forgetting a user."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from api.ingest import MAX_FUTURE_MS, spool_lines, validate_events
from pipelines.spoolfiles import end_marker
from flowrec.config import Settings
from state.keys import KeyKind
from transforms.catalog import CatalogItem
from transforms.events import parse_json_lines

from .conftest import API_KEY, NOW_MS, assert_problem, put_list

SPOOL_NAME = re.compile(r"^(events|catalog)-(\d+)-([0-9a-f]{32})\.jsonl$")


def spool_files(spool_dir, kind: str = "events") -> list:
    """Final spool files of one kind (in the kind's subfolder), oldest first; fails if a temporary file was left behind."""
    folder = spool_dir / kind
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert not [n for n in names if n.startswith(".")], names
    return [folder / n for n in names if n.startswith(kind + "-")]


def lines(path) -> list[dict]:
    """Records of a spool file: a line holds one record or a JSON array of them; the last line is the end marker."""
    out = []
    *records, marker = path.read_bytes().splitlines()
    assert marker + b"\n" == end_marker(path.name)
    for line in records:
        record = orjson.loads(line)
        out.extend(record if isinstance(record, list) else [record])
    return out


# -- auth -------------------------------------------------------------------------------


WRITES = [
    ("POST", "/v1/events", {"user_id": "u1", "item_id": "i1", "event_type": "click"}),
    ("POST", "/v1/items", {"item_id": "i1"}),
    ("DELETE", "/v1/users/u1", None),
]


@pytest.mark.parametrize("method,path,body", WRITES)
def test_writes_need_a_key(api, spool_dir, method, path, body):
    kwargs = {"json": body} if body is not None else {}
    missing = api.request(method, path, **kwargs)
    assert_problem(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_problem(api.request(method, path, headers={"Authorization": "Bearer wrong-key"}, **kwargs), 401, "unauthorized")
    assert_problem(api.request(method, path, headers={"Authorization": f"Bearer {API_KEY}x"}, **kwargs), 401, "unauthorized")
    assert_problem(api.request(method, path, headers={"Authorization": f"Basic {API_KEY}"}, **kwargs), 401, "unauthorized")
    assert_problem(api.request(method, path, headers={"Authorization": "Bearer"}, **kwargs), 401, "unauthorized")
    assert list(spool_dir.rglob("*")) == []


@pytest.mark.parametrize("method,path,body", WRITES)
def test_writes_are_refused_when_no_key_is_configured(serve, redis_url, spool_dir, method, path, body):
    with httpx.Client(base_url=serve(Settings(redis_url=redis_url, spool_dir=spool_dir))) as client:
        kwargs = {"json": body} if body is not None else {}
        doc = assert_problem(client.request(method, path, headers={"Authorization": "Bearer anything"}, **kwargs), 503, "writes-disabled")
        assert "FLOWREC_API_KEYS" in doc["detail"]
    assert list(spool_dir.rglob("*")) == []


def test_writes_are_refused_without_a_spool_dir(serve, redis_url, auth):
    with httpx.Client(base_url=serve(Settings(redis_url=redis_url, api_keys=(API_KEY,)))) as client:
        doc = assert_problem(client.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event_type": "click"}, headers=auth), 503, "ingest-not-configured")
        assert "FLOWREC_SPOOL_DIR" in doc["detail"]


def test_any_configured_key_works_and_the_demo_key_too(serve, redis_url, spool_dir):
    settings = Settings(redis_url=redis_url, spool_dir=spool_dir, api_keys=("first", "second"))
    with httpx.Client(base_url=serve(settings, demo_key="demo")) as client:
        for key in ("first", "second", "demo"):
            response = client.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event_type": "click"}, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 202, response.text


# -- events -----------------------------------------------------------------------------


def test_events_batch_is_validated_and_spooled(api, auth, spool_dir):
    batch = [
        {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": NOW_MS - 10},
        {"user_id": "u1", "item_id": "i*", "event_type": "view", "ts": NOW_MS},
        {"user_id": 42, "item_id": "i2", "event_type": "add_to_cart", "ts": NOW_MS - 5, "quantity": 2, "price": 9.5, "session_id": "s1"},
        {"user_id": "u2", "item_id": "i3", "event_type": "teleport", "ts": NOW_MS},
        {"user_id": "u2", "item_id": "i3", "event_type": "purchase"},  # no ts: stamped with the server clock
        "not an object",
        {"user_id": "u3", "item_id": "i4", "event_type": "click", "ts": NOW_MS + MAX_FUTURE_MS + 1},
    ]
    response = api.post("/v1/events", json=batch, headers=auth)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "accepted": 3,
        "rejected": 4,
        "rejections": [
            {"index": 1, "reason": "bad_id", "detail": "item_id must be 1-128 chars of [A-Za-z0-9_.:@-]"},
            {"index": 3, "reason": "unknown_event_type", "detail": "event_type must be one of view, click, add_to_cart, remove_from_cart, favorite, purchase, rating, forget, impression"},
            {"index": 5, "reason": "not_an_object", "detail": "an event must be a JSON object"},
            {"index": 6, "reason": "timestamp_in_future", "detail": "ts must be at most 300 s ahead of the server clock"},
        ],
    }
    [spooled] = spool_files(spool_dir)
    kind, ms, _ = SPOOL_NAME.match(spooled.name).groups()
    assert (kind, int(ms)) == ("events", NOW_MS)
    assert lines(spooled) == [
        {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": NOW_MS - 10},
        {"user_id": "42", "item_id": "i2", "event_type": "add_to_cart", "ts": NOW_MS - 5, "session_id": "s1", "quantity": 2, "price": 9.5},
        {"user_id": "u2", "item_id": "i3", "event_type": "purchase", "ts": NOW_MS},
    ]


def test_impressions_count_as_one_record_each_and_rejections_keep_request_indexes(api, auth, spool_dir):
    """An impression is one record to the client (accepted counts records) and one row per shown item in the spool."""
    rec = "r1.~.~.home.0.0123abcd.0123456789abcdef"
    batch = [
        {"user_id": "u1", "event_type": "impression", "rec_id": rec, "items": ["i1", "i2", "i3"], "ts": NOW_MS - 30},
        {"user_id": "u1", "event_type": "impression", "items": ["i1"], "ts": NOW_MS},  # no rec_id
        {"user_id": "u1", "event_type": "impression", "rec_id": rec, "items": ["i4", "i5"], "positions": [3, 4], "ts": NOW_MS + MAX_FUTURE_MS + 1},
        {"user_id": "u1", "item_id": "i2", "event_type": "click", "rec_id": rec, "position": 1, "ts": NOW_MS - 20},
        {"user_id": "u1", "event_type": "impression", "rec_id": rec, "items": ["i6", "i7"], "positions": [5, 6], "ts": NOW_MS - 10},
        {"user_id": "u1", "item_id": "i6", "event_type": "purchase", "rec_id": "not a rec id", "ts": NOW_MS},
    ]
    response = api.post("/v1/events", json=batch, headers=auth)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 3)
    assert [(r["index"], r["reason"]) for r in body["rejections"]] == [(1, "missing_field"), (2, "timestamp_in_future"), (5, "bad_rec_id")]
    [spooled] = spool_files(spool_dir)
    assert lines(spooled) == [
        {"user_id": "u1", "item_id": "i1", "event_type": "impression", "ts": NOW_MS - 30, "rec_id": rec, "position": 0},
        {"user_id": "u1", "item_id": "i2", "event_type": "impression", "ts": NOW_MS - 30, "rec_id": rec, "position": 1},
        {"user_id": "u1", "item_id": "i3", "event_type": "impression", "ts": NOW_MS - 30, "rec_id": rec, "position": 2},
        {"user_id": "u1", "item_id": "i2", "event_type": "click", "ts": NOW_MS - 20, "rec_id": rec, "position": 1},
        {"user_id": "u1", "item_id": "i6", "event_type": "impression", "ts": NOW_MS - 10, "rec_id": rec, "position": 5},
        {"user_id": "u1", "item_id": "i7", "event_type": "impression", "ts": NOW_MS - 10, "rec_id": rec, "position": 6},
    ]


def test_spool_lines_split_many_impression_rows_and_the_job_reads_them_back():
    """Rows beyond a line's share go on further lines, each a JSON array the job parses (nothing lost or repeated)."""
    rec = "r1.~.~.home.0.0123abcd.0123456789abcdef"
    records = [{"user_id": f"u{k}", "event_type": "impression", "rec_id": rec, "items": [f"i{j}" for j in range(7)], "ts": NOW_MS} for k in range(10)]
    checked = validate_events(records, NOW_MS)
    assert checked.accepted == 10 and len(checked.batch) == 70
    out = spool_lines(checked.batch, rows_per_line=30)
    assert [len(orjson.loads(line)) for line in out] == [30, 30, 10]
    again = parse_json_lines(out)
    assert again.rejections == [] and again.events.to_records() == checked.batch.to_records()


def test_each_request_is_its_own_spool_file(api, auth, spool_dir, clock):
    api.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event_type": "click"}, headers=auth)
    clock.now_ms = NOW_MS + 1
    api.post("/v1/events", json={"user_id": "u1", "item_id": "i2", "event_type": "click"}, headers=auth)
    files = spool_files(spool_dir)
    assert [int(SPOOL_NAME.match(f.name).group(2)) for f in files] == [NOW_MS, NOW_MS + 1]
    assert [lines(f)[0]["item_id"] for f in files] == ["i1", "i2"]


def test_a_batch_with_nothing_valid_is_422_and_not_spooled(api, auth, spool_dir):
    doc = assert_problem(api.post("/v1/events", json=[{"user_id": "u1"}, {"event_type": "click"}], headers=auth), 422, "no-records-accepted")
    assert doc["accepted"] == 0 and doc["rejected"] == 2
    assert [r["reason"] for r in doc["rejections"]] == ["missing_field", "missing_field"]
    assert spool_files(spool_dir) == []


@pytest.mark.parametrize(
    "content,status,slug",
    [
        (b"", 400, "empty-body"),
        (b"{not json", 400, "bad-json"),
        (b"\xff\xfe\x00", 400, "bad-json"),
        (b"[" * 5000 + b"]" * 5000, 400, "bad-json"),
        (b"42", 422, "validation"),
        (b'"text"', 422, "validation"),
        (b"[]", 422, "validation"),
        (b"null", 422, "validation"),
    ],
)
def test_malformed_bodies(api, auth, spool_dir, content, status, slug):
    assert_problem(api.post("/v1/events", content=content, headers={**auth, "Content-Type": "application/json"}), status, slug)
    assert spool_files(spool_dir) == []


def test_oversized_bodies_are_413(api, auth, spool_dir):
    big = b"[" + b",".join([b'{"user_id":"u1","item_id":"i1","event_type":"click"}'] * 25_000) + b"]"
    assert len(big) > 1 << 20
    assert_problem(api.post("/v1/events", content=big, headers={**auth, "Content-Type": "application/json"}), 413, "body-too-large")

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b" " * 65_536

    assert_problem(api.post("/v1/events", content=chunks(), headers={**auth, "Content-Type": "application/json"}), 413, "body-too-large")
    assert spool_files(spool_dir) == []
    # The server is fine afterwards.
    assert api.post("/v1/events", json={"user_id": "u1", "item_id": "i1", "event_type": "click"}, headers=auth).status_code == 202


def test_the_body_limit_is_configurable(serve, auth):
    with httpx.Client(base_url=serve(max_body_bytes=100)) as client:
        small = {"user_id": "u1", "item_id": "i1", "event_type": "click"}
        assert client.post("/v1/events", json=small, headers=auth).status_code == 202
        assert_problem(client.post("/v1/events", json=[small] * 3, headers=auth), 413, "body-too-large")


# -- catalog upserts --------------------------------------------------------------------


def test_item_upsert_is_visible_at_once_and_spooled(api, auth, spool_dir, redis_client):
    response = api.post("/v1/items", json=[{"item_id": "n1", "title": "New shoe", "category": "fashion/shoes", "price": 59.0, "tags": ["red"]}, {"item_id": "bad*"}], headers=auth)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "rejected": 1, "rejections": [{"index": 1, "reason": "bad_id", "detail": "item_id must be 1-128 chars of [A-Za-z0-9_.:@-]"}]}
    expected = CatalogItem("n1", title="New shoe", category="fashion/shoes", price=59.0, tags=("red",), ts=NOW_MS)
    assert api.get("/v1/items/n1").content == expected.to_json()
    [spooled] = spool_files(spool_dir, "catalog")
    assert spooled.read_bytes() == expected.to_json() + b"\n" + end_marker(spooled.name)
    assert spool_files(spool_dir, "events") == []
    assert api.get("/v1/catalog", params={"category": "fashion"}).json()["items"] == [orjson.loads(expected.to_json())]


def test_item_upserts_the_job_could_not_read_are_rejected(api, auth, spool_dir):
    response = api.post(
        "/v1/items",
        json=[
            {"item_id": "a", "created_at": 1e20},  # passes the catalog rules but is no 64-bit integer
            {"item_id": "b", "ts": 4_102_444_800_001},
            {"item_id": "c", "tags": ["t" * 9000, "u" * 9000]},  # tags over the catalog's 64-char limit
            {"item_id": "d", "title": "fine"},
        ],
        headers=auth,
    )
    assert response.status_code == 202, response.text
    assert [(r["index"], r["reason"]) for r in response.json()["rejections"]] == [(0, "timestamp_out_of_range"), (1, "timestamp_out_of_range"), (2, "bad_field")]
    [spooled] = spool_files(spool_dir, "catalog")
    assert [line["item_id"] for line in lines(spooled)] == ["d"]


# -- forgetting a user ------------------------------------------------------------------


def test_delete_user_removes_keys_now_and_tells_the_job(api, auth, store, redis_client, spool_dir):
    for user in ("u1", "u2"):
        put_list(store, KeyKind.USER_RECS, user, 1, [("i1", 1.0)])
        put_list(store, KeyKind.COMPLEMENTS, user, 1, [("i2", 1.0)])
        put_list(store, KeyKind.LEGACY_CART, user, 1, [("i2", 1.0)])
        put_list(store, KeyKind.PROFILE, user, 1, [("i3", 1.0)], categories={}, cart=[], purchased=[])
        put_list(store, KeyKind.ADS, user, 1, [("i4", 1.0)], relevance=[0.5])
    response = api.delete("/v1/users/u1", headers=auth)
    assert response.status_code == 202, response.text
    assert response.json() == {"user_id": "u1", "deleted_keys": 5, "forget_queued": True}
    user_kinds = (KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE, KeyKind.LEGACY_CART, KeyKind.ADS)
    assert redis_client.exists(*(store.key(k, "u1") for k in user_kinds)) == 0
    assert redis_client.exists(*(store.key(k, "u2") for k in user_kinds)) == 5
    [spooled] = spool_files(spool_dir)
    assert lines(spooled) == [{"user_id": "u1", "event_type": "forget", "ts": NOW_MS}]
    # The user is now a cold-start user.
    assert api.get("/v1/users/u1/recommendations").json()["cold_start"] is True
    # Forgetting an unknown user is fine (idempotent) and still queues the event.
    again = api.delete("/v1/users/u1", headers=auth)
    assert again.status_code == 202 and again.json()["deleted_keys"] == 0


def test_delete_user_with_a_bad_id(api, auth, spool_dir):
    assert_problem(api.delete("/v1/users/u*", headers=auth), 422, "validation")
    assert spool_files(spool_dir) == []


# -- categories become keys: one rule at the door --------------------------------------


@pytest.mark.parametrize("category", ["bad*cat/x", "bad?cat", "a[b]", "back\\slash", "line\nbreak", "nul\x00byte", "fashion/", "/fashion", "a//b"])
def test_item_categories_that_cannot_become_keys_are_refused(api, auth, spool_dir, redis_client, category):
    response = api.post("/v1/items", json={"item_id": "probe_glob", "category": category}, headers=auth)
    assert_problem(response, 422, "no-records-accepted")
    assert response.json()["rejections"][0]["reason"] == "bad_category"
    assert redis_client.keys("*") == []
    assert spool_files(spool_dir, "catalog") == []


def test_catalog_categories_with_punctuation_are_fine(api, auth):
    response = api.post("/v1/items", json=[{"item_id": "b1", "category": "Children's/Sci-Fi & Fantasy"}], headers=auth)
    assert response.status_code == 202, response.text
    assert api.get("/v1/trending", params={"category": "Children's/Sci-Fi & Fantasy"}).status_code == 200


def test_an_item_stored_with_a_bad_category_does_not_poison_lookups(api, store, redis_client):
    """An entry written before the rule existed: lookups fall back to global trending instead of failing."""
    redis_client.set(store.key(KeyKind.ITEM, "probe_glob"), orjson.dumps({"item_id": "probe_glob", "category": "bad*cat/x"}))
    put_list(store, KeyKind.TRENDING_GLOBAL, None, 5, [("t1", 2.0)])
    similar = api.get("/v1/items/probe_glob/similar")
    assert similar.status_code == 200, similar.text
    assert [i["item"] for i in similar.json()["items"]] == ["t1"]
    in_context = api.get("/v1/users/u1/recommendations", params={"context": "item", "item_id": "probe_glob"})
    assert in_context.status_code == 200, in_context.text
    assert [i["item"] for i in in_context.json()["items"]] == ["t1"]
