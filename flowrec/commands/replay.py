"""`flowrec replay`: the reference engine over event files, results written to Redis.

The reference engine computes exactly what the streaming job computes (the job's
tests compare the two); it needs no JVM, so it is handy for small shops,
for checking a configuration, and for bootstrapping Redis.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from flowrec.config import UsageError, add_settings_arguments, load_settings, require_redis
from pipelines.sources import read_catalog_lines, read_event_lines
from state.store import RedisStore
from state.writes import Ttls, final_writes
from transforms.catalog import parse_catalog_lines
from transforms.engine import replay
from transforms.events import parse_json_lines

HELP = "replay event files through the reference engine (no Flink) and write the final lists to Redis"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", nargs="+", type=Path, required=True, metavar="FILE", help="event files (.jsonl, .csv, .parquet)")
    parser.add_argument("--catalog", type=Path, metavar="FILE", help="catalog JSON-lines file")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_settings_arguments(parser, only=("redis-url", "namespace", "user-ttl-s", "item-ttl-s", "model-config"))


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.redis_url:
        raise UsageError("flowrec replay writes to Redis: pass --redis-url or set REDIS_URL")
    for path in args.events + ([args.catalog] if args.catalog else []):
        if not path.is_file():
            raise UsageError(f"input file not found: {path}")
    # Before the work, not after it: writes to an unreachable Redis would be retried for a minute.
    require_redis(settings.redis_url)
    started = time.perf_counter()
    try:
        lines = [line for path in args.events for line in read_event_lines(path)]
    except ValueError as exc:  # an unsupported file type
        raise UsageError(str(exc)) from None
    parsed = parse_json_lines(lines)
    catalog, catalog_rejections = ([], [])
    if args.catalog:
        catalog, catalog_rejections = parse_catalog_lines(read_catalog_lines(args.catalog))
    engine, final = replay(parsed.events, settings.model, catalog)
    store = RedisStore.from_url(settings.redis_url, namespace=settings.namespace)
    writes = final_writes(final, Ttls(settings.user_ttl_s, settings.item_ttl_s))
    for start in range(0, len(writes), 5000):
        store.write(writes[start : start + 5000])
    store.dead_letter([r.to_json() for r in parsed.rejections + catalog_rejections])
    seconds = time.perf_counter() - started
    summary = {
        "events": len(parsed.events),
        "rejected": len(parsed.rejections) + len(catalog_rejections),
        "users_written": sum(1 for _, lists in final.users.values() if lists is not None),
        "items_written": len(final.neighbours),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(parsed.events) / seconds, 1) if seconds else None,
    }
    print(json.dumps(summary) if args.json else " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
