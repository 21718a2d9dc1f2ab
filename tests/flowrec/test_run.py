"""`flowrec run` as a user runs it: a real process, a real mini-cluster, a real redis-server.

A bounded replay without a Redis URL keeps its private Redis (with the results) when
nobody can answer a prompt, prints progress and a summary; a live job reads its catalog
from a second socket and stops quietly on SIGTERM.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import redis

from flowrec.commands.run import keep_local_redis
from tests.envkit import clean_environment
from transforms.synthetic import write_shop

REPO = Path(__file__).resolve().parents[2]
EVENTS = 600
PROGRESS = re.compile(r"^\d+ s: events [\d,]+ \([\d,]+/s\), lists written [\d,]+, dead letters [\d,]+, late events [\d,]+", re.M)


def flowrec(*argv: str) -> list[str]:
    return [sys.executable, "-m", "flowrec.cli", *argv]


@pytest.mark.flink
def test_a_bounded_run_without_redis_keeps_the_results_and_reports_progress(tmp_path: Path):
    shop = tmp_path / "shop"
    write_shop(shop, users=40, items=30, events=EVENTS, seed=5)
    temp = tmp_path / "tmp"  # the command's TMPDIR: what it leaves there is seen
    temp.mkdir()
    done = subprocess.run(
        flowrec("run", "--events", str(shop / "events.jsonl"), "--catalog", str(shop / "catalog.jsonl"), "--progress-interval", "1",
                "--restart-attempts", "0", "--checkpoint-dir", str(tmp_path / "checkpoints")),
        cwd=REPO, env=clean_environment(TMPDIR=str(temp)), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )
    kept = re.search(r"keeps running with the results: (redis://127\.0\.0\.1:\d+/0) \(process (\d+)", done.stderr)
    try:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert "Traceback" not in done.stderr and "EOFError" not in done.stderr
        # Nobody could answer a prompt: the private Redis stays up, and the command says where it is and how to stop it.
        assert kept, done.stderr[-3000:]
        url, pid = kept.group(1), int(kept.group(2))
        assert f"stop it with: kill {pid}" in done.stderr
        client = redis.Redis.from_url(url)
        assert int(client.hget("flowrec:v1:stats", "events")) == EVENTS
        assert client.keys("flowrec:v1:rec:*"), "the users' lists are still there"
        client.close()
        # Progress while it ran, and a summary like `flowrec replay`'s at the end.
        assert PROGRESS.search(done.stderr), done.stderr[-3000:]
        summary = dict(pair.split("=", 1) for pair in done.stdout.split())
        assert int(summary["events"]) == EVENTS and int(summary["dead_letters"]) == 0 and int(summary["user_lists"]) > 0
        assert float(summary["seconds"]) > 0 and float(summary["events_per_s"]) > 0
        # The packed copy of the replayed events is gone; only the kept Redis's folder stays.
        assert [p.name for p in temp.glob("flowrec-replay-*")] == []
        assert [p.name for p in temp.glob("flowrec-redis-*")], "the kept Redis's folder is under TMPDIR"
    finally:
        if kept:
            os.kill(int(kept.group(2)), signal.SIGTERM)


class LineServer:
    """A TCP server on a free loopback port that sends ``lines()`` to the one client that connects."""

    def __init__(self, lines) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(lines,), daemon=True)
        self.thread.start()

    def _serve(self, lines) -> None:
        self.sock.settimeout(1.0)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                break
            except socket.timeout:
                continue
        else:
            return
        with conn:
            try:
                for line in lines(self.stop):
                    conn.sendall(line)
                self.stop.wait()  # keep the connection open: a closed socket ends the job's source
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.mark.flink
def test_a_live_socket_job_reads_its_catalog_socket_and_stops_quietly_on_sigterm(tmp_path: Path, redis_client, redis_url):
    shop = tmp_path / "shop"
    write_shop(shop, users=30, items=20, events=3000, seed=3)
    catalog = [orjson.loads(line) for line in (shop / "catalog.jsonl").read_bytes().splitlines()]
    events = [orjson.loads(line) for line in (shop / "events.jsonl").read_bytes().splitlines()]

    def catalog_lines(stop):
        now = time.time_ns() // 1_000_000
        yield b"".join(orjson.dumps({**item, "ts": now}) + b"\n" for item in catalog)

    def event_lines(stop):
        for start in range(0, len(events), 20):
            if stop.wait(0.1):
                return
            now = time.time_ns() // 1_000_000
            yield b"".join(orjson.dumps({**event, "ts": now}) + b"\n" for event in events[start : start + 20])

    catalog_server, event_server = LineServer(catalog_lines), LineServer(event_lines)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        # A session of its own: SIGTERM goes to the whole process group, the JVM included (as `timeout`, systemd or docker do).
        job = subprocess.Popen(
            flowrec("run", "--socket", f"127.0.0.1:{event_server.port}", "--socket-catalog", f"127.0.0.1:{catalog_server.port}",
                    "--redis-url", redis_url, "--progress-interval", "1", "--checkpoint-dir", str(tmp_path / "checkpoints")),
            cwd=REPO, env=clean_environment(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        item = catalog[0]["item_id"]
        deadline = time.monotonic() + 300
        while not (redis_client.exists(f"flowrec:v1:item:{item}") and redis_client.keys("flowrec:v1:content:*")
                   and re.search(r"events [1-9][\d,]* .*\(lag [\d,.]+ s\)", log.read_text())):
            assert job.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, "no catalog item, content list or progress line within 300 s:\n" + log.read_text()[-4000:]
            time.sleep(0.5)
        # The catalog came through its socket: the item's facts are the catalog's.
        assert orjson.loads(redis_client.get(f"flowrec:v1:item:{item}"))["title"] == catalog[0]["title"]
        os.killpg(job.pid, signal.SIGTERM)
        returncode = job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        event_server.close()
        catalog_server.close()
    output = log.read_text()
    assert returncode == 128 + signal.SIGTERM, output[-4000:]
    after_signal = output[output.rindex("(lag"):]
    assert "Traceback" not in output and "py4j" not in after_signal, after_signal[-4000:]
    assert "stopped: events=" in after_signal


class Terminal(io.StringIO):
    """Keyboard input on a terminal: what the user types, then end of input."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "choice, bounded, stdin, kept",
    [
        (None, True, io.StringIO(""), True),  # not a terminal: nobody to ask, keep the results
        (None, True, Terminal("\n"), False),  # Enter on a terminal stops it
        (None, True, Terminal(""), True),  # Ctrl-D keeps it
        (None, False, Terminal("\n"), False),  # a live job's Redis stops with it, no question
        (True, False, io.StringIO(""), True),  # --keep-redis
        (False, True, Terminal("\n"), False),  # --no-keep-redis
    ],
)
def test_the_private_redis_is_kept_or_stopped_as_asked(monkeypatch, capsys, choice, bounded, stdin, kept):
    monkeypatch.setattr(sys, "stdin", stdin)
    assert keep_local_redis(choice, bounded) is kept
    asked = "press Enter to stop the local Redis" in capsys.readouterr().out
    assert asked == (choice is None and bounded and isinstance(stdin, Terminal))
