"""Where events and catalog records come from.  Only entry points pick one; the job
builder takes any :class:`JobSource`.

Every source yields *chunks*: strings of JSON records separated by newlines or
by the ASCII record separator ``\\x1e`` (which valid JSON text never contains
unescaped), so one Flink record carries many events — per-record Python
overhead is paid per chunk, not per event.  A line may also hold a JSON array
of events.

Every source can start the job from a backfill snapshot (``bootstrap``, a
:class:`pipelines.bootstrap.BootInput`): its bootstrap lines, one per chunk,
come before any record — at the head of the replayed files for a bounded
replay, from bounded streams of their own for a live source (the job gates
the live records until they have passed; see :class:`BootStreams`).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import orjson

from pipelines.bootstrap import BootInput
from pipelines.spoolfiles import END_PREFIX
from transforms.catalog import validate_catalog_record

log = logging.getLogger(__name__)

RECORD_SEPARATOR = "\x1e"


@dataclass
class BootStreams:
    """A live input's bootstrap: bounded streams of bootstrap lines and how many lines each holds."""

    events: object
    catalog: object
    event_lines: int
    catalog_lines: int


@dataclass
class JobInput:
    """The job's input streams (DataStreams of chunk strings); ``catalog`` may be absent."""

    events: object
    catalog: object | None = None
    # Live inputs: heartbeat chunks that advance event time while input is idle.
    heartbeat: object | None = None
    # Parallelism of parsing: a user's events must reach the user state in
    # order, so parsing runs at the source's parallelism over forward edges
    # (1 for files, sockets and collections).
    parallelism: int = 1
    # Started from a snapshot: its bootstrap lines lead ``events`` and ``catalog``
    # (bounded replay), or come in ``boot`` streams of their own (live inputs).
    bootstrapped: bool = False
    boot: BootStreams | None = None
    # A spool directory input: the folder whose files the job retires once read.
    spool_dir: Path | None = None


class JobSource(Protocol):
    def create(self, env) -> JobInput: ...


def pack_chunks(lines: Iterable[str], chunk_size: int) -> Iterator[str]:
    """Group lines into chunks joined by the record separator."""
    chunk: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        chunk.append(line)
        if len(chunk) >= chunk_size:
            yield RECORD_SEPARATOR.join(chunk)
            chunk = []
    if chunk:
        yield RECORD_SEPARATOR.join(chunk)


def _event_time(line: str) -> int:
    """The ts of a JSON event line for ordering; lines without one sort first (they are dead-lettered)."""
    try:
        ts = orjson.loads(line).get("ts")
        return int(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else -1
    except (orjson.JSONDecodeError, AttributeError, ValueError, OverflowError):
        return -1


EVENT_FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".csv", ".parquet")


def check_event_file(path: Path) -> None:
    """Raise ValueError saying why ``path`` cannot be read as an event file, without reading its records.

    Cheap enough to run before a job starts: the suffix, and for Parquet the footer (a file that is
    not Parquet fails there).  Bad records inside a readable file are no error: they are dead-lettered.
    """
    suffix = path.suffix.lower()
    if suffix not in EVENT_FILE_SUFFIXES:
        raise ValueError(f"{path}: unsupported event file type {path.suffix!r} (use .jsonl, .csv or .parquet)")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pq.read_metadata(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path} is not a readable Parquet file: {exc}") from None


