"""The Beam backfill (DirectRunner) against the reference engine, its snapshot, and bootstrapping from it.

Equivalence is checked on Redis content (real redis-servers: the backfill
writes to the private ``redis_url``, the reference's final writes go to a
second LocalRedis) and on the state in the snapshot (counts and rows exactly).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from flowrec.cli import main as cli_main
from flowrec.config import load_settings
from flowrec.localredis import LocalRedis
from pipelines.backfill import BackfillError, BackfillJob, expand_inputs, run_backfill
from pipelines.bootstrap import (
    BOOT_PREFIX,
    SnapshotError,
    check_config,
    decode_boot_line,
    load_content_state,
    load_item_state,
    load_trending_state,
    load_user_state,
    boot_lines,
    read_snapshot,
    restore_engine,
)
from state.schemas import decode_profile
from state.profile_log import ProfileLog
from state.keys import KeyKind, redis_key
from state.schemas import decode_row, encode_profile
from state.store import RedisStore, decode_list
from state.writes import Ttls, final_writes
from tests.pipelines.jobkit import differences, results
from transforms.catalog import CatalogItem
from transforms.config import ModelConfig
from transforms.datasets import DatasetMissing, dataset_path, load_taobao_sample
from transforms.engine import FinalState, ReferenceEngine, last_windows, replay
from transforms.events import EventBatch, batch_from_columns
from transforms.synthetic import generate_shop

# A backfill lists each user once and scores with the configured weights (it cannot learn the blend:
# test_a_learned_blend_is_not_learned_by_the_backfill), so the reference it must equal learns nothing either.
CONFIG = ModelConfig(blend_learning=False)
# Refresh slots of a minute: the cutoff then falls inside a slot, with rows changed since the
# last refresh (dirty) and trending weights not yet listed, which the continuation must pick up.
SLOW_REFRESH = CONFIG.replace(model_refresh_ms=60_000)


@pytest.fixture(scope="module")
def reference_redis():
    """A second private Redis for the reference engine's writes."""
    server = LocalRedis().start()
    yield server
    server.stop()


