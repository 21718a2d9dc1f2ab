"""Create a StreamExecutionEnvironment configured from :class:`flowrec.config.Settings`.

Why each setting:

* ``python.execution-mode: thread`` runs Python operators inside the JVM (about
  2x process mode here); ``python.executable`` must name this interpreter, and
  the embedded interpreter only sees the venv and this checkout through
  ``PYTHONPATH``, which must be set before the JVM starts.
* ``set_buffer_timeout`` and a short auto-watermark interval keep the
  event -> Redis latency in milliseconds instead of the 100-200 ms defaults.
* ``python.fn-execution.bundle.time``: in process mode a bundle of records
  goes to the Python worker when it is full or this old (10 ms keeps the
  latency low).  In thread mode records are handed over one by one and
  finishing a bundle does nothing (PyFlink 2.3's embedded operators inherit a
  no-op ``invokeFinishBundle``), yet every Python operator still runs a
  processing-time timer at this period: 1 s instead of 10 ms spares the
  task threads about a hundred wake-ups per operator per second.
* Checkpointing, state backend and restore path come from settings so the same
  job runs on the mini-cluster and on a standalone cluster.
* The JVM that runs the job starts with jemalloc as its native allocator when
  it is installed (:func:`allocator_env`), as Flink's own Docker images do.
  In thread mode that JVM holds the job's Python, and with glibc's malloc the
  memory its numpy temporaries and RocksDB freed stayed with the process:
  in a 1M-user replay glibc held 2.3-2.9 GB free (``mallinfo2``), returned at
  once by a ``malloc_trim``; the peak of a 300k-user replay was 4.8 GB with
  glibc's defaults, 3.9 GB with the glibc settings below, 3.5 GB with jemalloc.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import logging
import os
import shlex
import site
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from flowrec.config import NATIVE_ALLOCATORS, Settings, UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)

# glibc's malloc when jemalloc is not installed: two arenas instead of eight per core, and fixed
# thresholds (the default mmap threshold rises to the largest block freed, so numpy's large
# temporaries come from the arenas and stay there) so large blocks go back to the system.
GLIBC_MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144", "MALLOC_TRIM_THRESHOLD_": "1048576"}


def python_path() -> str:
    """The venv's site-packages plus this checkout, for the embedded/worker interpreters."""
    entries = [str(REPO_ROOT)] + [p for p in site.getsitepackages() if os.path.isdir(p)]
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join(entries + ([existing] if existing else []))


