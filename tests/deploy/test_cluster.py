"""deploy/cluster.sh and `flowrec submit` against a real standalone Flink cluster:
the submitted job's Redis content equals the reference engine's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from flowrec.config import Settings
from tests.deploy.conftest import CLUSTER_SH, cluster_environment
from tests.pipelines.jobkit import differences, reference_content, results
from transforms.catalog import parse_catalog_lines
from transforms.events import parse_json_lines
from transforms.synthetic import write_shop

pytestmark = [pytest.mark.cluster, pytest.mark.flink]


def test_status_reports_one_taskmanager_with_two_slots(flink_cluster):
    status = flink_cluster.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    overview = json.loads(status.stdout.split("overview:", 1)[1])
    assert overview["taskmanagers"] == 1
    assert overview["slots-total"] == 2
    assert overview["flink-version"].startswith("2.")


def test_start_is_idempotent(flink_cluster):
    taskmanagers = flink_cluster.pids("taskexecutor")
    again = flink_cluster.script("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert flink_cluster.pids("taskexecutor") == taskmanagers


def test_cluster_classpath_holds_the_flink_python_jar(flink_cluster):
    jars = sorted(p.name for p in (flink_cluster.run_dir / "lib").iterdir())
    assert any(name.startswith("flink-python-") for name in jars)
    assert any(name.startswith("flink-dist-") for name in jars)
    conf = (flink_cluster.run_dir / "conf" / "config.yaml").read_text()
    assert f"port: {flink_cluster.rest_port}" in conf
    assert "${" not in conf, "every template placeholder is filled"


def test_start_refuses_a_rest_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("localhost", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = cluster_environment(tmp_path / "run", port, port + 1)
        done = subprocess.run(["bash", str(CLUSTER_SH), "start"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"REST port {port}" in done.stderr and "in use" in done.stderr
    assert not (tmp_path / "run" / "pid" / "flink-flowrec-standalonesession.pid").exists()


def test_stop_and_status_of_a_cluster_that_never_ran(tmp_path):
    env = cluster_environment(tmp_path / "never", 1, 2)
    stop = subprocess.run(["bash", str(CLUSTER_SH), "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and "not running" in stop.stderr
    status = subprocess.run(["bash", str(CLUSTER_SH), "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 1
    assert "jobmanager:  not running" in status.stdout


def _namespace(content: dict[bytes, bytes], namespace: str) -> dict[bytes, bytes]:
    prefix = f"{namespace}:".encode()
    return {k: v for k, v in content.items() if k.startswith(prefix)}


def test_bounded_replay_submitted_twice_equals_the_reference_engine(flink_cluster, redis_url, redis_client, tmp_path: Path):
    """Two thread-mode jobs in one session (the second at parallelism 2): both equal the reference.

    Without flink-python on the cluster's lib path, the second thread-mode job
    of a session fails; this test would catch that regression.
    """
    shop = write_shop(tmp_path / "shop", users=60, items=40, events=1500, seed=7)
    events_file, catalog_file = tmp_path / "shop" / "events.jsonl", tmp_path / "shop" / "catalog.jsonl"
    taskmanagers = flink_cluster.pids("taskexecutor")
    for namespace, parallelism in (("flowrec", 1), ("second", 2)):
        done = flink_cluster.flowrec(
            "submit", "--events", str(events_file), "--catalog", str(catalog_file),
            "--redis-url", redis_url, "--namespace", namespace, "--parallelism", str(parallelism),
            "--restart-attempts", "0", "--jobmanager", flink_cluster.jobmanager, "--wait", "--timeout", "400",
        )
        assert done.returncode == 0, done.stderr[-4000:]
        job_id = done.stdout.strip()
        assert flink_cluster.rest.job(job_id)["state"] == "FINISHED"
        assert redis_url not in done.stderr, "the Redis URL is not echoed"
        assert int(redis_client.hget(f"{namespace}:v1:stats", "events")) == shop.events
    assert flink_cluster.pids("taskexecutor") == taskmanagers, "the same TaskManager ran both jobs"

    events = parse_json_lines(events_file.read_bytes().splitlines()).events
    catalog, rejected = parse_catalog_lines(catalog_file.read_bytes().splitlines())
    assert len(events) == shop.events and not rejected
    content = results(redis_url)
    for namespace in ("flowrec", "second"):
        job = _namespace(content, namespace)
        assert any(b":rec:" in k for k in job) and any(b":sim:" in k for k in job) and any(b":content:" in k for k in job)
        assert differences(job, reference_content(events, catalog, Settings(namespace=namespace))) == []


def test_start_brings_back_a_lost_taskmanager(flink_cluster):
    (lost,) = flink_cluster.pids("taskexecutor")
    os.kill(lost, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while flink_cluster.pids("taskexecutor") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert flink_cluster.pids("taskexecutor") == []
    restarted = flink_cluster.script("start")
    assert restarted.returncode == 0, restarted.stderr
    assert "starting the missing TaskManager" in restarted.stderr
    (replacement,) = flink_cluster.pids("taskexecutor")
    assert replacement != lost
    # The JobManager drops the lost TaskManager once its heartbeats fail (seconds to a minute).
    deadline = time.monotonic() + 120
    while (overview := flink_cluster.rest.overview())["taskmanagers"] != 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert overview["taskmanagers"] == 1 and overview["slots-total"] == 2 and overview["slots-available"] == 2
