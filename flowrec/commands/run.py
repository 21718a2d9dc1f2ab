"""`flowrec run`: the streaming job on a local Flink mini-cluster."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from flowrec.config import load_settings
from flowrec.localredis import LocalRedis
from pipelines.main import add_job_arguments, choose_source, run_job

def redacted(url: str) -> str:
    """A Redis URL with its password (if any) replaced, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


HELP = "run the streaming job on a local mini-cluster (a private Redis is started when none is configured)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    parser.add_argument("--allow-non-restored-state", action="store_true",
                        help="with --restore: skip savepoint state of operators the new job no longer has (e.g. the bootstrap sources)")


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    source = choose_source(args, settings)
    local = None
    if not settings.redis_url:
        local = LocalRedis().start()
        settings = dataclasses.replace(settings, redis_url=local.url)
        print(f"started a local Redis at {local.url} (set --redis-url or REDIS_URL to use your own)", flush=True)
    try:
        run_job(settings, source, args.restore, args.job_name, allow_non_restored=args.allow_non_restored_state)
        print(f"job finished; results are in {redacted(settings.redis_url)} under '{settings.namespace}:v1:*'", flush=True)
        if local is not None and args.events:
            input("the local Redis stops when you press Enter ... ")
    finally:
        if local is not None:
            local.stop()
    return 0
