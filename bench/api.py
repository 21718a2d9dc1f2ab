"""`flowrec bench api`: latency and throughput of the main read routes, for several API variants side by side.

One run: start a private redis-server and seed one user's list, the global
trending list and one item's neighbours.  Then, for each variant in
``--variants`` (see :data:`VARIANTS`), start the API (``uvicorn`` in a
subprocess of the same Python, ``--workers`` workers, the options of
``flowrec serve``) and, for each route in ``--routes`` (the home list,
similar items, trending), warm it up and drive it over ``--concurrency``
keep-alive HTTP/1.1 connections until ``--requests`` responses arrived:
closed loop (each connection sends again as soon as it has its answer: the
most the server can do), or with ``--rate`` at a fixed offered load (latency
counted from each request's due time, so queueing shows; this is how "p99 at
N requests/s" is measured).  Each run starts with the next variant, so drift
in the machine's other load weighs on all of them alike; with ``--runs`` the
medians are reported.  Before and after the HTTP load, redis-py GETs the
home list's key one after another on one connection: the rate of simply
asking Redis, for scale.

The variants exist to justify the API's two special paths: the hand-written
pipelined Redis client (:mod:`api.redisconn`) and the home-list shortcut past
FastAPI's parameter handling (:class:`api.middleware.HomeListShortcut`),
against ``redis.asyncio`` (hiredis) and plain FastAPI routes.

The closed-loop generator is ``wrk`` when installed (C, one thread; latency
percentiles from its ``--latency`` report), else, and always for ``--rate``,
a callback-based asyncio client (no coroutine per request, uvloop when
available) that stays cheap next to the server.  Either way it shares the
machine's cores with the server and Redis: on a small machine the numbers are
a lower bound.  ``server_cpu_us_per_request`` (CPU seconds of the API
processes per answer) is the number least disturbed by other load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from api.ready import wait_ready

log = logging.getLogger(__name__)

HELP = "latency and requests/s of the main read routes, the shipped API next to redis.asyncio + plain FastAPI routes"

BENCH_USER = "bench-user"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, default=32, help="open keep-alive connections, each with one request in flight")
    parser.add_argument("--requests", type=int, default=20_000, help="responses to collect per run (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2_000, help="requests sent before measuring")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the API")
    parser.add_argument("--n", type=int, default=10, help="items asked for per request")
    parser.add_argument("--list-size", type=int, default=20, help="items in the seeded user list")
    parser.add_argument("--rate", type=float, default=None, help="offer this many requests/s (python client) instead of as many as the server answers; latency then counts from each request's due time")
    parser.add_argument("--runs", type=int, default=1, help="repeat the measurement; the medians are reported")
    parser.add_argument("--client", choices=("auto", "python", "wrk"), default="auto", help="load generator (auto: wrk when installed)")
    parser.add_argument("--variants", default=",".join(list(VARIANTS)[:2]), help=f"comma-separated API variants to compare in each run, from: {', '.join(VARIANTS)}")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated read routes to drive, from: {', '.join(ROUTES)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


# -- latency summary ---------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values by linear interpolation between closest ranks."""
    if not sorted_values:
        return float("nan")
    position = q * (len(sorted_values) - 1)
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


@dataclass(frozen=True)
class LoadResult:
    """One load run: responses, errors (non-200 or broken), elapsed seconds and latency quantiles in ms."""

    responses: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.responses / self.seconds if self.seconds > 0 else 0.0


# -- the asyncio load generator ----------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, parse the response, record, send the next one."""

    def __init__(self, driver: "_Driver") -> None:
        self.driver = driver
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        due = self.driver.next_due()
        if due is None:
            self.transport.close()
            return
        delay = due - time.perf_counter()
        if delay > 0:
            # Free before the request is due: latency counts from the actual send, so the
            # event loop's millisecond timer granularity is not charged to the server.
            self.driver.loop.call_later(delay, self._write_now)
        else:
            # Overdue (no connection was free in time): the wait counts.
            self.due = due
            self.transport.write(self.driver.request)

    def _write_now(self) -> None:
        self.due = time.perf_counter()
        self.transport.write(self.driver.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end])
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
            length = int(match.group(1)) if match else 0
            total = head_end + 4 + length
            if len(self.buffer) < total:
                return
            ok = head.startswith(b"HTTP/1.1 200")
            del self.buffer[:total]
            self.driver.record(time.perf_counter() - self.due, ok)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.closed()


