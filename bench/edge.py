"""The HTTP edge under abuse: `python -m bench.edge` starts `flowrec serve` and prints what it does with

* 40 connections each sending a 4 MiB request head that never ends (the server's RSS before and after),
* one 1 MiB header and one request with 2,000 headers (the status answered),
* 200 slowloris connections dribbling a header line every second (how many the server closed, and when),
* more idle connections than the server's cap (how many were turned away at once),

plus how long four concurrent 10,000-event POSTs stall lookups sent meanwhile.  Numbers are printed,
never asserted; extra arguments after ``--`` go to `flowrec serve` (e.g. ``-- --header-timeout-s 5``).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson

from api.ready import wait_ready
from flowrec.localredis import LocalRedis, free_port
from tests.envkit import clean_environment

KEY = "bench-edge-key"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def first_status(sock: socket.socket) -> str:
    """The status line the server sent, "closed" if it closed without one, "none" if it sent nothing in 5 s."""
    sock.settimeout(5)
    try:
        data = sock.recv(200)
    except (socket.timeout, TimeoutError):
        return "none"
    except OSError:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"


def huge_heads(port: int, pid: int, connections: int = 40, head_bytes: int = 4 << 20) -> None:
    before = rss_mb(pid)
    peak = before
    chunk = b"X-Filler: " + b"a" * (64 * 1024)
    outcomes: dict[str, int] = {}

    def one() -> None:
        nonlocal peak
        sock = connect(port)
        sent = 0
        outcome = "sent all"
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            while sent < head_bytes:
                sock.sendall(chunk)
                sent += len(chunk)
                peak = max(peak, rss_mb(pid))
        except OSError:
            outcome = "cut off by the server"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        time.sleep(0.5)
        peak = max(peak, rss_mb(pid))
        sock.close()

    threads = [threading.Thread(target=one) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{connections} x {head_bytes >> 20} MiB unterminated heads: RSS {before:.0f} MB before, peak {peak:.0f} MB, {rss_mb(pid):.0f} MB after; {outcomes}")


def big_header_and_many_headers(port: int) -> None:
    sock = connect(port)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    except OSError:
        pass
    print(f"one 1 MiB header: {first_status(sock)}")
    sock.close()
    sock = connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n")
    print(f"2,000 headers: {first_status(sock)}")
    sock.close()


def slowloris(port: int, connections: int = 200, watch_s: float = 20.0) -> None:
    socks = [connect(port) for _ in range(connections)]
    for sock in socks:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
    started = time.monotonic()
    closed_at: dict[int, float] = {}
    while time.monotonic() - started < watch_s and len(closed_at) < connections:
        time.sleep(1.0)
        for i, sock in enumerate(socks):
            if i in closed_at:
                continue
            try:
                if sock.recv(4096) == b"":
                    closed_at[i] = time.monotonic() - started
                    continue
                closed_at[i] = time.monotonic() - started  # the server answered (a 408) and closes
                continue
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - started
                continue
            try:
                sock.send(b"X-a: b\r\n")
            except OSError:
                closed_at[i] = time.monotonic() - started
    for sock in socks:
        sock.close()
    times = sorted(closed_at.values())
    when = f", closed after {times[0]:.1f}-{times[-1]:.1f} s" if times else ""
    print(f"{connections} slowloris connections watched {watch_s:.0f} s: {len(closed_at)} closed by the server{when}")


def connection_cap(port: int, connections: int) -> None:
    socks, refused = [], 0
    for _ in range(connections):
        try:
            socks.append(connect(port))
        except OSError:
            refused += 1
    time.sleep(0.5)
    turned_away = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            data = sock.recv(200)
            turned_away += 1 if data.startswith(b"HTTP/1.1 503") or data == b"" else 0
        except BlockingIOError:
            pass
        except OSError:
            turned_away += 1
    for sock in socks:
        sock.close()
    print(f"{connections} idle connections: {turned_away + refused} turned away at once")


def ingest_stalls_lookups(base: str, posts: int = 4, events: int = 10_000, rounds: int = 5) -> None:
    # Encoded once: the bench's own JSON encoding would compete with its reader for this process's GIL.
    body = orjson.dumps([{"user_id": f"u{i % 500}", "item_id": f"i{i % 300}", "event_type": "view"} for i in range(events)])
    stop = threading.Event()
    latencies: list[float] = []

    def reader() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                started = time.perf_counter()
                client.get("/v1/trending")
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.002)

    def writer() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            client.post("/v1/events", content=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.5)
    idle = list(latencies)
    worst: list[float] = []
    during: list[float] = []
    for _ in range(rounds):
        start = len(latencies)
        writers = [threading.Thread(target=writer) for _ in range(posts)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        this_round = latencies[start:]
        during += this_round
        worst.append(max(this_round))
    stop.set()
    thread.join()
    print(f"lookups while {posts} concurrent {events:,}-event POSTs ran ({rounds} rounds): n={len(during)}, median {statistics.median(during):.1f} ms, "
          f"worst per round median {statistics.median(worst):.0f} ms (max {max(worst):.0f} ms); idle median {statistics.median(idle):.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cap-probe", type=int, default=1100, help="idle connections opened to probe the connection cap")
    parser.add_argument("--only", choices=("heads", "slowloris", "cap", "ingest"), default=None, help="run one scenario")
    parser.add_argument("serve_args", nargs="*", help="extra `flowrec serve` flags (after --)")
    args = parser.parse_args()
    redis_server = LocalRedis().start()
    spool = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    port = free_port()
    command = [sys.executable, "-m", "flowrec.cli", "serve", "--port", str(port), "--redis-url", redis_server.url, "--api-keys", KEY,
               "--spool-dir", str(spool), *args.serve_args]
    server = subprocess.Popen(command, env=clean_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        if args.only in (None, "heads"):
            huge_heads(port, server.pid)
            big_header_and_many_headers(port)
        if args.only in (None, "slowloris"):
            slowloris(port)
        if args.only in (None, "cap"):
            connection_cap(port, args.cap_probe)
        if args.only in (None, "ingest"):
            ingest_stalls_lookups(base)
    finally:
        server.terminate()
        server.wait(timeout=30)
        redis_server.stop()
        subprocess.run(["rm", "-rf", str(spool)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
