"""`flowrec bench bootstrap`: how fast the streaming job loads a backfill snapshot.

For each input (MovieLens 100K, a synthetic shop of ``--events`` events) the
Beam backfill of everything writes a private Redis and a snapshot (cutoff
after the newest event).  Then, on a local mini-cluster, two jobs with the
same graph run to the end on an empty input, alternating, ``--repeat``
times each (after one warm-up): a plain one, and one started from the
snapshot (``--bootstrap``).  Start-up costs the same in both, so the
snapshot's load time is the difference of the medians; boot lines/s and
users/s follow from it.  The time to read the snapshot and make its
bootstrap lines (in the process that builds the job) is reported apart.

Check: with no events after the cutoff the bootstrapped job writes only its
end-of-input refresh of the snapshot's dirty rows and trending (if any) —
the writes the backfill's own final refresh made — so every key it writes
must hold the backfill's value (``check``; the run fails otherwise).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from bench.inputs import add_input_arguments, benchmark_inputs, print_row, redis_content, work_folder

HELP = "seconds and boot lines/s for the Flink job to load a backfill snapshot (ML-100K and a synthetic shop)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, workdir_help="where to write inputs and snapshots (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each job after a warm-up (default 3)")
    parser.add_argument("--parallelism", type=int, default=1)


def _timed_job(settings, source) -> float:
    """Wall-clock seconds of one job run to its end, Redis flushed first."""
    import redis

    from pipelines.main import run_job

    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    client.close()
    started = time.perf_counter()
    run_job(settings, source, job_name="flowrec-bench-bootstrap")
    return time.perf_counter() - started


def measure(name: str, events_path: Path, catalog_path: Path, parallelism: int, repeat: int, workdir: Path) -> dict:
    from flowrec.config import Settings
    from flowrec.localredis import LocalRedis
    from pipelines.backfill import BackfillJob, run_backfill
    from pipelines.bootstrap import prepare_bootstrap
    from pipelines.sources import FileReplaySource
    from transforms.config import ModelConfig

    config = ModelConfig()
    snapshot_dir = workdir / f"{name}-snapshot"
    empty = workdir / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    (empty / "events.jsonl").write_text("")
    (empty / "catalog.jsonl").write_text("")
    with LocalRedis() as backfill_redis, LocalRedis() as job_redis:
        summary = run_backfill(
            BackfillJob(inputs=(events_path,), config=config, catalog=catalog_path, redis_url=backfill_redis.url, snapshot_dir=snapshot_dir)
        ).summary()
        backfilled = redis_content(backfill_redis.url)
        settings = Settings(parallelism=parallelism, restart_attempts=0, model=config, redis_url=job_redis.url)
        started = time.perf_counter()
        boot = prepare_bootstrap(snapshot_dir, config, settings.user_shards, settings.item_shards)
        prepare_seconds = time.perf_counter() - started

        def source(bootstrap):
            return FileReplaySource([empty / "events.jsonl"], empty / "catalog.jsonl", workdir=Path(tempfile.mkdtemp(dir=workdir)), bootstrap=bootstrap)

        _timed_job(settings, source(None))  # warm-up: the first job in a process also starts the JVM
        plain, booted = [], []
        for _ in range(repeat):
            plain.append(_timed_job(settings, source(None)))
            booted.append(_timed_job(settings, source(boot)))
        written = redis_content(job_redis.url)
    load_seconds = statistics.median(booted) - statistics.median(plain)
    lines = len(boot.event_lines) + len(boot.catalog_lines)
    return {
        "input": name,
        "events": summary["events"],
        "users": summary["users"],
        "items": summary["items"],
        "boot_lines": lines,
        "boot_mb": round(sum(len(line) for line in boot.event_lines + boot.catalog_lines) / 1e6, 1),
        "prepare_seconds": round(prepare_seconds, 2),
        "plain_job_seconds": round(statistics.median(plain), 2),
        "bootstrapped_job_seconds": round(statistics.median(booted), 2),
        "load_seconds": round(load_seconds, 2),
        "boot_lines_per_s": round(lines / load_seconds, 1) if load_seconds > 0 else None,
        "boot_mb_per_s": round(sum(len(line) for line in boot.event_lines + boot.catalog_lines) / 1e6 / load_seconds, 1) if load_seconds > 0 else None,
        "users_per_s": round(summary["users"] / load_seconds) if load_seconds > 0 else None,
        "parallelism": parallelism,
        "repeat": repeat,
        "refresh_writes": len(written),
        "check": all(backfilled.get(key) == value for key, value in written.items()),
    }


def _line(row: dict) -> str:
    return (
        f"{row['input']:>14}: {row['users']} users, {row['items']} items -> {row['boot_lines']} boot lines ({row['boot_mb']} MB, made in "
        f"{row['prepare_seconds']} s) | job p={row['parallelism']} median of {row['repeat']}: plain {row['plain_job_seconds']} s, "
        f"bootstrapped {row['bootstrapped_job_seconds']} s -> load {row['load_seconds']} s ({row['boot_mb_per_s']} MB/s, "
        f"{row['boot_lines_per_s']} lines/s, {row['users_per_s']} users/s) | check ({row['refresh_writes']} refresh writes): {row['check']}"
    )


def main(args: argparse.Namespace) -> int:
    workdir = work_folder(args, "flowrec-bench-bootstrap-")
    rows = [print_row(measure(name, *paths, args.parallelism, args.repeat, workdir), args.json, _line) for name, *paths in benchmark_inputs(args, workdir)]
    return 0 if all(row["check"] for row in rows) else 1
