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
"""

from __future__ import annotations

import os
import site
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from flowrec.config import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    # Checkpoints always go to files: the JobManager's memory storage caps state at 5 MB.
    checkpoint_dir = settings.checkpoint_dir or os.path.join(tempfile.gettempdir(), "flowrec-checkpoints")
    conf["execution.checkpointing.dir"] = checkpoint_dir if "://" in checkpoint_dir else Path(checkpoint_dir).resolve().as_uri()
    if extra:
        conf.update(extra)
    return conf


def create_environment(settings: Settings, restore_from: str | None = None, extra: Mapping[str, str] | None = None):
    """A configured environment (local mini-cluster when run in-process)."""
    os.environ["PYTHONPATH"] = python_path()
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    conf = flink_configuration(settings, extra)
    if restore_from:
        is_uri = restore_from.split(":", 1)[0] in ("file", "hdfs", "s3", "s3a", "gs", "abfs", "oss") and ":" in restore_from
        conf["execution.state-recovery.path"] = restore_from if is_uri else Path(restore_from).resolve().as_uri()
    configuration = Configuration()
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
