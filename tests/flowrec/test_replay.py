"""`flowrec replay` against a real Redis: bad catalog records are dead-lettered with their reason."""

from __future__ import annotations

import orjson

from flowrec import cli
from state.keys import KeyKind, redis_key

TS = 1_700_000_000_000


def test_replay_dead_letters_a_catalog_category_that_cannot_be_a_key(tmp_path, redis_url, redis_client, capsys):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps({"user_id": "u1", "item_id": item, "event_type": "view", "ts": TS + k}) + b"\n" for k, item in enumerate(["a", "b", "a", "b"])))
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(
        orjson.dumps({"item_id": "a", "category": "toys/cars", "ts": TS})
        + b"\n"
        + orjson.dumps({"item_id": "probe_glob", "category": "bad*cat/x", "ts": TS})
        + b"\n"
        + orjson.dumps({"item_id": "probe_nl", "category": "line\nbreak", "ts": TS})
        + b"\n"
    )

    assert cli.main(["replay", "--events", str(events), "--catalog", str(catalog), "--redis-url", redis_url, "--json"]) == 0

    summary = orjson.loads(capsys.readouterr().out)
    assert summary["rejected"] == 2
    dead = [orjson.loads(fields[b"record"]) for _, fields in redis_client.xrange(redis_key(KeyKind.DEAD_LETTER))]
    assert [d["reason"] for d in dead] == ["bad_category", "bad_category"]
    assert "probe_glob" in dead[0]["raw"] and "probe_nl" in dead[1]["raw"]
    assert redis_client.exists(redis_key(KeyKind.ITEM, "a"), redis_key(KeyKind.USER_RECS, "u1"), redis_key(KeyKind.TRENDING_CATEGORY, "toys")) == 3
    assert redis_client.exists(redis_key(KeyKind.ITEM, "probe_glob"), redis_key(KeyKind.ITEM, "probe_nl")) == 0


def test_replay_of_spool_files_takes_their_end_markers_for_what_they_are(tmp_path, redis_url, redis_client, capsys):
    """Files the API wrote to the spool end with a marker line; replaying them dead-letters nothing."""
    from pipelines.spoolfiles import END_PREFIX

    end = (END_PREFIX + "done\n").encode()
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps({"user_id": "u1", "item_id": item, "event_type": "view", "ts": TS + k}) + b"\n" for k, item in enumerate("abab")) + end)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_bytes(orjson.dumps({"item_id": "a", "category": "toys", "ts": TS}) + b"\n" + end)

    assert cli.main(["replay", "--events", str(events), "--catalog", str(catalog), "--redis-url", redis_url, "--json"]) == 0

    summary = orjson.loads(capsys.readouterr().out)
    assert summary["rejected"] == 0 and redis_client.xlen(redis_key(KeyKind.DEAD_LETTER)) == 0
    assert redis_client.exists(redis_key(KeyKind.ITEM, "a"), redis_key(KeyKind.USER_RECS, "u1")) == 2
