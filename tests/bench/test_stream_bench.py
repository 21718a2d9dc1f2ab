"""Smoke tests of `flowrec bench engine` and `flowrec bench stream` (tiny sizes; no timing assertions),
plus the benchmark helpers whose output can be computed by hand."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import orjson
import pytest

from bench.stream import Sender, compress_time, cpu_by_thread_between, process_tree_usage, thread_cpu
from transforms.events import batch_from_columns


def _flowrec(*args: str, timeout: float, tmpdir: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWREC_") and k != "REDIS_URL"}
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    out = subprocess.run([sys.executable, "-m", "flowrec.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compress_time_spaces_events_at_the_rate_in_time_order():
    events = batch_from_columns(["u1", "u2", "u3", "u4"], ["a", "b", "c", "d"], ["view"] * 4, [5_000, 1_000, 9_000, 3_000])
    out = compress_time(events, rate=400.0)  # 2.5 ms apart
    assert out.ts.tolist() == [1_000, 1_002, 1_005, 1_007]
    assert out.user.tolist() == ["u2", "u4", "u1", "u3"]


def test_sender_stamps_each_event_with_its_due_time():
    a, b = socket.socketpair()
    try:
        sender = Sender(a, ['{"user_id":"u","item_id":"i","event_type":"view","ts":'], interval_s=0.0)
        stats = sender.run(rate=1000.0, seconds=0.01)
        a.shutdown(socket.SHUT_WR)
        data = b"".join(iter(lambda: b.recv(65536), b""))
    finally:
        a.close()
        b.close()
    events = [e for line in data.splitlines() for e in orjson.loads(line)]
    assert stats["offered"] == 10 and len(events) == 10
    gaps = np.diff([e["ts"] for e in events])
    assert set(gaps.tolist()) <= {0, 1, 2} and sum(gaps.tolist()) in (8, 9, 10)  # 1 ms apart, floored to ms
    assert sender.sent_total == 10 and sender.next_event == 10


def test_process_tree_usage_counts_a_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(50 * 2**20); time.sleep(5)"])
    try:
        deadline = 50
        alone = process_tree_usage(child.pid)[0]
        while alone < 50 * 2**20 and deadline:
            import time

            time.sleep(0.1)
            deadline -= 1
            alone = process_tree_usage(child.pid)[0]
        assert alone >= 50 * 2**20
        assert process_tree_usage(os.getpid())[0] >= alone  # the child is in this process's tree
    finally:
        child.kill()
        child.wait()


def test_thread_cpu_names_a_busy_thread_of_a_child():
    """A child's thread named like a Flink task (digits in its name) is found under the child's process name, digits as #."""
    code = (
        "import ctypes, threading, time\n"
        "def spin():\n"
        "    ctypes.CDLL(None).prctl(15, b'scorer -> 42', 0, 0, 0)\n"  # PR_SET_NAME: this thread's name
        "    end = time.process_time() + 0.6\n"
        "    while time.process_time() < end: pass\n"
        "    time.sleep(30)\n"
        "threading.Thread(target=spin, daemon=True).start(); time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        import time

        found: dict[str, float] = {}
        for _ in range(100):
            found = thread_cpu(os.getpid())
            if found.get("python:scorer -> ##", 0) >= 0.5:
                break
            time.sleep(0.1)
        assert found.get("python:scorer -> ##", 0) >= 0.5, found
        assert all(":" in name for name in found)
    finally:
        child.kill()
        child.wait()


def test_cpu_by_thread_between_takes_the_samples_around_the_span():
    samples = [(0.0, {"a": 1.0}), (1.0, {"a": 2.0, "b": 0.5}), (2.0, {"a": 5.0, "b": 0.5, "c": 1.0}), (3.0, {"a": 9.0, "b": 0.5, "c": 1.0})]
    # From the sample at or before 1.2 (t=1) to the first at or after 1.9 (t=2); "b" used nothing then.
    assert cpu_by_thread_between(samples, 1.2, 1.9) == {"a": 3.0, "c": 1.0}
    assert list(cpu_by_thread_between(samples, 0.0, 3.0, top=1)) == ["a"]
    assert cpu_by_thread_between(samples, 1.0, 3.5) == {}  # no sample after the span
    # A thread that ended (its name gone from the last sample) keeps what it used until then.
    ended = samples[:2] + [(2.0, {"a": 5.0, "b": 2.5}), (3.0, {"a": 9.0})]
    assert cpu_by_thread_between(ended, 1.0, 3.0) == {"a": 7.0, "b": 2.0}


def test_bench_engine_prints_positive_numbers():
    result = _flowrec("bench", "engine", "--datasets", "shop", "--events", "3000", "--users", "200", "--items", "100", "--repeats", "1", "--json", timeout=300)
    shop = result["datasets"]["shop"]
    assert shop["events"] == 3000
    for mode in ("oracle", "training", "training_events"):
        assert shop["modes"][mode]["events_per_s"] > 0
        assert shop["modes"][mode]["peak_rss_mb"] > 0
    for base in ("per_event", "parse"):
        assert shop["baselines"][base]["events_per_s"] > 0
    assert set(shop["ratios"]) == {f"{m}_vs_{b}" for m in ("oracle", "training", "training_events") for b in ("per_event", "parse")}
    assert all(v > 0 for v in shop["ratios"].values())


@pytest.mark.flink
def test_bench_stream_prints_positive_numbers(tmp_path):
    """Every part of the bench runs, at tiny sizes and on the RocksDB state backend: the sparse shop (20,000 events by default) and the
    cluster part (by default a cluster of one and one of two TaskManagers) made this test take minutes.  It leaves none of its
    files behind (the shop, the runs' checkpoints: GBs for a large shop)."""
    result = _flowrec(
        "bench", "stream", "--users", "100", "--items", "60", "--events", "2000", "--event-rate", "2000",
        "--naive-events", "100", "--modes", "thread", "--repeats", "1",
        "--high-rate", "1000", "--high-seconds", "0.5", "--low-rate", "200", "--low-seconds", "1", "--warmup-seconds", "0.5",
        "--sparse-events", "1000", "--sparse-users", "50", "--sparse-items", "40", "--cluster-taskmanagers", "1",
        "--state-backend", "rocksdb", "--json",
        timeout=900,
        tmpdir=str(tmp_path),
    )
    assert not list(tmp_path.glob("flowrec-bench-stream-*"))
    for key in ("events_per_s", "naive_events_per_s", "peak_rss_mb", "state_bytes_per_user", "redis_bytes_per_user"):
        assert result[key] > 0, key
    for key in ("freshness_ms", "freshness_1k_ms"):
        assert set(result[key]) >= {"p50", "p95", "p99"}
        assert all(result[key][q] > 0 for q in ("p50", "p95", "p99")), key
        assert result[key]["p50"] <= result[key]["p95"] <= result[key]["p99"]
    # The other parts ran too (the sparse shop through job and engine, the feedback loop, a standalone cluster).
    assert result["sparse"]["events"] == 1000 and result["sparse"]["windows"] > 0 and result["sparse"]["reference_events_per_s"] > 0
    assert result["feedback"]["impression_records"] > 0
    assert all(result["feedback"][name]["cpu_us_per_row"] > 0 for name in ("on", "off"))
    assert set(result["clusters"]) == {"1tm"} and result["clusters"]["1tm"]["runs"][0]["events"] > 0
    assert result["settings"]["state_backend"] == "rocksdb"
    # The replay's CPU per thread: the JVM's task threads (operator chains) are among them.
    assert any(name.startswith("java:") and cpu > 0 for name, cpu in result["by_mode"]["thread"]["runs"][0]["cpu_by_thread"].items())
