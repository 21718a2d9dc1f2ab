"""`flowrec backfill`: the Beam batch backfill from historical event files to Redis and a snapshot.

Beam is imported only when the command runs, so `flowrec --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from flowrec.config import CommandError, UsageError, add_settings_arguments, load_settings

HELP = "compute the job's state from historical events on Apache Beam; write Redis and a snapshot to start the job from"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="GLOB", help="event files or glob patterns (.jsonl, .csv, .parquet); quote globs")
    parser.add_argument("--catalog", type=Path, help="catalog JSON-lines file")
    parser.add_argument("--snapshot", type=Path, metavar="DIR", help="write a Parquet snapshot the streaming job can start from")
    parser.add_argument(
        "--cutoff-ms",
        type=int,
        help="take only records with ts < this (a multiple of window_ms); the stream resumes at it. Default: after the newest record",
    )
    parser.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, FlinkRunner, PortableRunner, DataflowRunner, ...)")
    parser.add_argument(
        "--beam-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Beam pipeline option, repeatable, e.g. flink_master=host:8081, environment_type=LOOPBACK, direct_num_workers=2",
    )
    parser.add_argument(
        "--direct-running-mode",
        choices=DIRECT_RUNNING_MODES,
        help="DirectRunner only: in_memory (one process, the default), multi_threading, or multi_processing (worker processes, one per core)",
    )
    parser.add_argument("--direct-num-workers", type=int, metavar="N", help="DirectRunner only: worker threads/processes (default: 1; with multi_processing: the cores)")
    parser.add_argument("--shards", type=int, default=16, help="user shards: units of parallel per-user replay")
    parser.add_argument("--chunk-lines", type=int, default=20_000, help="records per parse task")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the counters")
    add_settings_arguments(parser, only=("redis-url", "namespace", "user-ttl-s", "item-ttl-s", "model-config"))


DIRECT_RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")


def direct_arguments(runner: str, mode: str | None, workers: int | None) -> list[str]:
    """The DirectRunner's ``direct_running_mode`` / ``direct_num_workers`` options as Beam arguments.

    ``multi_processing`` without a worker count uses one worker per core
    (Beam's own default is a single worker, which would run everything in
    one subprocess: slower than ``in_memory``).
    """
    if mode is None and workers is None:
        return []
    if runner != "DirectRunner":
        raise UsageError(f"--direct-running-mode and --direct-num-workers are DirectRunner options (runner is {runner})")
    if workers is not None and workers < 1:
        raise UsageError("--direct-num-workers must be >= 1")
    if mode == "multi_processing" and workers is None:
        workers = os.cpu_count() or 1
    out = [] if mode is None else [f"--direct_running_mode={mode}"]
    return out + ([] if workers is None else [f"--direct_num_workers={workers}"])


def beam_arguments(options: list[str]) -> list[str]:
    """``NAME=VALUE`` (or a bare ``NAME`` flag) -> ``--NAME=VALUE`` Beam arguments."""
    out = []
    for option in options:
        name = option.lstrip("-")
        if not name or name.startswith("="):
            raise UsageError(f"bad --beam-option {option!r}: use NAME=VALUE")
        out.append(f"--{name}")
    return out


def main(args: argparse.Namespace) -> int:
    from pipelines.backfill import BackfillError, BackfillJob, expand_inputs, run_backfill
    from pipelines.bootstrap import SnapshotError
    from state.writes import Ttls

    settings = load_settings(args)
    if not settings.redis_url and args.snapshot is None:
        raise UsageError("flowrec backfill writes to Redis and/or a snapshot: pass --redis-url (or set REDIS_URL) and/or --snapshot DIR")
    if args.catalog is not None and not args.catalog.is_file():
        raise UsageError(f"catalog file not found: {args.catalog}")
    if args.shards < 1 or args.chunk_lines < 1:
        raise UsageError("--shards and --chunk-lines must be >= 1")
    beam_args = direct_arguments(args.runner, args.direct_running_mode, args.direct_num_workers) + beam_arguments(args.beam_option)
    try:
        inputs = expand_inputs(args.input)
    except BackfillError as exc:  # no such file, or not an event file
        raise UsageError(str(exc)) from None
    try:
        job = BackfillJob(
            inputs=inputs,
            config=settings.model,
            catalog=args.catalog,
            redis_url=settings.redis_url,
            namespace=settings.namespace,
            ttls=Ttls(settings.user_ttl_s, settings.item_ttl_s),
            snapshot_dir=args.snapshot,
            cutoff_ms=args.cutoff_ms,
            shards=args.shards,
            chunk_lines=args.chunk_lines,
        )
        log.info("backfill of %d file(s) on %s", len(job.inputs), args.runner)
        result = run_backfill(job, runner=args.runner, beam_args=beam_args)
    except (BackfillError, SnapshotError) as exc:
        raise CommandError(str(exc)) from exc
    summary = result.summary()
    if args.snapshot is not None:
        summary["snapshot"] = str(args.snapshot)
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
        if args.snapshot is not None:
            print(f"start the streaming job from the snapshot with events from ts >= {summary['cutoff_ms']} (see pipelines/BACKFILL.md)")
    return 0
