"""A standalone Flink session cluster for the deploy tests, started once per session
by deploy/cluster.sh on free ports in a temporary run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from flowrec.commands.cluster import FlinkRest
from flowrec.localredis import free_port

REPO = Path(__file__).resolve().parent.parent.parent
CLUSTER_SH = REPO / "deploy" / "cluster.sh"
FLOWREC = [sys.executable, "-m", "flowrec.cli"]


@dataclass(frozen=True)
class Cluster:
    """A running cluster and the environment that makes scripts and `flowrec` address it."""

    run_dir: Path
    rest_port: int
    env: dict[str, str]

    @property
    def jobmanager(self) -> str:
        return f"localhost:{self.rest_port}"

    @property
    def rest(self) -> FlinkRest:
        return FlinkRest(f"http://localhost:{self.rest_port}")

    def script(self, action: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CLUSTER_SH), action], env=self.env, capture_output=True, text=True, timeout=timeout)

    def flowrec(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*FLOWREC, *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def pids(self, daemon: str) -> list[int]:
        """Live pids recorded for ``daemon`` (standalonesession | taskexecutor)."""
        path = self.run_dir / "pid" / f"flink-flowrec-{daemon}.pid"
        alive = []
        for line in path.read_text().split() if path.exists() else []:
            try:
                os.kill(int(line), 0)
                alive.append(int(line))
            except OSError:
                pass
        return alive


def cluster_environment(run_dir: Path, rest_port: int, rpc_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWREC_", "FLINK_")) and k not in ("REDIS_URL",)}
    env.update(
        FLOWREC_CLUSTER_DIR=str(run_dir),
        FLOWREC_FLINK_REST_PORT=str(rest_port),
        FLOWREC_FLINK_RPC_PORT=str(rpc_port),
        FLOWREC_FLINK_SLOTS="2",
        FLOWREC_PYTHON=sys.executable,
    )
    return env


@contextmanager
def running_cluster(run_dir: Path, **settings: str) -> Iterator[Cluster]:
    """A cluster started by deploy/cluster.sh on free ports (``settings``: extra FLOWREC_FLINK_* values), stopped after."""
    rest_port = free_port()
    cluster = Cluster(run_dir, rest_port, cluster_environment(run_dir, rest_port, free_port()) | settings)
    started = cluster.script("start")
    assert started.returncode == 0, f"cluster start failed:\n{started.stdout}\n{started.stderr}"
    try:
        yield cluster
    finally:
        stopped = cluster.script("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert cluster.pids("standalonesession") == [] and cluster.pids("taskexecutor") == []


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory) -> Cluster:
    with running_cluster(tmp_path_factory.mktemp("flink-cluster")) as cluster:
        yield cluster
