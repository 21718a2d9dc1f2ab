"""`flowrec run`: the streaming job on a local Flink mini-cluster.

While the job runs, a progress line (from the job's counters in Redis) goes to
stderr every ``--progress-interval`` seconds; when it ends, a summary goes to
stdout.  Without a Redis URL the results go to a private redis-server; after a
bounded replay it keeps running with them (``--keep-redis``; on a terminal the
command asks), and the command says where it is and how to stop it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

from flowrec.config import UsageError, load_settings, non_negative_seconds, redacted_url, require_redis
from flowrec.localredis import LocalRedis
from flowrec.progress import ProgressReporter
from pipelines.main import add_job_arguments, choose_source, run_job, silence_gateway_logs, stop_job_quietly
from pipelines.sources import FileReplaySource

HELP = "run the streaming job on a local mini-cluster (a private Redis is started when none is configured)"
log = logging.getLogger(__name__)

# How often the job's state is checked while it runs (progress lines come every --progress-interval).
_POLL_S = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument("--allow-non-restored-state", action="store_true",
                        help="with --restore: skip savepoint state of operators the new job no longer has (e.g. the bootstrap sources)")
    output = parser.add_argument_group("output")
    output.add_argument("--progress-interval", type=non_negative_seconds, default=5.0, metavar="SECONDS",
                        help="print the job's progress to stderr every this many seconds (0: never)")
    output.add_argument("--json", action="store_true", help="print the end summary as one JSON object")
    output.add_argument("--keep-redis", action=argparse.BooleanOptionalAction, default=None,
                        help="without --redis-url the results go to a private redis-server: keep it running when the command ends "
                             "(--no-keep-redis: stop it). Default: after a bounded replay (--events), ask on a terminal and keep it "
                             "otherwise; stop it after a live job")


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.restore and "://" not in args.restore and not args.restore.startswith("file:") and not Path(args.restore).exists():
        raise UsageError(f"savepoint or checkpoint not found: {args.restore}")
    source = choose_source(args, settings)
    local = None
    keep = bool(args.keep_redis)
    try:
        if settings.redis_url:
            require_redis(settings.redis_url)
        else:
            local = LocalRedis().start()
            settings = dataclasses.replace(settings, redis_url=local.url)
            print(f"started a local Redis at {local.url} (set --redis-url or REDIS_URL to use your own)", file=sys.stderr, flush=True)
        summary = run_with_progress(settings, source, args)
        print(json.dumps(summary) if args.json else " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
        print(f"job finished; results are in {redacted_url(settings.redis_url)} under '{settings.namespace}:v1:*'", file=sys.stderr, flush=True)
        if local is not None:
            keep = keep_local_redis(args.keep_redis, bounded=bool(args.events))
    finally:
        if isinstance(source, FileReplaySource):
            source.remove_workdir()  # a packed copy of every event replayed: nothing reads it once the job has ended
        if local is not None:
            if keep:
                print(f"the local Redis keeps running with the results: {local.url} (process {local.process.pid}, in memory only, "
                      f"directory {local.workdir})\nstop it with: kill {local.process.pid}; rm -rf {local.workdir}", file=sys.stderr, flush=True)
            else:
                local.stop()
    return 0


def keep_local_redis(choice: bool | None, bounded: bool) -> bool:
    """Whether the private Redis outlives the command: ``--[no-]keep-redis``, else ask on a terminal after a bounded replay."""
    if choice is not None:
        return choice
    if not bounded:
        return False
    if not sys.stdin.isatty():
        return True
    try:
        input("press Enter to stop the local Redis and drop the results (Ctrl-D keeps it running) ... ")
    except EOFError:
        print(file=sys.stderr)
        return True
    return False


def run_with_progress(settings, source, args: argparse.Namespace) -> dict[str, object]:
    """Run the job to its end, printing progress; returns the summary.

    Interrupted (Ctrl-C, SIGTERM), the job is cancelled and the command ends
    without the Java gateway's tracebacks (see :func:`pipelines.main.stop_job_quietly`).
    """
    import redis

    from state.keys import KeyKind, redis_key

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    reporter = ProgressReporter(client, redis_key(KeyKind.STATS, None, settings.namespace), args.progress_interval, sys.stderr, live=not args.events)
    job = None
    finished = False
    try:
        job = run_job(settings, source, args.restore, args.job_name, wait=False, allow_non_restored=args.allow_non_restored_state)
        result = job.get_job_execution_result()
        while not result.done():
            time.sleep(_POLL_S)
            if reporter.due():
                reporter.report()
        result.result()  # raises when the job failed
        finished = True
        return reporter.summary()
    except (KeyboardInterrupt, SystemExit):
        stop_job_quietly(job)
        stopped = reporter.summary()
        print("stopped: " + " ".join(f"{k}={v}" for k, v in stopped.items()), file=sys.stderr, flush=True)
        raise
    finally:
        if not finished and job is not None:
            silence_gateway_logs()
        client.close()