def flink_configuration(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Flink configuration keys flowrec sets, as strings (also used for `flink run -D`)."""
    conf = {
        "python.execution-mode": settings.execution_mode,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "pipeline.auto-watermark-interval": "10 ms",
        "python.fn-execution.bundle.time": "10" if settings.execution_mode == "process" else "1000",
        "python.fn-execution.bundle.size": "1000",
        "state.backend.type": settings.state_backend,
        "execution.checkpointing.interval": f"{settings.checkpoint_interval_ms} ms",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "taskmanager.memory.process.size": "2g",
        "restart-strategy.type": "exponential-delay" if settings.restart_attempts else "none",
        "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(max(settings.restart_attempts, 1)),
        "restart-strategy.exponential-delay.initial-backoff": "200 ms",
        "restart-strategy.exponential-delay.max-backoff": "10 s",
        "pipeline.name": "flowrec",
    }
    if settings.state_backend == "rocksdb":
        # Each checkpoint uploads only the RocksDB files written since the last one.  Flink's default
        # (a full snapshot) iterated and copied the whole state every interval: 600 MB every 10 s, each
        # taking 5-10 s, by 1.7M events of the 1M-user replay, so the cost of a checkpoint grew with the shop.
        conf["execution.checkpointing.incremental"] = "true"
    # Checkpoints always go to files: the JobManager's memory storage caps state at 5 MB.
    checkpoint_dir = settings.checkpoint_dir or os.path.join(tempfile.gettempdir(), "flowrec-checkpoints")
    conf["execution.checkpointing.dir"] = checkpoint_dir if "://" in checkpoint_dir else Path(checkpoint_dir).resolve().as_uri()
    if extra:
        conf.update(extra)
    return conf


def allocator_env(choice: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables the JVM that runs the job should start with, for ``choice``
    (:attr:`flowrec.config.Settings.native_allocator`), given the current ``environ``.

    ``auto``: jemalloc (``LD_PRELOAD``) when the system has it, otherwise
    glibc's malloc with :data:`GLIBC_MALLOC_ENV`; ``jemalloc``: jemalloc or a
    ValueError saying how to install it; ``glibc``: :data:`GLIBC_MALLOC_ENV`;
    ``system``: nothing.  An environment that already preloads jemalloc or
    sets any ``MALLOC_*`` variable is left as it is (the user chose).
    """
    if choice not in NATIVE_ALLOCATORS:
        raise ValueError(f"native allocator must be {', '.join(NATIVE_ALLOCATORS[:-1])} or {NATIVE_ALLOCATORS[-1]}, not {choice!r}")
    if choice == "system" or "jemalloc" in environ.get("LD_PRELOAD", "") or any(name.startswith("MALLOC_") for name in environ):
        return {}
    if choice in ("auto", "jemalloc"):
        found = ctypes.util.find_library("jemalloc")  # a soname (libjemalloc.so.2): LD_PRELOAD searches the library path for it
        if found:
            preload = environ.get("LD_PRELOAD")
            return {"LD_PRELOAD": f"{found}:{preload}" if preload else found}
        if choice == "jemalloc":
            raise ValueError("native allocator jemalloc: libjemalloc is not installed (Debian/Ubuntu: apt-get install libjemalloc2; or choose glibc)")
    return dict(GLIBC_MALLOC_ENV)


@contextlib.contextmanager
def _environment(changes: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``changes`` while the block runs (a process started in it inherits them)."""
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def create_environment(settings: Settings, restore_from: str | None = None, extra: Mapping[str, str] | None = None):
    """A configured environment (local mini-cluster when run in-process)."""
    os.environ["PYTHONPATH"] = python_path()
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = flink_configuration(settings, extra)
    if restore_from:
        is_uri = restore_from.split(":", 1)[0] in ("file", "hdfs", "s3", "s3a", "gs", "abfs", "oss") and ":" in restore_from
        conf["execution.state-recovery.path"] = restore_from if is_uri else Path(restore_from).resolve().as_uri()
    # The first Java object of a process starts the JVM (the mini-cluster, when run in-process): it
    # starts with the native allocator's variables, which this process does not keep.
    try:
        jvm_env = allocator_env(settings.native_allocator, os.environ)
    except ValueError as exc:
        raise UsageError(f"--native-allocator: {exc}") from None
    with _environment(jvm_env):
        configuration = Configuration()
    if jvm_env:
        log.info("the JVM runs with %s (unless this process had started it before)", " ".join(f"{k}={v}" for k, v in jvm_env.items()))
    for key, value in conf.items():
        configuration.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(configuration)
    env.set_parallelism(1)  # build_job sets the keyed operators' parallelism
    env.set_buffer_timeout(1)
    return env


def stop_with_savepoint(job_client, directory: str, drain: bool = False) -> str:
    """Stop a running job with a savepoint in ``directory``; returns the savepoint path.

    PyFlink 2.3's ``JobClient.stop_with_savepoint`` calls a Java method that no
    longer exists (the format type became a parameter), so this calls the Java
    client directly with the canonical format.
    """
    from pyflink.java_gateway import get_gateway

    format_type = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    return str(job_client._j_job_client.stopWithSavepoint(drain, directory, format_type).get())


def _print_allocator_exports() -> int:
    """``python -m pipelines.flink_env allocator-env``: the allocator's variables as shell exports, for
    deploy/cluster.sh's TaskManagers (choice from FLOWREC_NATIVE_ALLOCATOR, default auto)."""
    try:
        exports = allocator_env(os.environ.get("FLOWREC_NATIVE_ALLOCATOR") or "auto", os.environ)
    except ValueError as exc:
        print(f"FLOWREC_NATIVE_ALLOCATOR: {exc}", file=sys.stderr)
        return 2
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["allocator-env"]:
        print("usage: python -m pipelines.flink_env allocator-env", file=sys.stderr)
        sys.exit(2)
    sys.exit(_print_allocator_exports())
