"""`flowrec bench backfill`: events/s of the Beam backfill against the reference engine, in the same run.

For each input (MovieLens 100K, a synthetic shop of ``--events`` events) the
same files are processed twice, end to end from files to a private Redis:

* **reference**: read + parse the files, :func:`transforms.engine.replay`,
  :func:`state.writes.final_writes` to Redis (what `flowrec replay` does);
  its engine-only time is reported too;
* **training**: read + parse the files and the reference engine in training
  mode (``score_users=False``: every event applied, one model refresh at the
  end, no lists) - the rate the backfill is to reach (issue 13);
* **beam**: :func:`pipelines.backfill.run_backfill` on the chosen runner
  (default DirectRunner; ``--direct-running-mode multi_processing`` for worker
  processes), with a snapshot.

Both the reference and the backfill must leave the same Redis content
(checked; a mismatch is reported and fails the run).  Times are wall-clock
seconds of one run each, next to the CPU seconds of this process and its
finished children (the machine may be shared); the ratios are beam events/s
over reference and over training events/s.  ``peak_rss_mb`` is the largest
resident set of this process or of any finished child (Beam's worker
processes) so far in the run.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

from bench.inputs import add_input_arguments, benchmark_inputs, print_row, redis_content, work_folder

HELP = "events/s of the Beam backfill (DirectRunner or another runner) against the reference engine on ML-100K and a synthetic shop"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, workdir_help="where to write the input files (default: a temporary folder)")
    parser.add_argument("--runner", default="DirectRunner")
    parser.add_argument("--beam-option", action="append", default=[], metavar="NAME=VALUE", help="Beam pipeline option, repeatable")
    parser.add_argument("--direct-running-mode", choices=("in_memory", "multi_threading", "multi_processing"), help="DirectRunner mode (as flowrec backfill)")
    parser.add_argument("--direct-num-workers", type=int, metavar="N", help="DirectRunner workers (as flowrec backfill)")
    parser.add_argument("--stages", action="store_true", help="also time the backfill's pure stages in this process, without Beam (where the time goes)")


def stage_cpu_seconds(events_path: Path, catalog_path: Path, shards: int = 16, chunk_lines: int = 20_000) -> dict[str, float]:
    """CPU seconds of each stage of the backfill run as plain function calls in one process (no Beam):
    the settings derived from history (a parse of its own), read + parse, the per-user replay, the window
    timeline.  Beam's own cost is what the pipeline takes beyond their sum."""
    from pipelines.backfill import BackfillJob, parse_chunk, read_catalog, read_chunks, replay_timeline, replay_users, with_derived_config

    out = {}
    started = time.process_time()
    job, _ = with_derived_config(BackfillJob(inputs=(events_path,)))
    out["derive"] = time.process_time() - started
    started = time.process_time()
    parts: dict[int, list] = {}
    for chunk_index, lines in read_chunks(events_path, chunk_lines):
        for shard, columns in parse_chunk(0, chunk_index, lines, job.config, shards, None)[0].items():
            parts.setdefault(shard, []).append(columns)
    out["read_parse"] = time.process_time() - started
    started = time.process_time()
    replayed = [replay_users(shard, columns, job.config) for shard, columns in sorted(parts.items())]
    out["replay_users"] = time.process_time() - started
    started = time.process_time()
    replay_timeline(job.config, read_catalog(catalog_path, None)[0], [d for _, d in replayed], [u for u, _ in replayed])
    out["timeline"] = time.process_time() - started
    return {name: round(seconds, 2) for name, seconds in out.items()}


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have finished."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> float:
    """The largest resident set so far of this process or of one finished child, in MiB (Linux reports KiB)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def measure(name: str, events_path: Path, catalog_path: Path, runner: str, beam_args: list[str], workdir: Path, stages: bool = False) -> dict:
    """Reference then Beam on the same files; returns both rates and whether Redis ended equal."""
    import redis

    from flowrec.localredis import LocalRedis
    from pipelines.backfill import BackfillJob, run_backfill
    from pipelines.sources import read_event_lines
    from state.store import RedisStore
    from state.writes import Ttls, final_writes
    from transforms.catalog import parse_catalog_lines
    from transforms.config import ModelConfig
    from transforms.engine import ReferenceEngine, replay
    from transforms.events import parse_json_lines

    config = ModelConfig()
    started, cpu = time.perf_counter(), cpu_seconds()
    parsed = parse_json_lines(read_event_lines(events_path))
    with open(catalog_path, "rb") as f:
        catalog, _ = parse_catalog_lines(f)
    training = ReferenceEngine(config, catalog, score_users=False)
    training.process(parsed.events)
    training.finish()
    training_seconds, training_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    del training, parsed
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
        cpu = cpu_seconds()
        result = run_backfill(job, runner=runner, beam_args=beam_args)
        beam_cpu = cpu_seconds() - cpu
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
        "training_seconds": round(training_seconds, 2),
        "training_cpu_seconds": round(training_cpu, 2),
        "training_events_per_s": round(events / training_seconds, 1),
        "beam_seconds": summary["seconds"],
        "beam_cpu_seconds": round(beam_cpu, 2),
        "beam_events_per_s": summary["events_per_s"],
        "beam_over_reference": round(summary["events_per_s"] / (events / reference_seconds), 3),
        "beam_over_training": round(summary["events_per_s"] / (events / training_seconds), 3),
        "runner": runner,
        "beam_args": beam_args,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "redis_equal": equal,
        **({"stages_cpu_seconds": stage_cpu_seconds(events_path, catalog_path)} if stages else {}),
    }


def _line(row: dict) -> str:
    return (
        f"{row['input']:>14}: {row['events']} events, {row['windows']} windows, {row['users']} users | "
        f"reference {row['reference_events_per_s']:.0f} ev/s ({row['reference_seconds']} s, engine {row['reference_engine_seconds']} s) | "
        f"training {row['training_events_per_s']:.0f} ev/s ({row['training_seconds']} s) | "
        f"beam {row['runner']} {' '.join(row['beam_args'])} {row['beam_events_per_s']:.0f} ev/s ({row['beam_seconds']} s, {row['beam_cpu_seconds']} CPU s) | "
        f"ratio to reference {row['beam_over_reference']}, to training {row['beam_over_training']} | peak {row['peak_rss_mb']} MiB | "
        f"redis equal: {row['redis_equal']}"
        + (f" | stages (CPU s, no Beam): {row['stages_cpu_seconds']}" if "stages_cpu_seconds" in row else "")
    )


def main(args: argparse.Namespace) -> int:
    from flowrec.commands.backfill import beam_arguments, direct_arguments

    beam_args = direct_arguments(args.runner, args.direct_running_mode, args.direct_num_workers) + beam_arguments(args.beam_option)
    workdir = work_folder(args, "flowrec-bench-backfill-")
    rows = [print_row(measure(name, *paths, args.runner, beam_args, workdir, args.stages), args.json, _line) for name, *paths in benchmark_inputs(args, workdir)]
    return 0 if all(row["redis_equal"] for row in rows) else 1
