"""The streaming job started from a backfill snapshot (pipelines/BACKFILL.md, "Flink job").

The equivalence: a backfill of the first half (cutoff mid-way and mid refresh
slot, so rows are dirty and trending owes a refresh) followed by the job on
the snapshot's bootstrap lines plus the second half leaves Redis exactly as
one replay of everything.  Also the pieces without Flink: the bootstrap gate,
the parsers' handling of bootstrap lines, the replay's cutoff, the CLI errors.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from flowrec import cli
from flowrec.commands import submit
from flowrec.config import Settings, UsageError
from flowrec.localredis import LocalRedis
from pipelines.backfill import BackfillJob, run_backfill
from pipelines.bootstrap import BOOT_PREFIX, BootRecord, prepare_bootstrap, read_snapshot, restore_engine
from pipelines.messages import ModelUpdate
from pipelines.operators import ITEM_DELTAS, TICK_PREFIX, TREND_DELTAS, BootGate, ParseCatalog, ParseEvents, UserState, boot_model_updates
from pipelines.sources import DirectorySource, FileReplaySource, _catalog_time, _event_time, _from_cutoff
from state.profile_log import MAX_DECODED, ProfileLog
from state.recent import RecentlyUsed
from state.store import RedisStore
from state.writes import Ttls, final_writes
from tests.pipelines.records import tagged
from tests.pipelines.fakestate import FakeValue
from tests.pipelines.jobkit import differences, event_lines, reference_content, results, run_job
from tests.pipelines.test_backfill import SLOW_REFRESH, split_shop, write_inputs
from transforms.engine import FinalState, last_windows
from transforms.events import batch_from_columns

CONFIG = SLOW_REFRESH


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """A split shop, the backfill of its first half (snapshot + a dump of the Redis it wrote)."""
    folder = tmp_path_factory.mktemp("backfill")
    events, catalog, cutoff = split_shop(CONFIG)
    events_path, catalog_path = write_inputs(folder, events, catalog)
    with LocalRedis() as server:
        run_backfill(BackfillJob(inputs=(events_path,), config=CONFIG, catalog=catalog_path, redis_url=server.url, snapshot_dir=folder / "snap", cutoff_ms=cutoff))
        client = redis.Redis.from_url(server.url)
        dump = {key: client.dump(key) for key in client.keys("*")}
        client.close()
    return events, catalog, cutoff, events_path, catalog_path, folder / "snap", dump


def load_dump(url: str, dump: dict[bytes, bytes]) -> None:
    """Redis as the backfill left it."""
    client = redis.Redis.from_url(url)
    try:
        for key, raw in dump.items():
            client.restore(key, 0, raw, replace=True)
    finally:
        client.close()


# -- the job (Flink) ---------------------------------------------------------------------------


@pytest.mark.flink
def test_job_from_snapshot_of_first_half_equals_full_replay(backfilled, redis_url, tmp_path: Path):
    """Parallelism 2: bootstrap records reach user-state and item-model subtasks by their shards (the live test runs at 1)."""
    events, catalog, cutoff, events_path, catalog_path, snap, dump = backfilled
    settings = Settings(parallelism=2, restart_attempts=0, model=CONFIG)
    expected = reference_content(events, catalog, settings)
    load_dump(redis_url, dump)
    assert differences(results(redis_url), expected) != []  # half the history is not the whole

    # The same files as the backfill's: the replay skips what the snapshot holds.
    boot = prepare_bootstrap(snap, CONFIG, settings.user_shards, settings.item_shards)
    run_job(FileReplaySource([events_path], catalog_path, chunk_size=200, workdir=tmp_path, bootstrap=boot), settings, redis_url)

    assert differences(results(redis_url), expected) == []


@pytest.mark.flink
def test_live_spool_job_from_snapshot_equals_the_restored_reference(backfilled, redis_url, tmp_path: Path):
    """Spool directory + bootstrap streams: the gate orders them, whichever source Flink reads first.

    The second half is in the spool before the job starts.  Without a heartbeat
    (its wall clock would make dated events late) a far-future sentinel event and
    catalog upsert close every real window; a live job never runs the end-of-input
    refresh, so the reference is the restored engine fed the same records, unfinished.
    """
    from pipelines.main import run_job as start_job

    events, catalog, cutoff, _, _, snap, dump = backfilled
    second = events.take(events.ts >= cutoff).sorted_by_time()
    updates = sorted((c for c in catalog if c.ts >= cutoff), key=lambda c: c.ts)
    far = int(second.ts.max()) + 3_600_000
    sentinel = batch_from_columns(["sentinel-user"], [second.item[0]], ["view"], [far])

    snapshot = read_snapshot(snap)
    continuation = FinalState()
    engine = restore_engine(snapshot, on_window=continuation.merge, score_users=last_windows(second, CONFIG.window_ms))
    engine.upsert_catalog(updates)
    engine.process(second)
    engine.process(sentinel)  # closes the last real window; its own stays open
    settings = Settings(parallelism=1, restart_attempts=0, heartbeat_ms=0, model=CONFIG, spool_dir=tmp_path / "spool")
    with LocalRedis() as server:
        load_dump(server.url, dump)
        RedisStore.from_url(server.url).write(final_writes(continuation, Ttls(settings.user_ttl_s, settings.item_ttl_s)))
        expected = results(server.url)

    spool = tmp_path / "spool"
    for sub in ("events", "catalog"):
        (spool / sub).mkdir(parents=True)
    lines = event_lines(second) + event_lines(sentinel)
    # One file, JSON arrays of 200 events a line, in time order (files are read in no set order).
    arrays = [b"[" + ",".join(lines[i : i + 200]).encode() + b"]" for i in range(0, len(lines), 200)]
    (spool / "events" / ".part-0.jsonl").write_bytes(b"\n".join(arrays) + b"\n")
    (spool / "events" / ".part-0.jsonl").rename(spool / "events" / "part-0.jsonl")
    sentinel_item = {"item_id": "sentinel-item", "title": "sentinel", "category": "none", "ts": far}
    catalog_text = b"".join(c.to_json() + b"\n" for c in updates) + orjson.dumps(sentinel_item) + b"\n"
    (spool / "catalog" / ".part-0.jsonl").write_bytes(catalog_text)
    (spool / "catalog" / ".part-0.jsonl").rename(spool / "catalog" / "part-0.jsonl")
    load_dump(redis_url, dump)

    boot = prepare_bootstrap(snap, CONFIG, settings.user_shards, settings.item_shards)
    job = start_job(
        dataclasses.replace(settings, redis_url=redis_url),
        DirectorySource(spool, heartbeat_ms=0, bootstrap=boot, workdir=tmp_path / "boot"),
        wait=False,
    )
    try:
        deadline = time.monotonic() + 120
        while (left := differences(results(redis_url), expected)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert left == []
    finally:
        job.cancel().result()


# -- the pieces (no Flink) ---------------------------------------------------------------------


class ListState(list):
    def get(self):
        return list(self)

    def add(self, value):
        self.append(value)

    def clear(self):
        del self[:]


def gate(expected: int) -> BootGate:
    g = BootGate(expected)
    g.seen, g.held = FakeValue(), ListState()
    return g


def test_gate_holds_live_chunks_until_the_last_bootstrap_line_and_drops_heartbeats_meanwhile():
    g = gate(2)
    boot = [BOOT_PREFIX + '{"n":1}', BOOT_PREFIX + '{"n":2}']
    out = []
    for chunk in ['{"a":1}', TICK_PREFIX + "5", boot[0], '{"a":2}', TICK_PREFIX + "6"]:
        out += list(g.process_element(chunk, None))
    assert out == [boot[0]], "live chunks and heartbeats wait; the first bootstrap line passes"
    assert list(g.process_element(boot[1], None)) == [boot[1], '{"a":1}', '{"a":2}'], "then the held chunks, in order"
    assert g.held == []
    assert list(g.process_element(TICK_PREFIX + "7", None)) == [TICK_PREFIX + "7"]
    assert list(g.process_element('{"a":3}', None)) == ['{"a":3}']
    assert list(g.process_element(boot[0], None)) == [], "a bootstrap line after the bootstrap never reloads state"


def test_parsers_take_bootstrap_lines_only_in_a_bootstrapped_job(backfilled):
    *_, snap, _ = backfilled
    boot = prepare_bootstrap(snap, CONFIG, 4, 2)
    line = boot.event_lines[0]
    _, record = tagged(next(iter(ParseEvents(CONFIG.window_ms, 4, accept_boot=True).process_element(line, None))))
    assert isinstance(record, BootRecord) and record.ts == boot.cutoff_ms - 1
    assert next(iter(ParseCatalog(accept_boot=True).process_element(boot.catalog_lines[0], None))).kind == "catalog"
    # Not bootstrapping: a bootstrap line is malformed input (no producer can inject state).
    parser = ParseEvents(CONFIG.window_ms, 4)
    parser.events_in, parser.dead_letters = _Counter(), _Counter()
    out = list(parser.process_element(line, None))
    assert len(out) == 1 and out[0][1].stats == {"dead_letters": 1, "dead_letters:bad_json": 1}
    (tag, batch), = ParseCatalog().process_element(boot.catalog_lines[0], None)
    assert batch.stats["dead_letters"] == 1


class _Counter:
    def inc(self, n=1):
        pass


class _MapState(dict):
    """The MapState calls UserState makes, on a dict."""

    def put(self, key, value):
        self[key] = value

    def remove(self, key):
        del self[key]

    def is_empty(self):
        return not self


def test_user_state_loads_its_users_and_routes_the_rest(backfilled):
    *_, snap, _ = backfilled
    boot = prepare_bootstrap(snap, CONFIG, 4, 2)
    operator = UserState(CONFIG, 2, 10**12)
    # One state per user shard (the operator's current key), as Flink keys it.
    states: dict[int, dict[str, _MapState]] = {}
    operator.logs = {}
    operator.decoded = RecentlyUsed(MAX_DECODED)
    routed = []
    user_records = 0
    for line in boot.event_lines:
        _, record = tagged(next(iter(ParseEvents(CONFIG.window_ms, 4, True).process_element(line, None))))
        if record.kind == "users":
            user_records += 1
            state = states.setdefault(record.shard, {"blocks": _MapState(), "profiles": _MapState(), "last_seen": _MapState()})
            operator.blocks, operator.legacy_profiles, operator.legacy_last_seen = state["blocks"], state["profiles"], state["last_seen"]
        routed += [tagged(out) for out in operator.process_element(record, None)]
    snapshot = read_snapshot(snap)
    # In memory, and in the shards' logs as a restore reads them back.
    assert {u: operator.logs[s].encoded(u) for s in operator.logs for u in operator.logs[s].users()} == snapshot.profiles
    restored = {s: ProfileLog.restore(state["blocks"].items()) for s, state in states.items()}
    assert {u: restored[s].encoded(u) for s in restored for u in restored[s].users()} == snapshot.profiles
    assert {u: restored[s].last_seen(u) for s in restored for u in restored[s].users()} == snapshot.last_ts
    # One block per bootstrap line, not a put per user.
    assert sum(len(state["blocks"]) for state in states.values()) == user_records
    assert sorted((tag.tag_id, r.kind, r.shard) for tag, r in routed) == sorted([(ITEM_DELTAS.tag_id, "items", 0), (ITEM_DELTAS.tag_id, "items", 1), (TREND_DELTAS.tag_id, "trending", 0)])


def test_boot_model_updates_group_entries_by_window():
    updates = boot_model_updates([(7, "n:a", b"1"), (3, "c:b", b"2"), (7, "f:a", b"3")])
    assert updates == [ModelUpdate(3, [("c:b", b"2")]), ModelUpdate(7, [("n:a", b"1"), ("f:a", b"3")])]


def test_a_replay_from_a_snapshot_skips_records_before_the_cutoff():
    lines = ['{"ts": 5}', '{"ts": 10}', "not json", '{"ts": 15}']
    assert _from_cutoff(lines, _event_time, 10, "event") == ['{"ts": 10}', "not json", '{"ts": 15}']
    catalog = ['{"item_id": "a", "ts": 9}', '{"item_id": "b", "created_at": 12}', '{"item_id": "c"}', '{"item_id": "bad id"}']
    # A catalog line without ts takes effect at created_at, else at 0: before any cutoff.
    assert [_catalog_time(line) for line in catalog] == [9, 12, 0, -1]
    assert _from_cutoff(catalog, _catalog_time, 10, "catalog") == catalog[1:2] + catalog[3:]


# -- the command line ------------------------------------------------------------------------


def refused(argv: list[str], capsys) -> str:
    """What `flowrec` printed when it refused ``argv`` as bad usage (exit status 2)."""
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_run_refuses_a_missing_corrupt_or_mismatched_snapshot(backfilled, tmp_path: Path, capsys):
    events_path, snap = backfilled[3], backfilled[5]
    assert re.search("cannot start from snapshot .*no complete snapshot", refused(["run", "--events", str(events_path), "--bootstrap", str(tmp_path / "nothing")], capsys))
    assert re.search(r"cannot start from snapshot .*other model settings \(model_refresh_ms: snapshot 60000, now 1000\)", refused(["run", "--events", str(events_path), "--bootstrap", str(snap)], capsys))  # default model settings
    config_file = tmp_path / "model.json"
    config_file.write_text(orjson.dumps(CONFIG.to_dict()).decode())
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in snap.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "items.parquet").write_bytes(b"PAR1 not parquet")
    assert re.search("cannot start from snapshot .*malformed snapshot", refused(["run", "--events", str(events_path), "--model-config", str(config_file), "--bootstrap", str(broken)], capsys))
    pq.write_table(pa.table({"item": ["a"]}), broken / "items.parquet")
    assert re.search("cannot start from snapshot .*malformed snapshot: KeyError", refused(["run", "--events", str(events_path), "--model-config", str(config_file), "--bootstrap", str(broken)], capsys))
    assert re.search("--bootstrap starts a new job", refused(["run", "--events", str(events_path), "--model-config", str(config_file), "--bootstrap", str(snap), "--restore", str(tmp_path)], capsys))


def test_submit_checks_the_snapshot_before_contacting_a_cluster_and_forwards_it(backfilled, tmp_path: Path, monkeypatch):
    events_path, snap = backfilled[3], backfilled[5]
    parser = cli.build_parser(cli._available())
    args = parser.parse_args(["submit", "--events", str(events_path), "--redis-url", "redis://127.0.0.1:1/0", "--bootstrap", str(tmp_path / "none")])
    with pytest.raises(UsageError, match="cannot start from snapshot"):
        submit.main(args)
    args = parser.parse_args(["submit", "--events", str(events_path), "--redis-url", "redis://127.0.0.1:1/0", "--bootstrap", str(snap), "--restore", "/sp"])
    with pytest.raises(UsageError, match="--bootstrap starts a new job"):
        submit.main(args)
    monkeypatch.chdir(snap.parent)
    argv = submit.job_arguments(parser.parse_args(["submit", "--spool-dir", "/s", "--bootstrap", snap.name]))
    assert argv[argv.index("--bootstrap") + 1] == str(snap), "the path goes to the Flink client absolute"