class _Driver:
    """Hands out a fixed number of requests to the connections and collects latencies.

    Closed loop (``rate=None``): a connection sends its next request as soon as
    the previous answer arrived, so the load is as high as the server allows.
    Fixed rate: request ``k`` is due at ``start + k / rate``; when no
    connection was free at that time its latency is counted from the due time,
    so waiting for the server counts too (no coordinated omission).
    """

    def __init__(self, request: bytes, total: int, connections: int, rate: float | None, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.total = total
        self.issued = 0
        self.rate = rate
        self.loop = loop
        self.start = time.perf_counter()
        self.latencies: list[float] = []
        self.errors = 0
        self.open = connections
        self.done = loop.create_future()

    def next_due(self) -> float | None:
        """When the next request should go out (perf_counter seconds), or None when all were issued."""
        if self.issued >= self.total:
            return None
        ticket = self.issued
        self.issued += 1
        if self.rate is None:
            return time.perf_counter()
        return self.start + ticket / self.rate

    def record(self, seconds: float, ok: bool) -> None:
        self.latencies.append(seconds)
        if not ok:
            self.errors += 1

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


async def _drive(host: str, port: int, path: str, total: int, concurrency: int, rate: float | None) -> LoadResult:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    connections = min(concurrency, total)
    driver = _Driver(request, total, connections, rate, loop)
    for _ in range(connections):
        await loop.create_connection(lambda: _Connection(driver), host, port)
    await driver.done
    seconds = time.perf_counter() - driver.start
    latencies = sorted(driver.latencies)
    return LoadResult(len(latencies), driver.errors + (total - len(latencies)), seconds, percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3)


def python_load(host: str, port: int, path: str, total: int, concurrency: int, rate: float | None = None) -> LoadResult:
    """Drive ``total`` requests over ``concurrency`` connections, closed loop or at ``rate`` requests/s."""
    try:
        import uvloop

        return uvloop.run(_drive(host, port, path, total, concurrency, rate))
    except ImportError:
        return asyncio.run(_drive(host, port, path, total, concurrency, rate))


# -- wrk -----------------------------------------------------------------------------------

_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Responses, errors, seconds and p50/p99 from ``wrk --latency`` output."""
    dist = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", output, re.MULTILINE))
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if not done or "50" not in dist or "99" not in dist:
        raise ValueError("unreadable wrk output:\n" + output)
    errors = sum(int(k) for k in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(k) for k in socket_errors.groups())
    seconds = _wrk_ms(done.group(2) + done.group(3)) / 1e3
    return LoadResult(int(done.group(1)), errors, seconds, _wrk_ms(dist["50"]), _wrk_ms(dist["99"]))


def wrk_load(url: str, seconds: float, concurrency: int) -> LoadResult:
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", url], capture_output=True, text=True, check=True)
    return parse_wrk(out.stdout)


# -- server CPU --------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its direct children (Linux /proc; None elsewhere)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        pids = [pid]
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for p in pids:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / ticks
    except (OSError, ValueError, IndexError):
        return None


# -- raw redis ---------------------------------------------------------------------------


def redis_get_rate(url: str, key: str, total: int) -> float:
    """GETs per second of one key with redis-py (hiredis parser when installed), one connection, one at a time."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for _ in range(min(1000, total)):
            client.get(key)
        started = time.perf_counter()
        for _ in range(total):
            client.get(key)
        return total / (time.perf_counter() - started)
    finally:
        client.close()


# -- the API variants compared -------------------------------------------------------------


def redis_asyncio_client(url: str, deadline_s: float) -> Any:
    """redis-py's asyncio client (hiredis parser when installed), the API's deadline as its socket timeouts."""
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, socket_timeout=deadline_s, socket_connect_timeout=deadline_s)


