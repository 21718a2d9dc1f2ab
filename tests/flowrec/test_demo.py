"""`flowrec demo` end to end: the job, the API and the live shop come up, lists appear, and SIGTERM cleans up."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from api.ready import wait_ready
from flowrec.localredis import LocalRedis, free_port
from tests.envkit import clean_environment

pytestmark = pytest.mark.flink

REPO = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(log: Path, pattern: str, process: subprocess.Popen, timeout_s: float) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while True:
        found = re.search(pattern, log.read_text())
        if found:
            return found
        assert process.poll() is None, f"flowrec demo exited with {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {pattern!r} in the demo output within {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.5)


def test_demo_runs_the_shop_live_and_sigterm_stops_everything_it_started(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    command = [
        sys.executable, "-m", "flowrec.cli", "demo", "--out", str(tmp_path / "demo"), "--users", "60", "--items", "40",
        "--events", "4000", "--rate", "400", "--port", str(port), "--duration", "0",
    ]
    with log.open("wb") as out:
        demo = subprocess.Popen(command, cwd=REPO, env=clean_environment(), stdout=out, stderr=subprocess.STDOUT)
    try:
        redis_port = int(_wait_for(log, r"Redis:\s+redis://127\.0\.0\.1:(\d+)/", demo, 120).group(1))
        wait_ready(f"http://127.0.0.1:{port}", demo, timeout_s=60)
        # Lists are being written: the demo prints its progress line once freshness is recorded.
        _wait_for(log, r"\[events \d+, lists [1-9]\d*, freshness p50 \d+ ms", demo, 180)
        assert redis.Redis(port=redis_port).ping()
    finally:
        demo.send_signal(signal.SIGTERM)
        returncode = demo.wait(timeout=90)
    assert returncode == 128 + signal.SIGTERM, log.read_text()
    # What the demo started is gone with it: its API server and its private redis-server.
    assert not _listening(port), "the demo's API still answers"
    assert not _listening(redis_port), "the demo's private redis-server still runs"


def test_demo_ends_with_one_line_when_its_redis_goes_away(tmp_path):
    # A Redis given with --redis-url that is shut down under the demo used to end it with a redis-py traceback.
    port = free_port()
    log = tmp_path / "demo.log"
    with LocalRedis() as server:
        command = [
            sys.executable, "-m", "flowrec.cli", "demo", "--out", str(tmp_path / "demo"), "--users", "60", "--items", "40",
            "--events", "4000", "--rate", "400", "--port", str(port), "--redis-url", server.url,
        ]
        with log.open("wb") as out:
            demo = subprocess.Popen(command, cwd=REPO, env=clean_environment(), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}", demo, timeout_s=300)
            _wait_for(log, r"\[events \d+, lists [1-9]\d*, freshness p50 \d+ ms", demo, 300)
            server.process.kill()
            returncode = demo.wait(timeout=120)
        finally:
            if demo.poll() is None:
                demo.send_signal(signal.SIGTERM)
                demo.wait(timeout=90)
    text = log.read_text()
    assert returncode == 1, text
    assert re.fullmatch(r"flowrec demo: error: Redis at redis://127\.0\.0\.1:\d+/0 stopped answering \(.+\); stopping the demo",
                        text.strip().splitlines()[-1]), text[-3000:]
    assert "flowrec/commands/demo.py" not in text, "no traceback of the demo's own"
    assert not _listening(port), "the demo's API still answers"
