"""The TaskManager process is killed (SIGKILL) while a submitted job runs on the
standalone cluster: the JobManager notices the loss, `deploy/cluster.sh start`
brings a TaskManager back, the job restarts from its last completed checkpoint
and finishes, and the final Redis content equals the reference engine's on the
same input.  Co-occurrence counts and scores are exact, so equality means no
event was lost and none was counted twice.

Result writes are idempotent (the part replayed since the checkpoint rewrites
the same values); the ``stats`` hash (HINCRBY, monitoring only) may count the
replayed part twice, so it is only checked to be at least the input size.
A second test does the same to a log of impressions and outcomes and checks
attribution's metrics hashes against the independent recount.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import orjson
import pytest
import redis

from flowrec.commands.cluster import TERMINAL_STATES, FlinkRestError
from flowrec.config import Settings
from state.keys import KeyKind, redis_key
from tests.pipelines.jobkit import differences, reference_content, results
from transforms.catalog import parse_catalog_lines
from transforms.events import parse_json_lines
from transforms.synthetic import write_shop

pytestmark = [pytest.mark.cluster, pytest.mark.flink, pytest.mark.faults]

EVENTS = 3000
# Small chunks make the replay last long enough to kill the TaskManager in its middle.
CHUNK_SIZE = 10


def wait_for(what: str, condition, timeout_s: float = 300.0, every_s: float = 0.5):
    """Poll ``condition`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


def events_counted(client: redis.Redis) -> int:
    return int(client.hget(redis_key(KeyKind.STATS), "events") or 0)


def progressed(cluster, job_id: str, client: redis.Redis, min_events: int) -> bool:
    """True once the job has counted ``min_events`` and completed a checkpoint; fails if it left RUNNING."""
    state = cluster.rest.job(job_id)["state"]
    assert state in ("CREATED", "INITIALIZING", "RUNNING"), f"the job is {state} before the fault"
    if events_counted(client) < min_events:
        return False
    return cluster.rest.request("GET", f"/jobs/{job_id}/checkpoints")["counts"]["completed"] >= 1


def healthy(cluster) -> bool:
    """One live TaskManager process, registered alone with all its slots free."""
    try:
        overview = cluster.rest.overview()
    except FlinkRestError:
        return False
    return len(cluster.pids("taskexecutor")) == 1 and overview["taskmanagers"] == 1 and overview["slots-available"] == overview["slots-total"] == 2


def kill_taskmanager_and_bring_one_back(cluster, job_id: str, client: redis.Redis) -> tuple[int, int]:
    """Once the job progressed and checkpointed: SIGKILL the TaskManager, then `cluster.sh start`.

    Returns (events counted at the kill, the killed pid).
    """
    (killed,) = cluster.pids("taskexecutor")
    try:
        wait_for("progress and a completed checkpoint", lambda: progressed(cluster, job_id, client, EVENTS // 5))
        os.kill(killed, signal.SIGKILL)
        counted_at_kill = events_counted(client)
        wait_for("the killed TaskManager to be gone", lambda: killed not in cluster.pids("taskexecutor"), timeout_s=30, every_s=0.2)
    finally:
        # Whatever happened, the session cluster gets its TaskManager back for the next tests.
        restarted = cluster.script("start")
    assert restarted.returncode == 0, restarted.stderr
    assert "starting the missing TaskManager" in restarted.stderr
    (replacement,) = cluster.pids("taskexecutor")
    assert replacement != killed
    return counted_at_kill, killed


def test_killed_taskmanager_restarts_from_a_checkpoint_and_the_result_equals_the_reference(flink_cluster, redis_url, redis_client, tmp_path: Path):
    wait_for("an idle cluster", lambda: healthy(flink_cluster), timeout_s=180)
    shop = write_shop(tmp_path / "shop", users=120, items=80, events=EVENTS, seed=29)
    events_file, catalog_file = tmp_path / "shop" / "events.jsonl", tmp_path / "shop" / "catalog.jsonl"
    events = parse_json_lines(events_file.read_bytes().splitlines()).events
    catalog, rejected = parse_catalog_lines(catalog_file.read_bytes().splitlines())
    assert len(events) == shop.events == EVENTS and not rejected

    submitted = flink_cluster.flowrec(
        "submit", "--events", str(events_file), "--catalog", str(catalog_file), "--redis-url", redis_url,
        "--parallelism", "2", "--batch-size", str(CHUNK_SIZE), "--checkpoint-interval-ms", "1000",
        "--checkpoint-dir", str(tmp_path / "checkpoints"), "--restart-attempts", "10",
        "--job-name", "flowrec-tm-kill", "--jobmanager", flink_cluster.jobmanager, "--timeout", "400",
    )
    assert submitted.returncode == 0, submitted.stderr[-4000:]
    job_id = submitted.stdout.strip()
    try:
        counted_at_kill, killed = kill_taskmanager_and_bring_one_back(flink_cluster, job_id, redis_client)
        assert counted_at_kill < EVENTS, "the TaskManager was killed before the end of the input"
        state = flink_cluster.rest.wait_for_job(job_id, frozenset({"FINISHED"}), timeout_s=480)
    finally:
        # A job left running would hold the slots the next tests need.
        if flink_cluster.rest.job(job_id)["state"] not in TERMINAL_STATES:
            flink_cluster.rest.cancel(job_id)
    assert state == "FINISHED"

    restored = flink_cluster.rest.request("GET", f"/jobs/{job_id}/checkpoints")["latest"]["restored"]
    assert restored is not None and restored["id"] >= 1 and not restored["is_savepoint"], "the job restarted from a completed checkpoint"
    failures = flink_cluster.rest.request("GET", f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert failures, "the job recorded the TaskManager's loss as a failure"

    assert events_counted(redis_client) >= EVENTS
    assert differences(results(redis_url), reference_content(events, catalog, Settings())) == []
    # The session cluster is whole again: the lost TaskManager is dropped, its replacement serves.
    wait_for("the lost TaskManager to be dropped", lambda: healthy(flink_cluster), timeout_s=180)
    print(f"TaskManager {killed} killed at {counted_at_kill} of {EVENTS} events; restored checkpoint {restored['id']}; "
          f"{len(failures)} failure(s) recorded: {failures[0].get('exceptionName')}")


def test_killed_taskmanager_attribution_counts_equal_the_recount(flink_cluster, redis_url, redis_client, tmp_path: Path):
    """Attribution's metrics hashes (HSET of checkpointed totals) survive the kill: each event counts once."""
    from tests.pipelines.jobkit import metric_differences, metrics_of
    from tests.transforms.test_attribution import SECRET, random_log
    from transforms.attribution import recount
    from transforms.events import parse_records

    wait_for("an idle cluster", lambda: healthy(flink_cluster), timeout_s=180)
    log = sorted(random_log(seed=31, users=40, steps=EVENTS), key=lambda r: r["ts"])
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in log))
    submitted = flink_cluster.flowrec(
        "submit", "--events", str(events_file), "--redis-url", redis_url, "--rec-id-secret", SECRET,
        "--parallelism", "2", "--batch-size", str(CHUNK_SIZE), "--checkpoint-interval-ms", "1000",
        "--checkpoint-dir", str(tmp_path / "checkpoints"), "--restart-attempts", "10",
        "--job-name", "flowrec-tm-kill-attribution", "--jobmanager", flink_cluster.jobmanager, "--timeout", "400",
    )
    assert submitted.returncode == 0, submitted.stderr[-4000:]
    job_id = submitted.stdout.strip()
    try:
        counted_at_kill, _ = kill_taskmanager_and_bring_one_back(flink_cluster, job_id, redis_client)
        assert counted_at_kill < len(parse_records(log).events), "the TaskManager was killed before the end of the input"
        state = flink_cluster.rest.wait_for_job(job_id, frozenset({"FINISHED"}), timeout_s=480)
    finally:
        if flink_cluster.rest.job(job_id)["state"] not in TERMINAL_STATES:
            flink_cluster.rest.cancel(job_id)
    assert state == "FINISHED"
    restored = flink_cluster.rest.request("GET", f"/jobs/{job_id}/checkpoints")["latest"]["restored"]
    assert restored is not None and not restored["is_savepoint"], "the job restarted from a completed checkpoint"
    expected = recount(log, Settings().model, SECRET)
    assert expected.minutes and expected.ads
    assert metric_differences(metrics_of(redis_url), expected) == []
    wait_for("the lost TaskManager to be dropped", lambda: healthy(flink_cluster), timeout_s=180)