# How the API reads Redis and answers the plain home list: name -> create_app options.
# The first is the API as shipped (hand-written pipelined client, home-list shortcut);
# the second the plain alternative (redis.asyncio, every request through FastAPI's routes).
VARIANTS: dict[str, dict[str, Any]] = {
    "handwritten+shortcut": {},
    "redis-asyncio+fastapi": {"read_client": redis_asyncio_client, "home_shortcut": False},
    "redis-asyncio+shortcut": {"read_client": redis_asyncio_client},
    "handwritten+fastapi": {"home_shortcut": False},
}
VARIANT_ENV = "FLOWREC_BENCH_VARIANT"
BENCH_ITEM = "i000000"
# The main read routes, each as the request the bench sends.
ROUTES: dict[str, str] = {
    "home": f"/v1/users/{BENCH_USER}/recommendations?n={{n}}",
    "similar": f"/v1/items/{BENCH_ITEM}/similar?n={{n}}",
    "trending": "/v1/trending?n={n}",
}


def variant_app():
    """``uvicorn --factory`` entry: the API with settings from the environment, in the variant named by ``FLOWREC_BENCH_VARIANT``."""
    from api.app import create_app, freeze_startup_objects
    from flowrec.config import load_settings

    app = create_app(load_settings(None), **VARIANTS[os.environ[VARIANT_ENV]])
    freeze_startup_objects()
    return app


# -- one run -----------------------------------------------------------------------------


def seed_redis(url: str, list_size: int) -> str:
    """The lists the routes read: one user's list of ``list_size``, global trending, one item's neighbours; returns the user list's key."""
    from state.keys import KeyKind
    from state.store import RedisStore, ScoredItem, Write, encode_list
    from transforms.reasons import because_you

    store = RedisStore.from_url(url)
    items = [ScoredItem(f"i{k:06d}", round(1.0 - k / (2 * list_size), 6), because_you("view", f"i{k + 1000:06d}")) for k in range(list_size)]
    trending = [ScoredItem(f"t{k:06d}", float(50 - k)) for k in range(50)]
    neighbours = [ScoredItem(f"i{k:06d}", round(1.0 - k / 100, 6)) for k in range(1, 51)]
    content = [ScoredItem(f"i{k:06d}", round(0.9 - k / 200, 6)) for k in range(20, 70)]
    store.write(
        [
            # Labelled with its variant like every list the job writes (here: no experiment).
            Write(KeyKind.USER_RECS, BENCH_USER, encode_list(1_700_000_000_000, items, experiment="~", variant="~")),
            Write(KeyKind.TRENDING_GLOBAL, None, encode_list(1_700_000_000_000, trending)),
            Write(KeyKind.ITEM_NEIGHBOURS, BENCH_ITEM, encode_list(1_700_000_000_000, neighbours)),
            Write(KeyKind.CONTENT_NEIGHBOURS, BENCH_ITEM, encode_list(1_700_000_000_000, content)),
        ]
    )
    key = store.key(KeyKind.USER_RECS, BENCH_USER)
    store.client.close()
    return key


def _measure(args: argparse.Namespace, client: str, host: str, port: int, path: str, pid: int) -> dict[str, Any]:
    """Warm up, then one load run on ``path``: req/s, p50/p99, errors, server CPU per request."""
    python_load(host, port, path, args.warmup, args.concurrency)
    cpu_before = process_cpu_seconds(pid)
    if client == "wrk":
        # wrk runs for a duration: aim at about --requests responses from a short probe's rate.
        probe = python_load(host, port, path, min(args.requests, 2000), args.concurrency)
        cpu_before = process_cpu_seconds(pid)
        load = wrk_load(f"http://{host}:{port}{path}", args.requests / max(probe.requests_per_s, 1.0), args.concurrency)
    else:
        load = python_load(host, port, path, args.requests, args.concurrency, args.rate)
    cpu_after = process_cpu_seconds(pid)
    return {
        "requests_per_s": load.requests_per_s,
        "latency_ms": {"p50": load.p50_ms, "p99": load.p99_ms},
        "responses": load.responses,
        "errors": load.errors,
        # CPU the API processes spent per answered request: unlike requests/s, this barely depends on
        # what else the machine is running.
        "server_cpu_us_per_request": (cpu_after - cpu_before) / load.responses * 1e6 if cpu_before is not None and cpu_after is not None and load.responses else None,
    }


