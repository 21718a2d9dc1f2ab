"""Source wiring that needs no cluster: chunk packing, file reading, start-up checks."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipelines.operators import split_chunk
from pipelines.sources import KafkaEventSource, KafkaInput, pack_chunks, read_event_lines
from transforms.events import parse_json_lines


def test_chunks_carry_many_records_and_split_back():
    lines = [orjson.dumps({"n": n}).decode() for n in range(7)]
    chunks = list(pack_chunks(lines + [""], 3))
    assert len(chunks) == 3 and all("\n" not in c for c in chunks)
    assert [r for c in chunks for r in split_chunk(c)] == lines


def test_event_files_in_every_format_read_alike(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": 1_700_000_000_000}, {"user_id": "u2", "item_id": "i2", "event_type": "purchase", "ts": 1_700_000_000_500, "price": 9.5}]
    (tmp_path / "e.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    (tmp_path / "e.csv").write_text("user_id,item_id,event_type,ts,price\nu1,i1,view,1700000000000,\nu2,i2,purchase,1700000000500,9.5\n")
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "e.parquet")
    parsed = {name: parse_json_lines(read_event_lines(tmp_path / name)) for name in ("e.jsonl", "e.csv", "e.parquet")}
    for result in parsed.values():
        assert result.rejections == []
        assert result.events.user.tolist() == ["u1", "u2"] and result.events.ts.tolist() == [1_700_000_000_000, 1_700_000_000_500]
    with pytest.raises(ValueError, match="unsupported event file type"):
        read_event_lines(tmp_path / "e.txt")


def test_kafka_without_the_connector_jar_fails_at_start_naming_the_jar():
    with pytest.raises(RuntimeError, match="flink-sql-connector-kafka"):
        KafkaEventSource(KafkaInput("127.0.0.1:9092", "events")).create(env=None)
    with pytest.raises(RuntimeError, match="jar not found"):
        KafkaEventSource(KafkaInput("127.0.0.1:9092", "events"), jars=[Path("/nonexistent/flink-sql-connector-kafka-4.0.jar")]).create(env=None)


def test_kafka_input_reads_a_catalog_topic_with_the_configured_group_and_starting_offsets():
    kafka = KafkaInput("b1:9092,b2:9092", "shop.events", catalog_topic="shop.catalog", group_id="recs-eu", starting_offsets="latest")
    assert kafka.topics() == {"kafka-events": "shop.events", "kafka-catalog": "shop.catalog"}
    for name in ("kafka-events", "kafka-catalog"):
        assert kafka.properties(name) == {
            "bootstrap.servers": "b1:9092,b2:9092",
            "group.id": "recs-eu",
            "auto.offset.reset": "latest",
            "client.id.prefix": f"recs-eu-{name}",
        }
    plain = KafkaInput("b:9092", "events")
    assert plain.topics() == {"kafka-events": "events"}, "no catalog topic: the job has no catalog input, as before"
    # A new consumer group reads what the topic still holds unless told otherwise.
    assert plain.properties("kafka-events")["auto.offset.reset"] == "earliest" and plain.group_id == "flowrec"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"starting_offsets": "committed"}, "starting offsets"),
        ({"group_id": ""}, "group id"),
        ({"catalog_topic": "bad topic"}, "not a Kafka topic"),
        ({"catalog_topic": "events"}, "must differ"),
    ],
)
def test_kafka_input_rejects_bad_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        KafkaInput("b:9092", "events", **fields)
