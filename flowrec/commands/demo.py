"""`flowrec demo`: the whole product on one machine, on its embedded defaults.

1. generates a synthetic shop (catalog + shoppers' sessions);
2. starts a private Redis unless one is configured;
3. runs the streaming job on a local Flink mini-cluster, watching a spool directory;
4. serves the API, the demo page (`/demo`) and the dashboard (`/dashboard`);
5. replays the shop's sessions live into the spool (re-timestamped to now), and
   prints a few shoppers' lists as they change.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import redis

from api.spool import write_spool_file
from flowrec.config import (
    CommandError,
    UsageError,
    add_settings_arguments,
    load_settings,
    non_negative_seconds,
    port_number,
    positive_float,
    redacted_url,
    require_redis,
    whole_number_at_least,
)
from flowrec.localredis import LocalRedis, free_port
from state.keys import KeyKind, redis_key
from state.store import decode_list

HELP = "run the job, the API and a live synthetic shop locally; prints the demo page URL"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path(".flowrec/demo"), help="where the shop, spool and checkpoints go")
    parser.add_argument("--users", type=whole_number_at_least(1), default=400, help="shoppers in the synthetic shop")
    parser.add_argument("--items", type=whole_number_at_least(1), default=250, help="items in the synthetic shop")
    parser.add_argument("--events", type=whole_number_at_least(1), default=60_000, help="events of the synthetic shop to replay")
    parser.add_argument("--rate", type=positive_float, default=300.0, help="events per second replayed live")
    parser.add_argument("--port", type=port_number, default=8000, help="API port (a free one is used if taken)")
    parser.add_argument("--duration", type=non_negative_seconds, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=7)
    add_settings_arguments(parser, only=("redis-url", "namespace", "execution-mode", "model-config", "rec-id-secret"))


def _port(wanted: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            return free_port()


def _feed(events_path: Path, spool: Path, rate: float, stop: threading.Event) -> None:
    """Replay the shop's events into the spool, ``rate`` per second, with ts = now."""
    sent = 0
    started = time.monotonic()
    with open(events_path, "rb") as f:
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate) - sent
            if due <= 0:
                time.sleep(0.05)
                continue
            now_ms = time.time_ns() // 1_000_000
            batch = []
            for _ in range(due):
                line = f.readline()
                if not line:
                    return
                record = orjson.loads(line)
                record["ts"] = now_ms
                batch.append(record)
            write_spool_file(spool, "events", [orjson.dumps(batch) + b"\n"], now_ms)
            sent += len(batch)


def _first_users(events_path: Path, count: int) -> list[str]:
    """The first shoppers to appear in the replay: their lists change first."""
    users: list[str] = []
    with open(events_path, "rb") as f:
        for line in f:
            user = orjson.loads(line)["user_id"]
            if user not in users:
                users.append(user)
                if len(users) == count:
                    break
    return users


def _show(client: redis.Redis, namespace: str, users: list[str], last: dict[str, list[str]]) -> None:
    for user in users:
        _, items, _ = decode_list(client.get(redis_key(KeyKind.USER_RECS, user, namespace)))
        top = [i.item for i in items[:3]]
        if top and top != last.get(user):
            last[user] = top
            shown = "; ".join(f"{i.item} ({i.reason.text if i.reason else ''})" for i in items[:3])
            print(f"  {user}: {shown}", flush=True)


def _watch(settings, events_path: Path, api: subprocess.Popen, job, duration_s: float) -> None:
    """Print shoppers' lists and the counters as they change, until ``duration_s`` (0: Ctrl-C).

    Raises :class:`CommandError` when a part of the demo stops under it (the API process, the job, or
    Redis - e.g. a Redis given with ``--redis-url`` that was shut down): one line saying which, and
    ``main`` still stops the rest.
    """
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    result = job.get_job_execution_result()
    users = _first_users(events_path, 5)
    last: dict[str, list[str]] = {}
    shown_stats = None
    deadline = time.monotonic() + duration_s if duration_s else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            if api.poll() is not None:
                raise CommandError(f"the API process ended with exit status {api.returncode}; stopping the demo")
            try:
                finished = result.done()
            except Exception:  # py4j: the JVM running the mini-cluster is gone (killed, out of memory)
                raise CommandError("the JVM running the streaming job is gone; stopping the demo") from None
            if finished:
                raise CommandError(f"the streaming job stopped: {_job_outcome(result)}; stopping the demo")
            try:
                _show(client, settings.namespace, users, last)
                stats = {k.decode(): v.decode() for k, v in client.hgetall(redis_key(KeyKind.STATS, None, settings.namespace)).items()}
                lags = sorted(int(x) for x in client.lrange(redis_key(KeyKind.FRESHNESS, None, settings.namespace), -500, -1))
            except redis.RedisError as exc:
                raise CommandError(f"Redis at {redacted_url(settings.redis_url)} stopped answering ({exc}); stopping the demo") from None
            if lags:
                line = (f"  [events {stats.get('events', 0)}, lists {stats.get('user_lists', 0)}, "
                        f"freshness p50 {lags[len(lags) // 2]} ms, p99 {lags[int(len(lags) * 0.99)]} ms]")
                if line != shown_stats:  # once the replay has ended nothing changes: say it once
                    print(line, flush=True)
                    shown_stats = line
    finally:
        client.close()