def _serve_variant(variant: str, host: str, port: int, workers: int, redis_url: str) -> subprocess.Popen:
    # The same uvicorn options as `flowrec serve` (no access log, no proxy or server headers).
    command = [sys.executable, "-m", "uvicorn", "bench.api:variant_app", "--factory", "--host", host, "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log", "--no-proxy-headers", "--no-server-header"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWREC_")}
    env.update({"REDIS_URL": redis_url, VARIANT_ENV: variant})
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_once(args: argparse.Namespace, client: str, variants: list[str], routes: list[str]) -> dict[str, Any]:
    """One run: every variant's API against the same seeded redis-server, every route in turn."""
    from flowrec.localredis import LocalRedis, free_port

    host = "127.0.0.1"
    results: dict[str, dict[str, Any]] = {}
    with LocalRedis() as redis_server:
        key = seed_redis(redis_server.url, args.list_size)
        get_before = redis_get_rate(redis_server.url, key, args.requests)
        for variant in variants:
            port = free_port()
            server = _serve_variant(variant, host, port, args.workers, redis_server.url)
            try:
                wait_ready(f"http://{host}:{port}", server)
                results[variant] = {route: _measure(args, client, host, port, ROUTES[route].format(n=args.n), server.pid) for route in routes}
            finally:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
        # Raw GETs before and after the HTTP load, averaged: other load on a shared machine drifts.
        get_after = redis_get_rate(redis_server.url, key, args.requests)
    return {"redis_get_per_s": (get_before + get_after) / 2, "variants": results}


def _names(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
    return names


def main(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the readiness polls are not news
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") and args.rate is None else "python"
    if args.rate is not None and client == "wrk":
        print("--rate needs the python load generator (wrk has no fixed-rate mode)", file=sys.stderr)
        return 2
    elif client == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk), use --client python", file=sys.stderr)
        return 2
    try:
        variants = _names(args.variants, VARIANTS, "variant")
        routes = _names(args.routes, ROUTES, "route")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    runs = []
    for index in range(max(1, args.runs)):
        # Each run starts with a different variant, so slow drift of the machine's load weighs on all alike.
        shift = index % len(variants)
        runs.append(run_once(args, client, variants[shift:] + variants[:shift], routes))

    def median(values) -> float | None:
        values = list(values)
        return statistics.median(values) if values and all(v is not None for v in values) else None

    table = {
        variant: {
            route: {
                "requests_per_s": median(r["variants"][variant][route]["requests_per_s"] for r in runs),
                "latency_ms": {q: median(r["variants"][variant][route]["latency_ms"][q] for r in runs) for q in ("p50", "p99")},
                "server_cpu_us_per_request": median(r["variants"][variant][route]["server_cpu_us_per_request"] for r in runs),
                "errors": sum(r["variants"][variant][route]["errors"] for r in runs),
            }
            for route in routes
        }
        for variant in variants
    }
    result = {
        "client": client,
        "concurrency": args.concurrency,
        "offered_rate": args.rate,
        "workers": args.workers,
        "requests": args.requests,
        "runs": len(runs),
        "cpus": os.cpu_count(),
        "routes": {route: ROUTES[route].format(n=args.n) for route in routes},
        "variants": table,
        "redis_get_per_s": median(r["redis_get_per_s"] for r in runs),
        "errors": sum(cell["errors"] for cells in table.values() for cell in cells.values()),
        "each_run": runs,
    }
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        load = f"offered {args.rate:.0f} requests/s" if args.rate else "closed loop"
        print(f"read routes, {args.concurrency} connections ({load}), {args.workers} worker(s), {client} load generator, median of {len(runs)} run(s) on {os.cpu_count()} CPUs")
        print(f"  {'variant':24} {'route':9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'errors':>7}")
        for variant, cells in table.items():
            for route, cell in cells.items():
                cpu = cell["server_cpu_us_per_request"]
                print(f"  {variant:24} {route:9} {cell['requests_per_s']:8.0f} {cell['latency_ms']['p50']:8.2f} {cell['latency_ms']['p99']:8.2f} {cpu if cpu is not None else float('nan'):11.0f} {cell['errors']:7d}")
        print(f"  redis-py GET/s of the home key, one connection, sequential: {result['redis_get_per_s']:.0f}")
    return 0 if result["errors"] == 0 else 1
