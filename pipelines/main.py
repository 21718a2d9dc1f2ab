"""Entry point of the streaming job: wires a source and the Redis sink, then runs.

The same module runs in-process on a local mini-cluster (`flowrec run`) and
on a Flink cluster (`flink run -py pipelines/main.py ...`, see `flowrec
submit`).  Exactly one input is chosen:

* ``--events FILE [FILE ...]`` (+ ``--catalog FILE``): bounded replay in event-time order;
* ``--spool-dir DIR``: a directory watched continuously (``events/`` and ``catalog/``);
* ``--socket HOST:PORT`` (+ ``--socket-catalog HOST:PORT``): newline-delimited events from a TCP server;
* ``--kafka-brokers B --kafka-topic T --jar connector.jar`` (+ ``--kafka-catalog-topic``): Kafka.

``--bootstrap SNAPSHOT_DIR`` starts any of them from a backfill snapshot
(see pipelines/BACKFILL.md): the process that builds the job reads the
snapshot and writes its bootstrap lines into a temporary directory (under
``TMPDIR``) that the job's sources read.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from flowrec.config import SETTINGS_FLAGS, CommandError, Settings, UsageError, add_settings_arguments, load_settings
from transforms.config import DERIVABLE_FIELDS

log = logging.getLogger(__name__)

# The settings the job reads (the API keys and the datasets folder are other commands' business).
JOB_SETTINGS = tuple(flag for flag in SETTINGS_FLAGS if flag not in ("api-keys", "datasets-dir"))


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); otherwise argparse's one-line error."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:9999, got {text!r}")
    return host, int(port)


def kafka_topic(text: str) -> str:
    """A legal Kafka topic name (1-249 of ``[A-Za-z0-9._-]``)."""
    from pipelines.sources import valid_kafka_topic

    if not valid_kafka_topic(text):
        raise argparse.ArgumentTypeError(f"not a Kafka topic name (1-249 chars of A-Z a-z 0-9 . _ -): {text!r}")
    return text


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.sources import KAFKA_STARTING_OFFSETS, KafkaInput

    source = parser.add_argument_group("input (choose one)")
    source.add_argument("--events", nargs="+", type=Path, metavar="FILE", help="event files to replay (.jsonl, .csv, .parquet)")
    source.add_argument("--catalog", type=Path, metavar="FILE", help="catalog JSON-lines file (with --events)")
    source.add_argument("--socket", type=host_port, metavar="HOST:PORT", help="a server sending newline-delimited events")
    source.add_argument("--socket-catalog", type=host_port, metavar="HOST:PORT",
                        help="with --socket: a server sending newline-delimited catalog upserts and embedding switches")
    source.add_argument("--kafka-brokers", metavar="HOST:PORT[,...]", help="Kafka bootstrap servers")
    source.add_argument("--kafka-topic", type=kafka_topic, help="Kafka topic of events")
    source.add_argument("--kafka-catalog-topic", type=kafka_topic, help="Kafka topic of catalog upserts and embedding switches")
    source.add_argument("--kafka-group-id", default=KafkaInput.group_id, help="Kafka consumer group (its committed offsets are where a new job resumes)")
    source.add_argument("--kafka-starting-offsets", choices=KAFKA_STARTING_OFFSETS, default=KafkaInput.starting_offsets,
                        help="where a consumer group without committed offsets starts reading")
    source.add_argument("--jar", action="append", type=Path, default=[], help="extra connector jar (repeatable), e.g. the Kafka connector")
    parser.add_argument("--restore", metavar="PATH", help="savepoint or retained checkpoint to start from")
    parser.add_argument(
        "--bootstrap",
        type=Path,
        metavar="SNAPSHOT_DIR",
        help="start a new job from a backfill snapshot (flowrec backfill --snapshot); the input must deliver the records "
        "from the snapshot's cutoff on (a file replay skips older ones). The snapshot is read where the job is built, "
        "its bootstrap lines are written under TMPDIR, which the job's task managers must read at the same path",
    )
    parser.add_argument("--job-name", default="flowrec", help="the Flink job's name")
    add_settings_arguments(parser, only=JOB_SETTINGS)


def check_input_flags(args: argparse.Namespace, settings: Settings) -> None:
    """Exactly one input, the flags that belong to it, and its files exist; raises :class:`UsageError` otherwise."""
    from pipelines.sources import check_event_file

    chosen = [name for name in ("events", "socket", "kafka_brokers") if getattr(args, name, None)]
    if settings.spool_dir is not None and not args.events:
        chosen.append("spool_dir")
    if len(chosen) != 1:
        raise UsageError("choose exactly one input: --events FILE, --spool-dir DIR, --socket HOST:PORT or --kafka-brokers/--kafka-topic")
    if getattr(args, "socket_catalog", None) and not args.socket:
        raise UsageError("--socket-catalog goes with --socket")
    if getattr(args, "kafka_catalog_topic", None) and not args.kafka_brokers:
        raise UsageError("--kafka-catalog-topic goes with --kafka-brokers")
    if args.kafka_brokers:
        kafka_input(args)
    for path in (args.events or []) + ([args.catalog] if args.catalog else []) + list(args.jar or []):
        if not Path(path).is_file():
            raise UsageError(f"input file not found: {path}")
    for path in args.events or []:
        try:
            check_event_file(Path(path))  # before the JVM starts: the job reads the files when it is built
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if settings.embeddings is not None:
        from state.embeddings import latest_version

        if latest_version(settings.embeddings) is None:
            raise UsageError(f"no embedding export in {settings.embeddings} (expected a `flowrec train --out` directory)")


def kafka_input(args: argparse.Namespace):
    """The :class:`pipelines.sources.KafkaInput` the Kafka flags describe; raises :class:`UsageError` if they do not fit."""
    from pipelines.sources import KafkaInput

    if not args.kafka_topic:
        raise UsageError("--kafka-brokers needs --kafka-topic")
    try:
        return KafkaInput(args.kafka_brokers, args.kafka_topic, args.kafka_catalog_topic, args.kafka_group_id, args.kafka_starting_offsets)
    except ValueError as exc:
        raise UsageError(f"Kafka input: {exc}") from None


def choose_source(args: argparse.Namespace, settings: Settings):
    from pipelines.sources import DirectorySource, FileReplaySource, KafkaEventSource, SocketSource

    check_input_flags(args, settings)
    bootstrap = load_bootstrap(args, settings)
    if args.events:
        return FileReplaySource(args.events, args.catalog, chunk_size=settings.batch_size, bootstrap=bootstrap)
    if args.socket:
        host, port = args.socket
        return SocketSource(host, port, heartbeat_ms=settings.heartbeat_ms, bootstrap=bootstrap, catalog=args.socket_catalog)
    if args.kafka_brokers:
        return KafkaEventSource(kafka_input(args), args.jar, heartbeat_ms=settings.heartbeat_ms, bootstrap=bootstrap)
    return DirectorySource(settings.spool_dir, heartbeat_ms=settings.heartbeat_ms, bootstrap=bootstrap)


def load_bootstrap(args: argparse.Namespace, settings: Settings):
    """The ``--bootstrap`` snapshot as the job's bootstrap input (None without the flag); exits with the reason it cannot be used."""
    from pipelines.bootstrap import SnapshotError, prepare_bootstrap

    if getattr(args, "bootstrap", None) is None:
        return None
    if getattr(args, "restore", None) or getattr(args, "deprecated_savepoint", None):
        raise UsageError("--bootstrap starts a new job; a savepoint already holds its state: drop --bootstrap to restore")
    try:
        return prepare_bootstrap(args.bootstrap, settings.model, settings.user_shards, settings.item_shards)
    except SnapshotError as exc:
        raise UsageError(f"cannot start from snapshot {args.bootstrap}: {exc}") from exc


