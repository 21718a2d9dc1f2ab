"""Redis crashes for several seconds while the job runs: the sink retries with
backoff, the job does not fail, and the final Redis content equals the
reference engine's (nothing lost, nothing wrong).

What is injected: the redis-server process is killed with SIGKILL (a crash,
not a clean shutdown) in the middle of a bounded replay, stays down for
``OUTAGE_S`` seconds (every connection attempt is refused), and is started
again on the same port.  It runs with an append-only file fsynced on every
write (``appendfsync always``), so the restarted server holds every write it
acknowledged before the crash, as a production Redis used as a store would;
writes that were in flight are not acknowledged, so the sink retries them
(result writes are idempotent SETs).

The job runs as `flowrec run` (the local mini-cluster) in a child process
whose Flink log goes to a private directory: the retry warnings of
:class:`state.store.RedisStore` and the job's state transitions are read from
that log.  The job has no restart attempts, so any exception escaping the sink
fails the job and the command.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from flowrec.config import Settings
from flowrec.localredis import find_redis_server, free_port
from state.keys import KeyKind, redis_key
from tests.pipelines.jobkit import differences, reference_content, results
from transforms.catalog import parse_catalog_lines
from transforms.events import parse_json_lines
from transforms.synthetic import write_shop

pytestmark = [pytest.mark.flink, pytest.mark.faults]

REPO = Path(__file__).resolve().parent.parent.parent
OUTAGE_S = 5.0
# Redis crashes once 1,000 are counted; while it is down the sinks block (the counter cannot move), so
# 1,500 more are ample to be read after the restart (4,000 only made the run longer).
EVENTS = 2500
# Small chunks make the replay last long enough to crash Redis in its middle.
CHUNK_SIZE = 20
RETRY_WARNING = re.compile(r"redis (batch|write|stats|dead-letter|freshness) failed \((ConnectionError|TimeoutError|BusyLoadingError)\), retry (\d+)")


@dataclass
class DurableRedis:
    """A redis-server on a fixed port whose data survives a crash (AOF, fsync on every write)."""

    port: int
    data_dir: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 60.0) -> "DurableRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [find_redis_server(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
                   "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        log = open(self.data_dir / "redis.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited with {self.process.returncode}; see {self.data_dir / 'redis.log'}")
                try:
                    if client.ping():  # answers only once the append-only file is loaded
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} not ready after {timeout_s:.0f}s")
                time.sleep(0.05)
        finally:
            client.close()

    def crash(self) -> None:
        """SIGKILL: no shutdown, no final save; only what was fsynced survives."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def durable_redis(tmp_path: Path):
    server = DurableRedis(free_port(), tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def events_counted(client: redis.Redis) -> int:
    return int(client.hget(redis_key(KeyKind.STATS), "events") or 0)


def child_environment(log_dir: Path) -> dict[str, str]:
    """This environment without flowrec/Flink settings, with the child's Flink log in ``log_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWREC_", "FLINK_")) and k != "REDIS_URL"}
    env["FLINK_LOG_DIR"] = str(log_dir)
    return env


def job_output(output: Path) -> str:
    """The job's Python error lines (if any) and the tail of its output, for failure messages."""
    text = output.read_text(errors="replace")
    errors = [line.strip() for line in text.splitlines() if re.search(r"redis\.exceptions\.|Error: ", line)]
    return "\n".join(errors[-5:] + ["...", text[-3000:]])


def wait_until(what: str, condition, job: subprocess.Popen, output: Path, timeout_s: float = 300.0) -> None:
    """Poll ``condition`` until true; fail early (with the job's output) when the job process ends first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if job.poll() is not None:
            raise AssertionError(f"the job ended (exit {job.returncode}) before {what}:\n{job_output(output)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


def test_redis_crash_mid_run_is_ridden_out_and_the_result_equals_the_reference(durable_redis: DurableRedis, tmp_path: Path):
    shop = write_shop(tmp_path / "shop", users=150, items=100, events=EVENTS, seed=23)
    events_file, catalog_file = tmp_path / "shop" / "events.jsonl", tmp_path / "shop" / "catalog.jsonl"
    events = parse_json_lines(events_file.read_bytes().splitlines()).events
    catalog, rejected = parse_catalog_lines(catalog_file.read_bytes().splitlines())
    assert len(events) == shop.events == EVENTS and not rejected

    log_dir, output = tmp_path / "flink-log", tmp_path / "job-output.txt"
    log_dir.mkdir()
    command = [sys.executable, "-m", "flowrec.cli", "run", "--events", str(events_file), "--catalog", str(catalog_file),
               "--redis-url", durable_redis.url, "--batch-size", str(CHUNK_SIZE), "--parallelism", "2",
               "--restart-attempts", "0", "--checkpoint-dir", str(tmp_path / "checkpoints")]
    client = redis.Redis.from_url(durable_redis.url, socket_connect_timeout=1, socket_timeout=5)
    with open(output, "wb") as out:
        # Its own process group: on a failure the command and its Flink JVM are killed together.
        job = subprocess.Popen(command, cwd=REPO, env=child_environment(log_dir), stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until("the job counted 1000 events", lambda: events_counted(client) >= 1000, job, output)
        durable_redis.crash()
        crashed_at = time.monotonic()
        client.close()
        # Down for OUTAGE_S: the sinks' connections are refused, they back off and retry.
        time.sleep(OUTAGE_S)
        assert job.poll() is None, f"the job ended while Redis was down:\n{job_output(output)}"
        durable_redis.start()
        downtime_s = time.monotonic() - crashed_at
        counted_at_restart = events_counted(client)
        assert 1000 <= counted_at_restart < EVENTS, f"Redis did not crash mid-run ({counted_at_restart} of {EVENTS} events counted)"
        wait_until("more events after the restart", lambda: events_counted(client) > counted_at_restart, job, output)
        returncode = job.wait(timeout=600)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        client.close()
    assert returncode == 0, f"the job failed (exit {returncode}):\n{job_output(output)}"
    assert "job finished" in output.read_text()

    (flink_log,) = log_dir.glob("flink-*-python-*.log")
    log_text = flink_log.read_text(errors="replace")
    transitions = re.findall(r"Job flowrec \([0-9a-f]{32}\) switched from state (\w+) to (\w+)", log_text)
    assert transitions == [("CREATED", "RUNNING"), ("RUNNING", "FINISHED")], "the job neither failed nor restarted"
    retries = RETRY_WARNING.findall(log_text)
    assert retries, "the sinks retried while Redis was down"
    assert {kind for kind, _, _ in retries} >= {"batch"}  # the sinks send each batch as one pipeline
    assert max(int(n) for _, _, n in retries) >= 3, "retries backed off across the outage"

    client = redis.Redis.from_url(durable_redis.url)
    try:
        # Monitoring counters may count a pipeline twice when Redis crashed between fsync and reply.
        assert events_counted(client) >= EVENTS
    finally:
        client.close()
    assert differences(results(durable_redis.url), reference_content(events, catalog, Settings())) == []
    print(f"redis down {downtime_s:.1f}s at {counted_at_restart} of {EVENTS} events; {len(retries)} retry warnings")