def _job_outcome(result) -> str:
    """One line on how a finished job ended (its failure's first line, without the Java stack)."""
    try:
        result.result()
    except Exception as exc:  # the job failed: py4j wraps the Java exception; its first line says what
        return "failed: " + (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return "it ended"


def main(args: argparse.Namespace) -> int:
    from pipelines.main import run_job, stop_job_quietly
    from pipelines.sources import DirectorySource
    from transforms.synthetic import write_shop

    settings = load_settings(args)
    if settings.redis_url:
        require_redis(settings.redis_url)  # before the work: a Redis that does not answer is a one-line error, not a broken demo
    out = args.out.resolve()
    shop, spool = out / "shop", out / "spool"
    try:
        for folder in (shop, spool / "events", spool / "catalog"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the demo folder {out}: {exc.strerror or exc}") from None
    for old in list((spool / "events").glob("*")) + list((spool / "catalog").glob("*")):
        old.unlink()
    print(f"generating a synthetic shop ({args.users} shoppers, {args.items} items, {args.events} events) in {shop}", flush=True)
    write_shop(shop, users=args.users, items=args.items, events=args.events, seed=args.seed)
    catalog_lines = []
    now_ms = time.time_ns() // 1_000_000
    for line in (shop / "catalog.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        record["ts"] = now_ms  # the whole catalog is known from the start of the demo
        catalog_lines.append(orjson.dumps(record))
    write_spool_file(spool, "catalog", [line + b"\n" for line in catalog_lines], now_ms)

    local = None
    api = None
    job = None
    stop = threading.Event()
    try:
        if not settings.redis_url:
            local = LocalRedis().start()
            settings = dataclasses.replace(settings, redis_url=local.url)
        settings = dataclasses.replace(settings, spool_dir=spool, record_freshness=True, checkpoint_dir=str(out / "checkpoints"))
        port = _port(args.port)
        # The Redis URL (it may hold a password) and the rec_id secret go in the environment: a command line shows
        # in `ps`.  The API and the job share the secret, so the job accepts the rec_ids the API issues.
        api = subprocess.Popen(
            [sys.executable, "-m", "flowrec.cli", "serve", "--demo", "--port", str(port),
             "--namespace", settings.namespace, "--spool-dir", str(spool), "--catalog", str(shop / "catalog.jsonl")],
            env={**os.environ, "FLOWREC_REDIS_URL": settings.redis_url, "FLOWREC_REC_ID_SECRET": settings.rec_id_secret},
        )
        print("starting the streaming job on a local Flink mini-cluster ...", flush=True)
        job = run_job(settings, DirectorySource(spool), job_name="flowrec-demo", wait=False)
        feeder = threading.Thread(target=_feed, args=(shop / "events.jsonl", spool, args.rate, stop), daemon=True)
        feeder.start()
        print(f"\n  demo page:  http://127.0.0.1:{port}/demo\n  dashboard:  http://127.0.0.1:{port}/dashboard\n  API docs:   http://127.0.0.1:{port}/docs\n  Redis:      {redacted_url(settings.redis_url)}\n", flush=True)
        print(f"replaying the shop live at {args.rate:g} events/s; shoppers' top 3 as they change (Ctrl-C stops):", flush=True)
        _watch(settings, shop / "events.jsonl", api, job, args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if job is not None:
            stop_job_quietly(job)
        if api is not None:
            api.terminate()
            try:
                api.wait(timeout=15)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
        if local is not None:
            local.stop()
    return 0
