"""The job's entry point without a JVM: which source the input flags build."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flowrec.commands import submit
from flowrec.config import Settings, UsageError, load_settings
from pipelines.main import add_job_arguments, choose_source
from pipelines.sources import KafkaEventSource, KafkaInput, SocketSource


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_job_arguments(parser)
    return parser.parse_args(list(argv))


def test_kafka_flags_build_the_kafka_input(tmp_path: Path):
    jar = tmp_path / "flink-sql-connector-kafka-4.0.0-2.0.jar"
    jar.write_bytes(b"")
    args = parse("--kafka-brokers", "b1:9092,b2:9092", "--kafka-topic", "shop.events", "--kafka-catalog-topic", "shop.catalog",
                 "--kafka-group-id", "recs-eu", "--kafka-starting-offsets", "latest", "--jar", str(jar))
    source = choose_source(args, load_settings(args, env={}))
    assert isinstance(source, KafkaEventSource) and source.jars == [jar]
    assert source.kafka == KafkaInput("b1:9092,b2:9092", "shop.events", "shop.catalog", "recs-eu", "latest")
    # Defaults: the group `flowrec`, from the earliest offset the topic still holds, no catalog topic.
    plain = parse("--kafka-brokers", "b:9092", "--kafka-topic", "events", "--jar", str(jar))
    assert choose_source(plain, Settings()).kafka == KafkaInput("b:9092", "events", None, "flowrec", "earliest")
    # `flowrec submit` hands the same flags to the job on the cluster.
    forwarded = submit.job_arguments(args)
    assert forwarded[forwarded.index("--kafka-catalog-topic") + 1] == "shop.catalog"
    assert forwarded[forwarded.index("--kafka-group-id") + 1] == "recs-eu"
    assert forwarded[forwarded.index("--kafka-starting-offsets") + 1] == "latest"


def test_socket_flags_build_a_source_with_a_catalog_socket():
    source = choose_source(parse("--socket", "127.0.0.1:9999", "--socket-catalog", "[::1]:9998"), Settings())
    assert isinstance(source, SocketSource)
    assert (source.host, source.port, source.catalog) == ("127.0.0.1", 9999, ("::1", 9998))
    assert choose_source(parse("--socket", "h:1"), Settings()).catalog is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--kafka-catalog-topic", "c", "--socket", "h:1"], "--kafka-catalog-topic goes with --kafka-brokers"),
        (["--kafka-brokers", "b:9092"], "--kafka-brokers needs --kafka-topic"),
        (["--kafka-brokers", "b:9092", "--kafka-topic", "e", "--kafka-group-id", ""], "Kafka input: the consumer group id must not be empty"),
        (["--kafka-brokers", "b:9092", "--kafka-topic", "e", "--kafka-catalog-topic", "e"], "Kafka input: the catalog topic must differ"),
    ],
)
def test_input_flags_that_do_not_fit_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        choose_source(parse(*argv), Settings())


@pytest.mark.parametrize("argv", [["--kafka-topic", "has space"], ["--kafka-starting-offsets", "committed"], ["--socket", "h:99999"]])
def test_malformed_input_flags_are_argparse_errors(argv):
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2


def test_no_operator_registers_a_python_gauge():
    """PyFlink's thread-mode gauges call back into Python from Flink's metric threads; querying one
    after its operator finished crashed a TaskManager (SIGSEGV in pemja, seen on a standalone cluster).
    Operators report through counters and distributions, which live on the Java side."""
    import ast
    from pathlib import Path

    calls = []
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "gauge":
                calls.append(f"{path.name}:{node.lineno}")
    assert calls == []
