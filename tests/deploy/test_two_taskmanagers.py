"""Scale-out on a standalone cluster of two TaskManagers (thread mode, one slot each):
each TaskManager embeds its own Python interpreter, so a job at parallelism 2 has two
Python cores.  The job's Redis content equals the reference engine's there too."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowrec.config import Settings
from tests.deploy.conftest import Cluster, running_cluster
from tests.pipelines.jobkit import differences, reference_content, results
from transforms.catalog import parse_catalog_lines
from transforms.events import parse_json_lines
from transforms.synthetic import write_shop

pytestmark = [pytest.mark.cluster, pytest.mark.flink]


@pytest.fixture(scope="module")
def two_taskmanagers(tmp_path_factory) -> Cluster:
    with running_cluster(tmp_path_factory.mktemp("flink-two-tms"), FLOWREC_FLINK_TASKMANAGERS="2", FLOWREC_FLINK_SLOTS="1") as cluster:
        yield cluster


def test_two_taskmanagers_register_and_start_is_idempotent(two_taskmanagers):
    overview = two_taskmanagers.rest.overview()
    assert overview["taskmanagers"] == 2 and overview["slots-total"] == 2
    assert len(two_taskmanagers.pids("taskexecutor")) == 2
    again = two_taskmanagers.script("start")
    assert again.returncode == 0 and "already running" in again.stderr
    status = two_taskmanagers.script("status")
    assert status.returncode == 0 and all(str(pid) in status.stdout for pid in two_taskmanagers.pids("taskexecutor"))


def test_job_at_parallelism_two_spans_both_taskmanagers_and_equals_the_reference(two_taskmanagers, redis_url, tmp_path: Path):
    shop = write_shop(tmp_path / "shop", users=60, items=40, events=1500, seed=11)
    events_file, catalog_file = tmp_path / "shop" / "events.jsonl", tmp_path / "shop" / "catalog.jsonl"
    done = two_taskmanagers.flowrec(
        "submit", "--events", str(events_file), "--catalog", str(catalog_file),
        "--redis-url", redis_url, "--parallelism", "2", "--user-shards", "4", "--item-shards", "2",
        "--restart-attempts", "0", "--jobmanager", two_taskmanagers.jobmanager, "--wait", "--timeout", "400",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    job_id = done.stdout.strip()
    rest = two_taskmanagers.rest
    assert rest.job(job_id)["state"] == "FINISHED"
    scorer = next(v for v in rest.job(job_id)["vertices"] if "scorer" in v["name"])
    placed = rest.request("GET", f"/jobs/{job_id}/vertices/{scorer['id']}/taskmanagers")
    assert scorer["parallelism"] == 2
    assert len({tm["taskmanager-id"] for tm in placed["taskmanagers"]}) == 2, "the scorer's two subtasks ran on two TaskManagers"

    events = parse_json_lines(events_file.read_bytes().splitlines()).events
    catalog, rejected = parse_catalog_lines(catalog_file.read_bytes().splitlines())
    assert len(events) == shop.events and not rejected
    expected = reference_content(events, catalog, Settings(user_shards=4, item_shards=2))
    assert differences(results(redis_url), expected) == []
