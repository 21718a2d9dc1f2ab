"""Entry point of the streaming job: wires a source and the Redis sink, then runs.

The same module runs in-process on a local mini-cluster (`flowrec run`) and
on a Flink cluster (`flink run -py pipelines/main.py ...`, see `flowrec
submit`).  Exactly one input is chosen:

* ``--events FILE [FILE ...]`` (+ ``--catalog FILE``): bounded replay in event-time order;
* ``--spool-dir DIR``: a directory watched continuously (``events/`` and ``catalog/``);
* ``--socket HOST:PORT``: newline-delimited events from a TCP server;
* ``--kafka-brokers B --kafka-topic T --jar connector.jar``: Kafka.

``--bootstrap SNAPSHOT_DIR`` starts any of them from a backfill snapshot
(see pipelines/BACKFILL.md): the process that builds the job reads the
snapshot and writes its bootstrap lines into a temporary directory (under
``TMPDIR``) that the job's sources read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flowrec.config import Settings, add_settings_arguments, load_settings

log = logging.getLogger(__name__)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("input (choose one)")
    source.add_argument("--events", nargs="+", type=Path, help="event files to replay (.jsonl, .csv, .parquet)")
    source.add_argument("--catalog", type=Path, help="catalog JSON-lines file (with --events)")
    source.add_argument("--socket", help="HOST:PORT of a server sending newline-delimited events")
    source.add_argument("--kafka-brokers", help="Kafka bootstrap servers")
    source.add_argument("--kafka-topic", help="Kafka topic of events")
    source.add_argument("--jar", action="append", type=Path, default=[], help="extra connector jar (repeatable), e.g. the Kafka connector")
    parser.add_argument("--restore", help="savepoint or retained checkpoint to start from")
    parser.add_argument(
        "--bootstrap",
        type=Path,
        metavar="SNAPSHOT_DIR",
        help="start a new job from a backfill snapshot (flowrec backfill --snapshot); the input must deliver the records "
        "from the snapshot's cutoff on (a file replay skips older ones). The snapshot is read where the job is built, "
        "its bootstrap lines are written under TMPDIR, which the job's task managers must read at the same path",
    )
    parser.add_argument("--job-name", default="flowrec")
    add_settings_arguments(parser)


def choose_source(args: argparse.Namespace, settings: Settings):
    from pipelines.sources import DirectorySource, FileReplaySource, KafkaEventSource, SocketSource

    chosen = [name for name in ("events", "socket", "kafka_brokers") if getattr(args, name)]
    if settings.spool_dir is not None and not args.events:
        chosen.append("spool_dir")
    if len(chosen) != 1:
        raise SystemExit("choose exactly one input: --events FILE, --spool-dir DIR, --socket HOST:PORT or --kafka-brokers/--kafka-topic")
    bootstrap = load_bootstrap(args, settings)
    if args.events:
        missing = [p for p in args.events + ([args.catalog] if args.catalog else []) if not p.is_file()]
        if missing:
            raise SystemExit(f"input file not found: {missing[0]}")
        return FileReplaySource(args.events, args.catalog, chunk_size=settings.batch_size, bootstrap=bootstrap)
    if args.socket:
        host, _, port = args.socket.rpartition(":")
        return SocketSource(host or "127.0.0.1", int(port), heartbeat_ms=settings.heartbeat_ms, bootstrap=bootstrap)
    if args.kafka_brokers:
        if not args.kafka_topic:
            raise SystemExit("--kafka-brokers needs --kafka-topic")
        return KafkaEventSource(args.kafka_brokers, args.kafka_topic, args.jar, heartbeat_ms=settings.heartbeat_ms, bootstrap=bootstrap)
    return DirectorySource(settings.spool_dir, heartbeat_ms=settings.heartbeat_ms, bootstrap=bootstrap)


def load_bootstrap(args: argparse.Namespace, settings: Settings):
    """The ``--bootstrap`` snapshot as the job's bootstrap input (None without the flag); exits with the reason it cannot be used."""
    from pipelines.bootstrap import SnapshotError, prepare_bootstrap

    if getattr(args, "bootstrap", None) is None:
        return None
    if getattr(args, "restore", None) or getattr(args, "savepoint", None):
        raise SystemExit("--bootstrap starts a new job; a savepoint already holds its state: drop --bootstrap to restore")
    try:
        return prepare_bootstrap(args.bootstrap, settings.model, settings.user_shards, settings.item_shards)
    except SnapshotError as exc:
        raise SystemExit(f"cannot start from snapshot {args.bootstrap}: {exc}") from exc


# Restoring a savepoint into a job without some of its operators (e.g. the bootstrap sources).
ALLOW_NON_RESTORED_STATE = {"execution.state-recovery.ignore-unclaimed-state": "true"}


def run_job(settings: Settings, source, restore: str | None = None, job_name: str = "flowrec", wait: bool = True, allow_non_restored: bool = False):
    """Build and execute the job against ``settings.redis_url``; returns the JobClient when not waiting."""
    from pipelines.flink_env import create_environment
    from pipelines.job import RedisJobSink, build_job

    if not settings.redis_url:
        raise SystemExit("no Redis configured: pass --redis-url or set REDIS_URL")
    env = create_environment(settings, restore_from=restore, extra=ALLOW_NON_RESTORED_STATE if allow_non_restored else None)
    build_job(env, source, RedisJobSink(settings.redis_url, settings.namespace), settings)
    if wait:
        env.execute(job_name)
        return None
    return env.execute_async(job_name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings(args)
    run_job(settings, choose_source(args, settings), args.restore, args.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
