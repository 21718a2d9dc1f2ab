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
import logging
import time
from pathlib import Path

from bench.inputs import add_input_arguments, benchmark_inputs, print_row, redis_content, work_folder

HELP = "events/s of the Beam backfill (DirectRunner or another runner) against the reference engine on ML-100K and a synthetic shop"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, workdir_help="where to write the input files (default: a temporary folder)")
    parser.add_argument("--runner", default="DirectRunner")
    parser.add_argument("--beam-option", action="append", default=[], metavar="NAME=VALUE", help="Beam pipeline option, repeatable")


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
        reference = redis_content(server.url)
        redis.Redis.from_url(server.url).flushall()

        job = BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=server.url, snapshot_dir=workdir / f"{name}-snapshot")
        result = run_backfill(job, runner=runner, beam_args=beam_args)
        equal = redis_content(server.url) == reference
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


def _line(row: dict) -> str:
    return (
        f"{row['input']:>14}: {row['events']} events, {row['windows']} windows, {row['users']} users | "
        f"reference {row['reference_events_per_s']:.0f} ev/s ({row['reference_seconds']} s, engine {row['reference_engine_seconds']} s) | "
        f"beam {row['runner']} {row['beam_events_per_s']:.0f} ev/s ({row['beam_seconds']} s) | ratio {row['beam_over_reference']} | "
        f"redis equal: {row['redis_equal']}"
    )


def main(args: argparse.Namespace) -> int:
    from flowrec.commands.backfill import beam_arguments

    beam_args = beam_arguments(args.beam_option)
    workdir = work_folder(args, "flowrec-bench-backfill-")
    rows = [print_row(measure(name, *paths, args.runner, beam_args, workdir), args.json, _line) for name, *paths in benchmark_inputs(args, workdir)]
    return 0 if all(row["redis_equal"] for row in rows) else 1