def reference_content(final: FinalState, url: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()
    RedisStore.from_url(url).write(final_writes(final, Ttls()))
    return results(url)


def shop(events: int = 3000, users: int = 100, items: int = 80, seed: int = 5) -> tuple[EventBatch, list[CatalogItem]]:
    catalog, stream = generate_shop(users=users, items=items, events=events, seed=seed, days=1.0)
    return EventBatch.concat(list(stream)), catalog


def write_inputs(folder: Path, events: EventBatch, catalog: list[CatalogItem], name: str = "events.jsonl") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(events.to_jsonl())
    (folder / "catalog.jsonl").write_bytes(b"".join(c.to_json() + b"\n" for c in catalog))
    return folder / name, folder / "catalog.jsonl"


def item_state(engine: ReferenceEngine) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Counts and co-occurrence rows of an engine, by item id."""
    ids = engine.items.vocab.ids
    counts = {item: float(engine.items.counts[code]) for code, item in enumerate(ids)}
    rows = {ids[a]: dict(zip((ids[c] for c in codes.tolist()), weights.tolist())) for a, (codes, weights) in engine.items.rows.items()}
    return counts, rows


def test_synthetic_shop_equals_reference(tmp_path: Path, redis_url: str, reference_redis):
    events, catalog = shop()
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    engine, final = replay(events, CONFIG, catalog)
    expected = reference_content(final, reference_redis.url)

    result = run_backfill(BackfillJob(inputs=(events_path,), config=CONFIG, catalog=catalog_path, redis_url=redis_url, snapshot_dir=tmp_path / "snap"))

    got = results(redis_url)
    assert any(b":rec:" in k for k in got) and any(b":sim:" in k for k in got)
    assert any(b":content:" in k for k in got) and any(b":trend:" in k for k in got)
    assert differences(got, expected) == []
    assert got == expected  # integral weights: byte-identical, not only within 1e-9
    summary = result.summary()
    assert summary["events"] == len(events) and summary["rejected"] == 0
    assert summary["users"] == len(set(events.user.tolist()))
    assert summary["users_written"] == sum(1 for _, lists in final.users.values() if lists is not None)
    assert summary["items_written"] == len(final.neighbours)
    assert summary["redis_writes"] == len(final_writes(final, Ttls()))

    snapshot = read_snapshot(tmp_path / "snap")
    counts, rows = item_state(engine)
    assert snapshot.counts == counts
    assert {a: dict(zip(*snapshot.rows[a])) for a in snapshot.rows} == rows
    assert snapshot.profiles == {u: encode_profile(p) for u, p in engine.profiles.items()}
    assert snapshot.trending_totals == engine.trending.totals


def test_score_interval_equals_reference(tmp_path: Path, redis_url: str, reference_redis):
    """Lists once per 10 minutes of event time: the backfill closes the scoring windows that hold no events, like the engine."""
    config = CONFIG.replace(score_interval_ms=600_000)
    events, catalog = shop()
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    _, final = replay(events, config, catalog)
    expected = reference_content(final, reference_redis.url)
    run_backfill(BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=redis_url))
    got = results(redis_url)
    assert any(b":rec:" in k for k in got)
    assert got == expected
    with pytest.raises(BackfillError, match="score_interval_ms"):
        run_backfill(BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=redis_url, snapshot_dir=tmp_path / "snap"))


def test_hand_computed_stream(tmp_path: Path, redis_url: str):
    """Three users over three 100 ms windows (the stream of tests/transforms/test_engine.py), checked by hand.

    Views weigh 1: n_A = 2 (u1, u2), n_B = 2 (u1, u2), c_AB = 2 (one pair each from u1 and u2),
    so cosine(A, B) = 2 / sqrt(2 * 2) = 1; C and D are viewed once each by u3: c_CD = 1, cosine 1.
    u1 is forgotten at the end (its keys deleted), trending counts A 2, B 2, C 1, D 1.
    """
    t0 = 1_700_000_000_000
    config = ModelConfig(window_ms=100, model_refresh_ms=200, half_life_ms=10**12, trending_window_ms=10_000, trending_slide_ms=100)
    rows = [("u1", "A", "view", 10), ("u1", "B", "view", 20), ("u2", "A", "view", 30), ("u2", "B", "view", 110), ("u3", "C", "view", 150), ("u3", "D", "view", 210), ("u1", "", "forget", 250)]
    events = batch_from_columns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [t0 + r[3] for r in rows])
    catalog = [CatalogItem(i, title=f"{i} thing", category=c, ts=t0 - 1000) for i, c in (("A", "books"), ("B", "books"), ("C", "toys"), ("D", "toys"))]
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)

    run_backfill(BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=redis_url, snapshot_dir=tmp_path / "snap"))

    client = redis.Redis.from_url(redis_url)
    try:
        def listed(kind: KeyKind, part: str | None) -> list[tuple[str, float]]:
            _, items, _ = decode_list(client.get(redis_key(kind, part)))
            return [(i.item, round(i.score, 12)) for i in items]

        assert listed(KeyKind.ITEM_NEIGHBOURS, "A") == [("B", 1.0)]
        assert listed(KeyKind.ITEM_NEIGHBOURS, "C") == [("D", 1.0)]
        assert listed(KeyKind.TRENDING_GLOBAL, None) == [("A", 2.0), ("B", 2.0), ("C", 1.0), ("D", 1.0)]
        assert client.get(redis_key(KeyKind.USER_RECS, "u1")) is None
        assert client.get(redis_key(KeyKind.USER_RECS, "u2")) is not None
    finally:
        client.close()
    snapshot = read_snapshot(tmp_path / "snap")
    assert snapshot.counts == {"A": 2.0, "B": 2.0, "C": 1.0, "D": 1.0}
    assert {a: dict(zip(*r)) for a, r in snapshot.rows.items()} == {"A": {"B": 2.0}, "B": {"A": 2.0}, "C": {"D": 1.0}, "D": {"C": 1.0}}
    assert sorted(snapshot.profiles) == ["u1", "u2", "u3"]
    # u1 forgot itself: the snapshot keeps only its tombstone, so the job goes on dropping its early events.
    assert decode_profile(snapshot.profiles["u1"]).is_forgotten
    assert snapshot.cutoff_ms == t0 + 300  # the window boundary after the newest event


def test_parquet_csv_and_globs_equal_the_same_records_as_json(tmp_path: Path, redis_url: str, reference_redis):
    import pyarrow as pa
    import pyarrow.parquet as pq

    events, catalog = shop(events=1500, users=60, items=50, seed=9)
    first, second = events.take(slice(0, 700)), events.take(slice(700, None))
    records = first.to_records()
    columns = ["user_id", "item_id", "event_type", "ts", "session_id"]
    pq.write_table(pa.table({c: [r.get(c) for r in records] for c in columns}), tmp_path / "part-1.parquet")
    csv_rows = [",".join(columns)] + [",".join(str(r.get(c, "")) for c in columns) for r in second.to_records()]
    (tmp_path / "part-2.csv").write_text("\n".join(csv_rows) + "\n")
    (tmp_path / "catalog.jsonl").write_bytes(b"".join(c.to_json() + b"\n" for c in catalog))
    inputs = expand_inputs([str(tmp_path / "part-*")])
    assert [p.name for p in inputs] == ["part-1.parquet", "part-2.csv"]

    run_backfill(BackfillJob(inputs=inputs, config=CONFIG, catalog=tmp_path / "catalog.jsonl", redis_url=redis_url))

    _, final = replay(events, CONFIG, catalog)
    assert differences(results(redis_url), reference_content(final, reference_redis.url)) == []


def test_bad_records_are_dead_lettered_and_counted(tmp_path: Path, redis_url: str, reference_redis):
    events, catalog = shop(events=800, users=40, items=30, seed=2)
    bad_events = [
        b"{not json",
        b'{"user_id": "u 1", "item_id": "i1", "event_type": "view", "ts": 1700000000000}',
        b'{"user_id": "u1", "item_id": "i1", "event_type": "teleport", "ts": 1700000000000}',
        b'{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 12}',
        b'{"user_id": "u1", "event_type": "view", "ts": 1700000000000}',
    ]
    lines = events.to_jsonl().splitlines()
    mixed = lines[:100] + bad_events[:3] + lines[100:] + bad_events[3:]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(mixed) + b"\n")
    (tmp_path / "catalog.jsonl").write_bytes(b"".join(c.to_json() + b"\n" for c in catalog) + b'{"item_id": "bad id!"}\n')

    result = run_backfill(BackfillJob(inputs=(tmp_path / "events.jsonl",), config=CONFIG, catalog=tmp_path / "catalog.jsonl", redis_url=redis_url, chunk_lines=300))

    summary = result.summary()
    assert summary["events"] == len(events)
    assert summary["rejected"] == len(bad_events)
    assert result.counters["catalog_rejected"] == 1
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(redis_key(KeyKind.DEAD_LETTER))
    finally:
        client.close()
    reasons = sorted(orjson.loads(fields[b"record"])["reason"] for _, fields in entries)
    assert reasons == sorted(["bad_json", "bad_id", "unknown_event_type", "timestamp_out_of_range", "missing_field", "bad_id"])
    _, final = replay(events, CONFIG, catalog)
    assert differences(results(redis_url), reference_content(final, reference_redis.url)) == []


def split_shop(config: ModelConfig = SLOW_REFRESH) -> tuple[EventBatch, list[CatalogItem], int]:
    """A shop with catalog changes on both sides of a window-aligned cutoff near the median event time."""
    events, catalog = shop(events=3000, seed=11)
    middle = int(np.median(events.ts))
    # Mid-slot, so the backfill's last windows changed rows after its last refresh.
    cutoff = middle - middle % config.model_refresh_ms + config.model_refresh_ms // 2 // config.window_ms * config.window_ms
    updates = [dataclasses.replace(c, in_stock=False, ts=cutoff + 7_000) for c in catalog[:4]]
    updates += [dataclasses.replace(c, category="garden/tools", ts=cutoff - 5_000) for c in catalog[4:7]]
    return events, list(catalog) + updates, cutoff


@pytest.mark.parametrize("config", [CONFIG, SLOW_REFRESH], ids=["refresh-1s", "refresh-60s"])
def test_bootstrap_from_snapshot_of_first_half_equals_full_replay(config: ModelConfig, tmp_path: Path, redis_url: str, reference_redis):
    events, catalog, cutoff = split_shop(config)
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    full_engine, full = replay(events, config, catalog)
    expected = reference_content(full, reference_redis.url)

    # The backfill reads everything but takes only ts < cutoff; the rest is the stream's.
    result = run_backfill(
        BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=redis_url, snapshot_dir=tmp_path / "snap", cutoff_ms=cutoff)
    )
    second = events.take(events.ts >= cutoff)
    snapshot = read_snapshot(tmp_path / "snap")
    if config is SLOW_REFRESH:
        assert snapshot.dirty and snapshot.events_since_refresh > 0 and snapshot.trending_changed
    assert result.counters["after_cutoff"] == len(second) > 0
    assert result.counters["catalog_after_cutoff"] == 4
    assert results(redis_url) != expected  # half the history is not the whole

    continuation = FinalState()
    engine = restore_engine(snapshot, on_window=continuation.merge, score_users=last_windows(second, config.window_ms))
    engine.upsert_catalog([c for c in catalog if c.ts >= cutoff])
    for start in range(0, len(second), 1000):  # streamed in pieces, as a job receives it
        engine.process(second.sorted_by_time().take(slice(start, start + 1000)))
    engine.finish()
    RedisStore.from_url(redis_url).write(final_writes(continuation, Ttls()))

    assert differences(results(redis_url), expected) == []
    assert results(redis_url) == expected
    assert item_state(engine) == item_state(full_engine)
    assert {u: encode_profile(p) for u, p in engine.profiles.items()} == {u: encode_profile(p) for u, p in full_engine.profiles.items()}
    assert engine.trending.totals == full_engine.trending.totals


def test_snapshot_round_trip_and_restore(tmp_path: Path):
    from pipelines.bootstrap import write_snapshot

    events, catalog, cutoff = split_shop()
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    run_backfill(BackfillJob(inputs=(events_path,), config=SLOW_REFRESH, catalog=catalog_path, snapshot_dir=tmp_path / "a", cutoff_ms=cutoff, shards=3))
    a = read_snapshot(tmp_path / "a")
    write_snapshot(a, tmp_path / "b")
    b = read_snapshot(tmp_path / "b")
    for name in ("cutoff_ms", "last_end_ms", "refresh_slot", "events_since_refresh", "profiles", "last_ts", "counts", "rows", "dirty", "catalog", "trending_buckets", "trending_totals", "trending_category", "trending_changed"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("neighbours", "content", "trending_by_category"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.keys() == right.keys()
        assert all(left[k][0] == right[k][0] and left[k][1][0].tolist() == right[k][1][0].tolist() and left[k][1][1].tolist() == right[k][1][1].tolist() for k in left)
    assert len(a.profiles) == len(set(events.take(events.ts < cutoff).user.tolist()))
    assert a.dirty and a.events_since_refresh > 0
    engine = restore_engine(b)
    assert item_state(engine)[0] == a.counts
    assert engine._last_end == a.last_end_ms <= cutoff


def test_sponsored_items_reach_the_restored_engine_and_the_scorer(tmp_path: Path):
    """A snapshot's catalog carries the sponsorships: the restored engine ranks ads with them, and the
    bootstrap lines give the job's scorer the same bids (its ``a:`` entry)."""
    from pipelines.bootstrap import decode_boot_line
    from state.schemas import decode_sponsored

    events, catalog, cutoff = split_shop()
    catalog = [dataclasses.replace(c, sponsored=True, bid=1.0 + k % 3, campaign="c1") if c.item_id in {x.item_id for x in catalog[:30:5]} else c for k, c in enumerate(catalog)]
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    run_backfill(BackfillJob(inputs=(events_path,), config=SLOW_REFRESH, catalog=catalog_path, snapshot_dir=tmp_path / "s", cutoff_ms=cutoff))
    snapshot = read_snapshot(tmp_path / "s")
    before_cutoff = {c.item_id: c for c in sorted(catalog, key=lambda c: c.ts) if c.ts < cutoff}
    expected = {item: c.bid for item, c in before_cutoff.items() if c.sponsored}
    assert len(expected) == 6
    assert restore_engine(snapshot).model.sponsored == expected
    _, lines = boot_lines(snapshot, user_shards=2, item_shards=2)
    entries = [entry for line in lines for entry in decode_boot_line(line).model_update_entries()]
    assert [decode_sponsored(value) for _, key, value in entries if key == "a:"] == [expected]


def test_restore_refuses_other_state_settings_and_misaligned_cutoffs(tmp_path: Path):
    events, catalog = shop(events=300, users=20, items=20)
    events_path, _ = write_inputs(tmp_path, events, catalog)
    with pytest.raises(SnapshotError, match="multiple of window_ms"):
        run_backfill(BackfillJob(inputs=(events_path,), config=CONFIG, cutoff_ms=int(events.ts[150]) | 1, snapshot_dir=tmp_path / "s"))
    run_backfill(BackfillJob(inputs=(events_path,), config=CONFIG, snapshot_dir=tmp_path / "s"))
    snapshot = read_snapshot(tmp_path / "s")
    check_config(snapshot, CONFIG.replace(weight_cf=0.5))  # scoring settings may change
    with pytest.raises(SnapshotError, match="window_ms"):
        restore_engine(snapshot, CONFIG.replace(window_ms=500))
    with pytest.raises(BackfillError, match="no input file matches"):
        expand_inputs([str(tmp_path / "nothing-*.jsonl")])
    (tmp_path / "s" / "snapshot.json").unlink()
    with pytest.raises(SnapshotError, match="no complete snapshot"):
        read_snapshot(tmp_path / "s")


class MapState(dict):
    """The put/update surface of Flink state handles, for the pure loader functions."""

    def put(self, key, value):
        self[key] = value

    def update(self, value=None, **kw):  # ValueState.update(value)
        self["value"] = value


def test_boot_lines_load_into_each_operators_state(tmp_path: Path):
    from pipelines.messages import shard_of

    events, catalog, cutoff = split_shop()
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    run_backfill(BackfillJob(inputs=(events_path,), config=SLOW_REFRESH, catalog=catalog_path, snapshot_dir=tmp_path / "s", cutoff_ms=cutoff))
    snapshot = read_snapshot(tmp_path / "s")
    assert snapshot.dirty
    event_lines, catalog_lines = boot_lines(snapshot, user_shards=4, item_shards=3, max_users_per_line=10)
    assert all(line.startswith(BOOT_PREFIX) and "\n" not in line for line in event_lines + catalog_lines)

    user_logs: dict[int, ProfileLog] = {}
    model = {}
    item_shards: dict[int, tuple[MapState, MapState, MapState]] = {}
    for line in event_lines:
        record = decode_boot_line(line)
        assert record.ts == cutoff - 1
        if record.kind == "users":
            assert all(shard_of(u, 4) == record.shard for u in record.payload["profiles"])
            load_user_state(record, user_logs.setdefault(record.shard, ProfileLog()))
        elif record.kind == "items":
            maps = item_shards.setdefault(record.shard, (MapState(), MapState(), MapState()))
            model.update({key: (w, v) for w, key, v in load_item_state(record, *maps)})
        else:
            trending = (MapState(), MapState(), MapState(), MapState())
            model.update({key: (w, v) for w, key, v in load_trending_state(record, *trending)})
    content = MapState()
    model.update({key: (w, v) for w, key, v in load_content_state(decode_boot_line(catalog_lines[0]), content)})

    assert {u: profile_log.encoded(u) for profile_log in user_logs.values() for u in profile_log.users()} == snapshot.profiles
    assert {u: profile_log.last_seen(u) for profile_log in user_logs.values() for u in profile_log.users()} == snapshot.last_ts
    rows = {item: decode_row(raw) for shard, (r, _, _) in item_shards.items() for item, raw in r.items()}
    assert {a: dict(zip(*r)) for a, r in rows.items()} == {a: dict(zip(*r)) for a, r in snapshot.rows.items()}
    assert all(dict(counts) == snapshot.counts for _, counts, _ in item_shards.values())
    dirty = sorted(i for _, _, meta in item_shards.values() for i in orjson.loads(meta["value"])["dirty"])
    assert dirty == sorted(snapshot.dirty)
    assert {k[2:] for k in model if k.startswith("n:")} == set(snapshot.neighbours)
    assert {k[2:] for k in model if k.startswith("c:")} == set(snapshot.content)
    assert ("t:" in model) == (snapshot.trending_global is not None)
    assert all(w < snapshot.cutoff_window for w, _ in model.values())
    assert set(content) == {c.item_id for c in snapshot.catalog}
    trend_meta = orjson.loads(trending[2]["value"])
    assert trend_meta["since"] == snapshot.events_since_refresh and trend_meta["changed"] == snapshot.trending_changed
    assert dict(trending[3]) == snapshot.trending_category


def test_cli_prints_one_json_object(tmp_path: Path, redis_url: str, capsys):
    events, catalog = shop(events=500, users=30, items=25)
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    code = cli_main(["backfill", "--input", str(tmp_path / "ev*.jsonl"), "--catalog", str(catalog_path), "--redis-url", redis_url, "--snapshot", str(tmp_path / "snap"), "--json", "--shards", "4"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert summary["events"] == len(events)
    assert summary["users_written"] == len(set(events.user.tolist()))
    assert summary["items_written"] > 0 and summary["events_per_s"] > 0
    assert (tmp_path / "snap" / "snapshot.json").is_file()


def test_multi_processing_direct_runner_equals_reference_and_in_memory(tmp_path: Path, redis_url: str, reference_redis, capsys):
    """`--direct-running-mode multi_processing`: parse and per-user replay run in two worker processes
    (the elements cross process boundaries encoded); Redis equals the reference engine's, and the snapshot
    equals the one the in-process runner writes for the same input."""
    events, catalog, _ = split_shop()  # catalog changes during the history
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    code = cli_main(
        ["backfill", "--input", str(events_path), "--catalog", str(catalog_path), "--redis-url", redis_url, "--snapshot", str(tmp_path / "mp"),
         "--json", "--shards", "4", "--chunk-lines", "700", "--direct-running-mode", "multi_processing", "--direct-num-workers", "2"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["events"] == len(events) and summary["rejected"] == 0
    _, final = replay(events, CONFIG, catalog)
    expected = reference_content(final, reference_redis.url)
    assert results(redis_url) == expected

    run_backfill(BackfillJob(inputs=(events_path,), config=CONFIG, catalog=catalog_path, snapshot_dir=tmp_path / "one", shards=4, chunk_lines=700))
    a, b = read_snapshot(tmp_path / "mp"), read_snapshot(tmp_path / "one")
    for name in ("cutoff_ms", "last_end_ms", "refresh_slot", "events_since_refresh", "profiles", "last_ts", "last_window", "counts", "rows", "dirty", "trending_totals", "trending_changed"):
        assert getattr(a, name) == getattr(b, name), name
    assert {i: (w, nb[0].tolist(), nb[1].tolist()) for i, (w, nb) in a.neighbours.items()} == {i: (w, nb[0].tolist(), nb[1].tolist()) for i, (w, nb) in b.neighbours.items()}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--direct-running-mode", "multi_processing", "--runner", "FlinkRunner"], "DirectRunner options"),
        (["--direct-num-workers", "0"], "--direct-num-workers must be >= 1"),
    ],
)
def test_direct_runner_options_are_checked(tmp_path: Path, capsys, extra, message):
    events, catalog = shop(events=50, users=5, items=5)
    events_path, _ = write_inputs(tmp_path, events, catalog)
    assert cli_main(["backfill", "--input", str(events_path), "--snapshot", str(tmp_path / "s"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_direct_arguments():
    from flowrec.commands.backfill import direct_arguments

    assert direct_arguments("DirectRunner", None, None) == []
    assert direct_arguments("DirectRunner", "multi_processing", 3) == ["--direct_running_mode=multi_processing", "--direct_num_workers=3"]
    assert direct_arguments("DirectRunner", "multi_processing", None)[1].startswith("--direct_num_workers=")
    assert direct_arguments("DirectRunner", None, 2) == ["--direct_num_workers=2"]


@pytest.mark.datasets
def test_taobao_sample_equals_reference(tmp_path: Path, redis_url: str, reference_redis):
    try:
        folder = dataset_path(load_settings(None), "taobao-sample")
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    events, catalog = load_taobao_sample(folder)
    events_path, catalog_path = write_inputs(tmp_path, events, catalog)
    _, final = replay(events, CONFIG, catalog)

    result = run_backfill(BackfillJob(inputs=(events_path,), config=CONFIG, catalog=catalog_path, redis_url=redis_url))

    assert result.summary()["events"] == len(events)
    assert differences(results(redis_url), reference_content(final, reference_redis.url)) == []


def test_skipping_unread_refreshes_changes_nothing_but_the_work():
    """The timeline recomputes only neighbour lists that are read later; the output is identical."""
    from pipelines.backfill import merge_deltas, observed_refreshes, parse_chunk, refresh_windows, replay_timeline, replay_users

    events, catalog = shop(events=4000, users=60, seed=4)
    by_shard, _, _ = parse_chunk(0, 0, [line.decode() for line in events.to_jsonl().splitlines()], CONFIG, 4, None)
    shards = [replay_users(s, [columns], CONFIG) for s, columns in by_shard.items()]
    users, deltas = [u for u, _ in shards], [d for _, d in shards]
    fast = replay_timeline(CONFIG, catalog, deltas, users, skip_unread_refreshes=True)
    full = replay_timeline(CONFIG, catalog, deltas, users, skip_unread_refreshes=False)
    assert {(w.kind, w.part): w.value for w in final_writes(fast.final, Ttls())} == {(w.kind, w.part): w.value for w in final_writes(full.final, Ttls())}
    assert fast.snapshot.counts == full.snapshot.counts and fast.snapshot.dirty == full.snapshot.dirty
    assert {i: v[0] for i, v in fast.snapshot.neighbours.items()} == {i: v[0] for i, v in full.snapshot.neighbours.items()}

    merged = merge_deltas(deltas)
    reads: dict[int, set[str]] = {}
    for shard in users:
        for window, read in zip(shard.last_window, shard.reads):
            reads.setdefault(window, set()).update(read)
    refreshing = merged.windows[refresh_windows(merged.windows, CONFIG)]
    changes = np.repeat(merged.windows, np.diff(merged.pairs))
    at = np.searchsorted(refreshing, changes)
    dirty_pairs = len({(a, r) for a, r in zip(merged.pair_a.tolist(), at.tolist()) if r < len(refreshing)})
    observed = sum(len(v) for v in observed_refreshes(merged, CONFIG, reads).values())
    assert 0 < observed < dirty_pairs


def ratings_log(days: int = 120, users: int = 40, items: int = 30) -> EventBatch:
    """A ratings-like history: every user rates distinct items once, spread over ``days`` (no repeated pairs)."""
    rng = np.random.default_rng(3)
    start = 1_700_000_000_000
    rows = [(f"u{u}", f"i{i}", int(start + rng.integers(0, days * 86_400_000))) for u in range(users) for i in rng.choice(items, 8, replace=False)]
    user, item, ts = zip(*rows)
    return batch_from_columns(user, item, ["view"] * len(rows), ts)


def test_snapshot_records_the_half_life_derived_from_its_history_and_the_job_continues_under_it(tmp_path):
    from pipelines.bootstrap import prepare_bootstrap

    events = ratings_log()
    span = int(events.ts.max() - events.ts.min())
    path, _ = write_inputs(tmp_path, events, [])
    result = run_backfill(BackfillJob(inputs=(path,), snapshot_dir=tmp_path / "snap", shards=2))
    # Nobody came back to an item: the half-life is the history's span (over the one-day default).
    assert result.derived == {"half_life_ms": span} and result.summary()["derived_half_life_ms"] == span
    assert read_snapshot(tmp_path / "snap").config.half_life_ms == span
    # A job with the default config (half-life left to the history) continues under the snapshot's value...
    assert prepare_bootstrap(tmp_path / "snap", ModelConfig(), 2, 2).config.half_life_ms == span
    # ...and one given a half-life explicitly is told the snapshot was made under another.
    with pytest.raises(SnapshotError, match="half_life_ms"):
        prepare_bootstrap(tmp_path / "snap", ModelConfig().replace(half_life_ms=86_400_000), 2, 2)
    # A config that fixes its half-life is not derived.
    fixed = run_backfill(BackfillJob(inputs=(path,), config=ModelConfig().replace(half_life_ms=3_600_000), snapshot_dir=tmp_path / "fixed", shards=2))
    assert fixed.derived == {} and read_snapshot(tmp_path / "fixed").config.half_life_ms == 3_600_000


def test_the_job_records_its_model_settings_in_stats(tmp_path, redis_url):
    from pipelines.bootstrap import prepare_bootstrap
    from pipelines.main import with_history_settings
    from flowrec.config import Settings

    events = ratings_log()
    path, _ = write_inputs(tmp_path, events, [])
    run_backfill(BackfillJob(inputs=(path,), snapshot_dir=tmp_path / "snap", shards=2))
    settings = Settings(redis_url=redis_url)

    class Started:
        bootstrap = prepare_bootstrap(tmp_path / "snap", settings.model, settings.user_shards, settings.item_shards)

    class Fresh:
        bootstrap = None

    stats = redis.Redis.from_url(redis_url)
    adopted = with_history_settings(settings, Started())
    assert adopted.model.half_life_ms == int(events.ts.max() - events.ts.min())
    assert stats.hget(redis_key(KeyKind.STATS), "model.half_life_ms") == str(adopted.model.half_life_ms).encode()
    assert stats.hget(redis_key(KeyKind.STATS), "model.half_life_ms.source") == b"derived from history"
    assert with_history_settings(settings, Fresh()) is settings
    assert stats.hget(redis_key(KeyKind.STATS), "model.half_life_ms.source") == b"configured"


def test_a_learned_blend_is_not_learned_by_the_backfill():
    """A backfill lists each user once, so it cannot learn the blend: with blend_learning on it scores
    with the configured weights, i.e. exactly what a replay with learning off writes."""
    from pipelines.backfill import parse_chunk, replay_timeline, replay_users

    events, catalog = shop(events=2000, users=40, seed=4)
    learning = CONFIG.replace(blend_learning=True, blend_margin=0.0)
    by_shard, _, _ = parse_chunk(0, 0, [line.decode() for line in events.to_jsonl().splitlines()], learning, 4, None)
    shards = [replay_users(s, [columns], learning) for s, columns in by_shard.items()]
    backfill = replay_timeline(learning, catalog, [d for _, d in shards], [u for u, _ in shards])
    _, fixed = replay(events, CONFIG.replace(blend_learning=False), catalog)
    assert {(w.kind, w.part): w.value for w in final_writes(backfill.final, Ttls())} == {(w.kind, w.part): w.value for w in final_writes(fixed, Ttls())}
