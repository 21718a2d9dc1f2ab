"""`flowrec bench backfill`: events/s of the Beam backfill against the reference engine, in the same run.

For each input (MovieLens 100K, a synthetic shop of ``--events`` events) the
same files are processed twice, end to end from files to a private Redis:

* **reference**: read + parse the files, :func:`transforms.engine.replay`,
  :func:`state.writes.final_writes` to Redis (what `flowrec replay` does);
  its engine-only time is reported too;
* **beam**: :func:`pipelines.backfill.run_backfill` on the chosen runner
  (default DirectRunner), with a snapshot.

Both must leave the same Redis content (checked; a mismatch is reported and
fails the run).  Times are wall-clock seconds of one run each; the ratio is
beam events/s over reference events/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

HELP = "events/s of the Beam backfill (DirectRunner or another runner) against the reference engine on ML-100K and a synthetic shop"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the synthetic shop (default 1000000)")
    parser.add_argument("--users", type=int, default=20_000, help="shoppers of the synthetic shop (default 20000)")
    parser.add_argument("--items", type=int, default=2_000, help="items of the synthetic shop (default 2000)")
    parser.add_argument("--days", type=float, default=2.0, help="simulated days of the synthetic shop (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip", choices=("ml-100k", "shop"), action="append", default=[], help="skip an input (repeatable)")
    parser.add_argument("--runner", default="DirectRunner")
    parser.add_argument("--beam-option", action="append", default=[], metavar="NAME=VALUE", help="Beam pipeline option, repeatable")
    parser.add_argument("--datasets-dir", type=Path, help="folder holding ml-100k/ (default: the settings' datasets_dir)")
    parser.add_argument("--workdir", type=Path, help="where to write the input files (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per input")


def _write_inputs(folder: Path, events, catalog) -> tuple[Path, Path]:
    from transforms.synthetic import events_to_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").write_bytes(events_to_jsonl(events))
    (folder / "catalog.jsonl").write_bytes(b"".join(c.to_json() + b"\n" for c in catalog))
    return folder / "events.jsonl", folder / "catalog.jsonl"


def _content(url: str) -> dict[bytes, bytes]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.keys("*") if not k.endswith((b":stats", b":deadletter", b":freshness"))]
        return dict(zip(keys, client.mget(keys))) if keys else {}
    finally:
        client.close()


def measure(name: str, events_path: Path, catalog_path: Path, runner: str, beam_args: list[str], workdir: Path) -> dict:
    """Reference then Beam on the same files; returns both rates and whether Redis ended equal."""
    import redis

    from flowrec.localredis import LocalRedis
    from pipelines.backfill import BackfillJob, run_backfill
    from pipelines.sources import read_event_lines
    from state.store import RedisStore
    from state.writes import Ttls, final_writes
    from transforms.catalog import parse_catalog_lines
    from transforms.config import ModelConfig
    from transforms.engine import replay
    from transforms.events import parse_json_lines

    config = ModelConfig()
    with LocalRedis() as server:
        started = time.perf_counter()
        parsed = parse_json_lines(read_event_lines(events_path))
        with open(catalog_path, "rb") as f:
            catalog, _ = parse_catalog_lines(f)
        engine_started = time.perf_counter()
        _, final = replay(parsed.events, config, catalog)
        engine_seconds = time.perf_counter() - engine_started
        writes = final_writes(final, Ttls())
        store = RedisStore.from_url(server.url)
        for start in range(0, len(writes), 5000):
            store.write(writes[start : start + 5000])
        reference_seconds = time.perf_counter() - started
        reference = _content(server.url)
        redis.Redis.from_url(server.url).flushall()

        job = BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=server.url, snapshot_dir=workdir / f"{name}-snapshot")
        result = run_backfill(job, runner=runner, beam_args=beam_args)
        equal = _content(server.url) == reference
    events = len(parsed.events)
    summary = result.summary()
    return {
        "input": name,
        "events": events,
        "users": summary["users"],
        "windows": summary["windows"],
        "reference_seconds": round(reference_seconds, 2),
        "reference_engine_seconds": round(engine_seconds, 2),
        "reference_events_per_s": round(events / reference_seconds, 1),
        "beam_seconds": summary["seconds"],
        "beam_events_per_s": summary["events_per_s"],
        "beam_over_reference": round(summary["events_per_s"] / (events / reference_seconds), 3),
        "runner": runner,
        "redis_equal": equal,
    }


def _report(row: dict, as_json: bool) -> dict:
    """Print one input's result as soon as it is measured."""
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        print(
            f"{row['input']:>14}: {row['events']} events, {row['windows']} windows, {row['users']} users | "
            f"reference {row['reference_events_per_s']:.0f} ev/s ({row['reference_seconds']} s, engine {row['reference_engine_seconds']} s) | "
            f"beam {row['runner']} {row['beam_events_per_s']:.0f} ev/s ({row['beam_seconds']} s) | ratio {row['beam_over_reference']} | "
            f"redis equal: {row['redis_equal']}",
            flush=True,
        )
    return row


def main(args: argparse.Namespace) -> int:
    from flowrec.commands.backfill import beam_arguments
    from flowrec.config import load_settings
    from transforms.datasets import DatasetMissing, dataset_path, load_movielens_100k
    from transforms.events import EventBatch
    from transforms.synthetic import generate_shop

    beam_args = beam_arguments(args.beam_option)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flowrec-bench-backfill-"))
    rows = []
    if "ml-100k" not in args.skip:
        try:
            folder = dataset_path(args.datasets_dir or load_settings(None).datasets_dir, "ml-100k")
        except DatasetMissing as exc:
            log.warning("skipping ML-100K: %s", exc)
        else:
            events, catalog = load_movielens_100k(folder)
            paths = _write_inputs(workdir / "ml-100k", events, catalog)
            rows.append(_report(measure("ml-100k", *paths, args.runner, beam_args, workdir), args.json))
    if "shop" not in args.skip:
        catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=args.seed, days=args.days)
        paths = _write_inputs(workdir / "shop", EventBatch.concat(list(stream)), catalog)
        rows.append(_report(measure(f"shop-{args.events}", *paths, args.runner, beam_args, workdir), args.json))
    return 0 if all(row["redis_equal"] for row in rows) else 1