# Restoring a savepoint into a job without some of its operators (e.g. the bootstrap sources).
ALLOW_NON_RESTORED_STATE = {"execution.state-recovery.ignore-unclaimed-state": "true"}


def run_job(settings: Settings, source, restore: str | None = None, job_name: str = "flowrec", wait: bool = True, allow_non_restored: bool = False):
    """Build and execute the job against ``settings.redis_url``; returns the JobClient when not waiting."""
    from pipelines.flink_env import create_environment
    from pipelines.job import RedisJobSink, build_job

    if not settings.redis_url:
        raise UsageError("no Redis configured: pass --redis-url or set REDIS_URL")
    settings = with_history_settings(settings, source)
    env = create_environment(settings, restore_from=restore, extra=ALLOW_NON_RESTORED_STATE if allow_non_restored else None)
    build_job(env, source, RedisJobSink(settings.redis_url, settings.namespace), settings)
    if wait:
        env.execute(job_name)
        return None
    return env.execute_async(job_name)


def with_history_settings(settings: Settings, source) -> Settings:
    """``settings`` for the job of ``source``: started from a snapshot, the model settings derived from
    the history (the backfill measured them) replace the defaults; recorded in the job's stats hash."""
    from state.experiments import kept_settings_stats
    from state.store import RedisStore

    boot = getattr(source, "bootstrap", None)
    model = boot.config if boot is not None else settings.model
    derived = set(settings.model.derive_from_history) if boot is not None else set()
    for name in settings.model.derive_from_history:
        log.info("%s = %s (%s)", name, getattr(model, name), "from the snapshot's history" if name in derived else "configured: no history to derive it from")
    store = RedisStore.from_url(settings.redis_url, settings.namespace)
    try:
        store.set_stats(
            {f"model.{name}": getattr(model, name) for name in DERIVABLE_FIELDS}
            | {f"model.{name}.source": "derived from history" if name in derived else "configured" for name in DERIVABLE_FIELDS}
            | kept_settings_stats(model)
        )
    except Exception as exc:  # Redis down at start-up: the job itself retries; the stats are informative
        log.warning("could not record the model settings in Redis stats: %s", exc)
    finally:
        store.client.close()
    return dataclasses.replace(settings, model=model) if model is not settings.model else settings


class _Py4jFilter(logging.Filter):
    """Drops the Java gateway client's log records (py4j logs some through the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("py4j") or "/py4j/" in record.pathname)


def silence_gateway_logs() -> None:
    """Once the command is stopping, the Java gateway may be gone (a SIGTERM to the process group reaches it too):
    py4j then logs a traceback for every call still made to it, down to the finalizers at exit.  Nothing in them helps."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Py4jFilter())
    logging.getLogger("py4j").setLevel(logging.CRITICAL + 1)


def stop_job_quietly(job) -> None:
    """Cancel the job if the Java gateway still answers; say nothing if it does not."""
    silence_gateway_logs()
    if job is None:
        return
    try:
        job.cancel().result()
    except Exception:  # the gateway is gone or the job has ended: nothing left to cancel
        log.debug("cancelling the job failed", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_job_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args)
        run_job(settings, choose_source(args, settings), args.restore, args.job_name)
    except CommandError as exc:
        print(f"pipelines/main.py: error: {exc}", file=sys.stderr)
        return exc.exit_status
    return 0


if __name__ == "__main__":
    sys.exit(main())