def read_event_lines(path: Path) -> list[str]:
    """Event records of a JSON-lines, CSV or Parquet file as JSON lines (CSV/Parquet rows converted)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            # A spool file's end marker is no record (see pipelines.spoolfiles).
            return [line.rstrip("\n") for line in f if line.strip() and not line.startswith(END_PREFIX)]
    if suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            return [orjson.dumps({k: v for k, v in row.items() if v not in ("", None)}).decode() for row in csv.DictReader(f)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return [orjson.dumps({k: v for k, v in row.items() if v is not None}).decode() for row in table.to_pylist()]
    raise ValueError(f"unsupported event file type {path.suffix!r} (use .jsonl, .csv or .parquet)")


def read_catalog_lines(path: Path) -> list[bytes]:
    """Catalog records of a JSON-lines file (a spool file's end marker is no record)."""
    marker = END_PREFIX.encode()
    with open(path, "rb") as f:
        return [line for line in f if line.strip() and not line.startswith(marker)]


def _catalog_time(line: str) -> int:
    """When a catalog line takes effect (its validated ``ts``); -1 for an invalid one (dead-lettered)."""
    try:
        item, _ = validate_catalog_record(orjson.loads(line))
    except orjson.JSONDecodeError:
        return -1
    return -1 if item is None else item.ts


def _from_cutoff(lines: list[str], time_of, cutoff_ms: int, what: str) -> list[str]:
    """The lines a stream continuing a snapshot delivers: ``ts >= cutoff`` (the snapshot holds the rest).

    Invalid lines (time -1) stay, to be dead-lettered as in any replay.
    """
    kept = [line for line in lines if (t := time_of(line)) < 0 or t >= cutoff_ms]
    if len(kept) < len(lines):
        log.info("bootstrap: skipping %d %s records before the snapshot's cutoff %d", len(lines) - len(kept), what, cutoff_ms)
    return kept


def _write_chunks(path: Path, head: Sequence[str], lines: Iterable[str], chunk_size: int) -> None:
    """A chunk file: the ``head`` lines (bootstrap lines, one chunk each), then ``lines`` packed in chunks."""
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        for line in head:
            f.write(line + "\n")
        for chunk in pack_chunks(lines, chunk_size):
            f.write(chunk + "\n")


def bootstrap_streams(env, bootstrap: BootInput, workdir: Path) -> BootStreams:
    """Bounded file sources of a snapshot's bootstrap lines, for a live input (written into ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    _write_chunks(workdir / "boot-events.chunks", bootstrap.event_lines, (), 1)
    _write_chunks(workdir / "boot-catalog.chunks", bootstrap.catalog_lines, (), 1)
    return BootStreams(
        _text_file_source(env, workdir / "boot-events.chunks", "bootstrap-events"),
        _text_file_source(env, workdir / "boot-catalog.chunks", "bootstrap-catalog"),
        len(bootstrap.event_lines),
        len(bootstrap.catalog_lines),
    )


def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="flowrec-replay-"))


def _text_file_source(env, path: Path, name: str, monitor_ms: int | None = None):
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream.connectors.file_system import FileSource, StreamFormat

    builder = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(path))
    if monitor_ms is not None:
        builder = builder.monitor_continuously(Duration.of_millis(monitor_ms))
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), name).uid(name).set_parallelism(1)


@dataclass
class CollectionSource:
    """Chunks held in memory (tests)."""

    event_chunks: Sequence[str]
    catalog_chunks: Sequence[str] = ()

    def create(self, env) -> JobInput:
        events = env.from_collection(list(self.event_chunks)).name("events").uid("events").set_parallelism(1)
        catalog = env.from_collection(list(self.catalog_chunks)).name("catalog").uid("catalog").set_parallelism(1) if self.catalog_chunks else None
        return JobInput(events, catalog)


@dataclass
class FileReplaySource:
    """Bounded replay of event files in event-time order (and an optional catalog file).

    The files are read once at start-up, ordered by ``ts`` (stable) and packed
    into chunk lines in a temporary directory that Flink's FileSource reads.
    With a ``bootstrap`` snapshot, its bootstrap lines head the packed files
    and only records with ``ts >= cutoff`` are replayed (the snapshot holds
    the older ones), so the same files serve the backfill and the job.
    """

    event_paths: Sequence[Path]
    catalog_path: Path | None = None
    chunk_size: int = 1000
    workdir: Path = field(default_factory=_workdir)
    bootstrap: BootInput | None = None

    def remove_workdir(self) -> None:
        """Delete the packed copies of the input (call once the job has ended: its sources read them)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def create(self, env) -> JobInput:
        self.workdir.mkdir(parents=True, exist_ok=True)
        boot = self.bootstrap
        lines: list[str] = []
        for path in self.event_paths:
            lines.extend(read_event_lines(Path(path)))
        if boot is not None:
            lines = _from_cutoff(lines, _event_time, boot.cutoff_ms, "event")
        lines.sort(key=_event_time)
        packed = self.workdir / "events.chunks"
        _write_chunks(packed, boot.event_lines if boot else (), lines, self.chunk_size)
        log.info("replaying %d event records from %s", len(lines), ", ".join(map(str, self.event_paths)))
        events = _text_file_source(env, packed, "events")
        catalog = None
        if self.catalog_path is not None or boot is not None:
            catalog_lines: list[str] = []
            if self.catalog_path is not None:
                with open(self.catalog_path, encoding="utf-8", errors="surrogateescape") as f:
                    catalog_lines = [line for line in f if line.strip()]
            if boot is not None:
                catalog_lines = _from_cutoff(catalog_lines, _catalog_time, boot.cutoff_ms, "catalog")
            catalog_lines.sort(key=_event_time)  # upserts apply in ts order, as in the reference
            packed_catalog = self.workdir / "catalog.chunks"
            _write_chunks(packed_catalog, boot.catalog_lines if boot else (), catalog_lines, self.chunk_size)
            catalog = _text_file_source(env, packed_catalog, "catalog")
        return JobInput(events, catalog, bootstrapped=boot is not None)


def heartbeat(env, interval_ms: int):
    """Heartbeat chunks, so event time advances while a live input is idle.

    A live source's watermark moves only with new records; the heartbeat (wall
    clock, every ``interval_ms``) closes windows during lulls.  It assumes live
    events carry ``ts`` close to the wall clock.
    ``interval_ms <= 0`` means no heartbeat (returns None).
    """
    if interval_ms <= 0:
        return None
    from pipelines.operators import TICK_PREFIX

    def tick(_: int) -> str:
        time.sleep(interval_ms / 1000)
        return f"{TICK_PREFIX}{time.time_ns() // 1_000_000}"

    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource

    sequence = NumberSequenceSource(0, 2**62)
    ticks = env.from_source(sequence, WatermarkStrategy.no_watermarks(), "heartbeat-sequence").uid("heartbeat-sequence").set_parallelism(1)
    return ticks.map(tick, output_type=Types.STRING()).name("heartbeat").uid("heartbeat").set_parallelism(1)


def _live_input(env, events, catalog, heartbeat_ms: int, bootstrap: BootInput | None, workdir: Path | None) -> JobInput:
    """A live input's streams, with the bootstrap streams when it starts from a snapshot."""
    boot = None if bootstrap is None else bootstrap_streams(env, bootstrap, workdir or _workdir())
    return JobInput(events, catalog, heartbeat(env, heartbeat_ms), bootstrapped=boot is not None, boot=boot)


@dataclass
class DirectorySource:
    """A spool directory watched continuously: ``events/`` and ``catalog/`` subfolders of JSON-lines files.

    Files must appear atomically (write a hidden ``.name`` then rename): Flink's
    file source skips names starting with ``.`` or ``_``.
    """

    spool_dir: Path
    poll_ms: int = 100
    heartbeat_ms: int = 50
    bootstrap: BootInput | None = None
    # Where the bootstrap lines are written for Flink to read (default: a new temporary directory).
    workdir: Path | None = None

    def create(self, env) -> JobInput:
        for sub in ("events", "catalog"):
            (Path(self.spool_dir) / sub).mkdir(parents=True, exist_ok=True)
        events = _text_file_source(env, Path(self.spool_dir) / "events", "spool-events", self.poll_ms)
        catalog = _text_file_source(env, Path(self.spool_dir) / "catalog", "spool-catalog", self.poll_ms)
        inputs = _live_input(env, events, catalog, self.heartbeat_ms, self.bootstrap, self.workdir)
        inputs.spool_dir = Path(self.spool_dir).resolve()
        return inputs


def _socket_lines(env, host: str, port: int, name: str):
    """Newline-delimited lines from a TCP server, via Flink's socket source (parallelism 1)."""
    from pyflink.common import Types
    from pyflink.datastream.functions import SourceFunction
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    function = jvm.org.apache.flink.streaming.api.functions.source.legacy.SocketTextStreamFunction(host, port, "\n", 0)
    return env.add_source(SourceFunction(function), name, Types.STRING()).uid(name).set_parallelism(1)


@dataclass
class SocketSource:
    """Newline-delimited events from a TCP server (live demos), via Flink's socket source.

    ``catalog`` (host, port): a second server sending catalog upserts and
    embedding switches, one JSON object per line.
    """

    host: str
    port: int
    heartbeat_ms: int = 50
    bootstrap: BootInput | None = None
    workdir: Path | None = None
    catalog: tuple[str, int] | None = None

    def create(self, env) -> JobInput:
        events = _socket_lines(env, self.host, self.port, "socket-events")
        catalog = None if self.catalog is None else _socket_lines(env, *self.catalog, "socket-catalog")
        return _live_input(env, events, catalog, self.heartbeat_ms, self.bootstrap, self.workdir)


KAFKA_JAR_HINT = "flink-sql-connector-kafka-<version>.jar (Maven Central: org.apache.flink:flink-sql-connector-kafka, a release for Flink 2.x)"
# Where a consumer group without committed offsets starts: the oldest retained record, or new records only.
KAFKA_STARTING_OFFSETS = ("earliest", "latest")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def valid_kafka_topic(name: str) -> bool:
    """Whether ``name`` is a legal Kafka topic name."""
    return bool(_KAFKA_TOPIC.fullmatch(name)) and name not in (".", "..")


@dataclass(frozen=True)
class KafkaInput:
    """What the job reads from Kafka: the brokers, the events topic, an optional catalog topic, the consumer group.

    A job resumes from its savepoint's offsets; a new job from the group's
    committed offsets (Flink commits them on every checkpoint); a group that
    has none starts at ``starting_offsets``.
    """

    brokers: str
    events_topic: str
    catalog_topic: str | None = None
    group_id: str = "flowrec"
    starting_offsets: str = "earliest"

    def __post_init__(self) -> None:
        if self.starting_offsets not in KAFKA_STARTING_OFFSETS:
            raise ValueError(f"starting offsets must be one of {', '.join(KAFKA_STARTING_OFFSETS)}")
        if not self.group_id:
            raise ValueError("the consumer group id must not be empty")
        for topic in (self.events_topic, self.catalog_topic):
            if topic is not None and not valid_kafka_topic(topic):
                raise ValueError(f"not a Kafka topic name: {topic!r}")
        if self.catalog_topic == self.events_topic:
            raise ValueError("the catalog topic must differ from the events topic")

    def topics(self) -> dict[str, str]:
        """Source name -> topic: ``kafka-events``, and ``kafka-catalog`` when there is a catalog topic."""
        named = {"kafka-events": self.events_topic}
        if self.catalog_topic is not None:
            named["kafka-catalog"] = self.catalog_topic
        return named

    def properties(self, source_name: str) -> dict[str, str]:
        """The Kafka consumer properties of one source (the builder sets them; also what the tests check)."""
        return {
            "bootstrap.servers": self.brokers,
            "group.id": self.group_id,
            # Used by the committed-offsets initializer when the group has no offset for a partition.
            "auto.offset.reset": self.starting_offsets,
            # Distinct client ids, so the two sources' consumers are told apart in broker logs and metrics.
            "client.id.prefix": f"{self.group_id}-{source_name}",
        }


@dataclass
class KafkaEventSource:
    """Events (and optionally catalog records) from Kafka topics (values are JSON lines or arrays); needs the Kafka connector jar.

    The jar is not bundled with PyFlink; pass it with ``--jar``.  Without it the
    job stops at start-up with a message naming the jar.
    """

    kafka: KafkaInput
    jars: Sequence[Path] = ()
    heartbeat_ms: int = 50
    bootstrap: BootInput | None = None
    workdir: Path | None = None

    def create(self, env) -> JobInput:
        if not any("kafka" in Path(j).name for j in self.jars):
            raise RuntimeError(f"the Kafka source needs the Kafka connector jar; pass --jar /path/to/{KAFKA_JAR_HINT}")
        for jar in self.jars:
            if not Path(jar).is_file():
                raise RuntimeError(f"jar not found: {jar}")
        env.add_jars(*[Path(j).resolve().as_uri() for j in self.jars])
        streams = {name: self._stream(env, name, topic) for name, topic in self.kafka.topics().items()}
        return _live_input(env, streams["kafka-events"], streams.get("kafka-catalog"), self.heartbeat_ms, self.bootstrap, self.workdir)

    def _stream(self, env, name: str, topic: str):
        from pyflink.common import WatermarkStrategy
        from pyflink.common.serialization import SimpleStringSchema
        from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy, KafkaOffsetsInitializer, KafkaSource

        reset = KafkaOffsetResetStrategy.EARLIEST if self.kafka.starting_offsets == "earliest" else KafkaOffsetResetStrategy.LATEST
        builder = (
            KafkaSource.builder()
            .set_bootstrap_servers(self.kafka.brokers)
            .set_topics(topic)
            .set_group_id(self.kafka.group_id)
            .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets(reset))
            .set_value_only_deserializer(SimpleStringSchema())
        )
        for key, value in self.kafka.properties(name).items():
            builder = builder.set_property(key, value)
        # The catalog is one ordered stream (upserts apply in order); events keep the job's parallelism.
        stream = env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), name).uid(name)
        return stream.set_parallelism(1) if name == "kafka-catalog" else stream
