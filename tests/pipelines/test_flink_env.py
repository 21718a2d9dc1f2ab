"""The environment the job's JVM starts with: its native allocator (:func:`pipelines.flink_env.allocator_env`),
and the Flink configuration flowrec sets (:func:`pipelines.flink_env.flink_configuration`)."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import flink_env
from flowrec.config import Settings
from pipelines.flink_env import GLIBC_MALLOC_ENV, allocator_env, flink_configuration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def jemalloc(monkeypatch):
    """Pretend the system has (or lacks) jemalloc: returns a setter."""

    def installed(yes: bool) -> None:
        monkeypatch.setattr(flink_env.ctypes.util, "find_library", lambda name: "libjemalloc.so.2" if yes and name == "jemalloc" else None)

    return installed


def test_auto_preloads_jemalloc_when_installed(jemalloc):
    jemalloc(True)
    assert allocator_env("auto", {}) == {"LD_PRELOAD": "libjemalloc.so.2"}
    assert allocator_env("jemalloc", {"LD_PRELOAD": "libfoo.so"}) == {"LD_PRELOAD": "libjemalloc.so.2:libfoo.so"}  # kept, after it


def test_auto_tunes_glibc_without_jemalloc(jemalloc):
    jemalloc(False)
    assert allocator_env("auto", {}) == GLIBC_MALLOC_ENV
    with pytest.raises(ValueError, match="apt-get install libjemalloc2"):
        allocator_env("jemalloc", {})


def test_a_job_asking_for_missing_jemalloc_is_a_usage_error_before_any_jvm(jemalloc):
    from flowrec.config import Settings, UsageError
    from pipelines.flink_env import create_environment

    jemalloc(False)
    with pytest.raises(UsageError, match="--native-allocator: .*apt-get install libjemalloc2"):
        create_environment(Settings(native_allocator="jemalloc"))


def test_glibc_system_and_the_users_own_settings(jemalloc):
    jemalloc(True)
    assert allocator_env("glibc", {}) == GLIBC_MALLOC_ENV
    assert allocator_env("system", {}) == {}
    assert allocator_env("auto", {"MALLOC_ARENA_MAX": "4"}) == {}  # the user tuned glibc
    assert allocator_env("glibc", {"LD_PRELOAD": "/opt/lib/libjemalloc.so"}) == {}  # the user preloads jemalloc
    with pytest.raises(ValueError, match="auto, jemalloc, glibc or system"):
        allocator_env("tcmalloc", {})


def test_cluster_script_exports_come_from_the_same_rule():
    """deploy/cluster.sh evaluates `python -m pipelines.flink_env allocator-env`; a bad choice is one line on stderr."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
    run = lambda choice: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pipelines.flink_env", "allocator-env"], cwd=REPO, env={**env, "FLOWREC_NATIVE_ALLOCATOR": choice}, capture_output=True, text=True
    )
    glibc = run("glibc")
    assert glibc.returncode == 0 and glibc.stdout.splitlines() == [f"export {k}={v}" for k, v in GLIBC_MALLOC_ENV.items()]
    assert run("system").stdout == ""
    bad = run("tcmalloc")
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.flink
@pytest.mark.skipif(ctypes.util.find_library("jemalloc") is None, reason="jemalloc is not installed here")
def test_the_mini_cluster_jvm_runs_on_jemalloc_and_this_process_does_not():
    """The JVM (the job's Python, in thread mode) has jemalloc mapped; the launching process's environment is restored."""
    code = """
import os, sys
from flowrec.config import Settings
from pipelines.flink_env import create_environment
from pyflink.java_gateway import get_gateway
create_environment(Settings())
pid = get_gateway().jvm.java.lang.ProcessHandle.current().pid()
maps = open(f"/proc/{pid}/maps").read()
print("jemalloc" in maps, "LD_PRELOAD" in os.environ)
"""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]


def test_rocksdb_checkpoints_are_incremental():
    """A RocksDB job uploads only the files written since its last checkpoint (the restore tests check the files)."""
    assert flink_configuration(Settings(state_backend="rocksdb"))["execution.checkpointing.incremental"] == "true"
    assert "execution.checkpointing.incremental" not in flink_configuration(Settings(state_backend="hashmap"))
