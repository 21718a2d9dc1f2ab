"""The shape of the job's dataflow (its execution plan, no job run): the Python operators it has.

Every Python operator in thread mode costs a Java/Python crossing per record and
a share of one interpreter, and a round-robin edge from a keyed operator to one
at parallelism 1 caps the job's scale-out.  These tests catch either coming back.
"""

from __future__ import annotations

import json

import pytest

from flowrec.config import Settings
from pipelines.flink_env import create_environment
from pipelines.job import RedisJobSink, build_job
from pipelines.sources import SocketSource

pytestmark = pytest.mark.flink


def plan(settings: Settings) -> list[dict]:
    """The plan's nodes of the live job on a socket (nothing connects: the plan is only built)."""
    env = create_environment(settings)
    build_job(env, SocketSource("127.0.0.1", 9, heartbeat_ms=10), RedisJobSink("redis://127.0.0.1:9/0"), settings)
    return json.loads(env.get_execution_plan())["nodes"]


def test_no_side_output_without_a_consumer():
    """Each side output taken adds a Python operator: a node nothing reads must be a sink."""
    nodes = plan(Settings(parallelism=1))
    read = {p["id"] for node in nodes for p in node.get("predecessors", [])}
    dangling = [node["contents"] for node in nodes if node["id"] not in read and "redis-" not in node["contents"]]
    assert dangling == []


def test_side_outputs_scale_with_the_keyed_operators():
    """At parallelism 2 nothing is fed round-robin: side outputs stay at their producer's
    parallelism (a forward edge keeps each producer's records in order) and sinks follow them."""
    nodes = plan(Settings(parallelism=2))
    by_id = {node["id"]: node for node in nodes}
    round_robin = [(by_id[p["id"]]["contents"], node["contents"]) for node in nodes for p in node.get("predecessors", []) if p["ship_strategy"] == "REBALANCE"]
    assert round_robin == []
    assert all(node["parallelism"] == 2 for node in nodes if any(name in node["contents"] for name in ("redis-job-stats", "redis-item-neighbours", "user-state", "item-model", "scorer")))


def test_the_event_path_has_no_python_operator_of_pyflinks_own():
    """Between parsing and the keyed operators only the event-time assigner's operator is PyFlink's: no
    key extraction (``_stream_key_by_map_operator``), no side-output identity map, no heartbeat filter.
    Each would unpickle and pickle every record again, holding the interpreter lock."""
    nodes = plan(Settings(parallelism=2))
    by_id = {node["id"]: node for node in nodes}
    keyed = {"user-state", "item-model", "trending"}
    feeding = [by_id[p["id"]]["contents"] for node in nodes if node["contents"] in keyed for p in node["predecessors"]]
    assert feeding and not any("_stream_key_by_map_operator" in name or name == "Map" for name in feeding), feeding
    assert not any(node["contents"] == "drop-heartbeats" for node in nodes)
    # The scorer's keyed input comes from user-state itself.
    (scorer,) = [node for node in nodes if node["contents"] == "scorer"]
    assert "user-state" in {by_id[p["id"]]["contents"] for p in scorer["predecessors"]}


def test_attribution_adds_only_the_metrics_path():
    """Attribution runs inside user-state: turned on, it adds its counts' side output (extracted and keyed
    for the metrics) and the metrics operator with its sink, no operator of its own and no feedback edge."""
    on = plan(Settings(parallelism=2))
    off = plan(Settings(parallelism=2, attribution=False))
    assert not any("attribution" in node["contents"] for node in on)
    added = sorted(node["contents"] for node in on)
    for node in off:
        added.remove(node["contents"])
    assert len(added) == 2 and any("metrics" in contents for contents in added), added
