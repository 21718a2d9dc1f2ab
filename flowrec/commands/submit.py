"""`flowrec submit`: the streaming job on a Flink cluster, via ``bin/flink run -py pipelines/main.py``.

The job takes the same flags as `flowrec run` (input, settings); they are
passed through to pipelines/main.py, which builds the job in a Python
client process started by the Flink CLI.  The Redis URL is required (there
is no private-Redis fallback on a cluster) and is handed to that process in
the environment, never on a command line, so it does not show up in process
listings or Flink's logs; so is the rec_id secret (``--rec-id-secret[-file]``).

By default the command returns once the job is accepted and prints its id on
stdout; ``--wait`` also waits for the job to end (bounded inputs).  Inputs
given as files must be readable at the same paths by the cluster's processes
(true for deploy/cluster.sh on this machine; use shared storage otherwise).
The same holds for ``--bootstrap SNAPSHOT_DIR``: the Flink client reads the
snapshot here and writes its bootstrap lines under ``TMPDIR``, which the
task managers read (point ``TMPDIR`` at shared storage for a remote cluster).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from flowrec.commands.cluster import (
    TERMINAL_STATES,
    FlinkRest,
    FlinkRestError,
    add_jobmanager_argument,
    default_jobmanager,
    rest_base_url,
    run_dir,
)
from flowrec.config import ENV_PREFIX, SECRET_REDIS_URL_ENV, UsageError, load_settings
from pipelines.main import add_job_arguments, check_input_flags, load_bootstrap

log = logging.getLogger(__name__)

HELP = "submit the streaming job to a Flink cluster (flink run -py pipelines/main.py), optionally from a savepoint"

# Where pipelines/main.py's settings find the rec_id secret (masked in Flink's log: "secret" is in the name).
REC_ID_SECRET_ENV = "FLOWREC_REC_ID_SECRET"
MAIN_SCRIPT = Path(__file__).resolve().parent.parent.parent / "pipelines" / "main.py"
_SUBMITTED = re.compile(r"JobID ([0-9a-f]{32})")
# Job flags submit handles itself instead of passing them to pipelines/main.py.
# Secrets stay out of `flink run` command lines and logs: the Redis URL travels in the environment.
# Secrets go in the environment, never on a command line (see client_environment).
_NOT_FORWARDED = {"restore", "redis_url", "rec_id_secret", "help"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    group = parser.add_argument_group("submission")
    add_jobmanager_argument(group)
    # The old name of --restore, kept so scripts keep working; it warns (see main).
    group.add_argument("--savepoint", dest="deprecated_savepoint", default=None, help=argparse.SUPPRESS)
    group.add_argument("--allow-non-restored-state", action="store_true", help="skip savepoint state of operators the new job no longer has")
    wait = group.add_mutually_exclusive_group()
    wait.add_argument("--detached", dest="wait", action="store_false", help="return once the job is accepted (default)")
    wait.add_argument("--wait", dest="wait", action="store_true", help="wait for the job to end; exit 0 only if it FINISHED (bounded inputs)")
    group.set_defaults(wait=False)
    group.add_argument("--skip-if-running", action="store_true",
                       help="do nothing (and print its id) when a job named --job-name is already running: makes submission idempotent")
    group.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the cluster, and with --wait for the job")
    group.add_argument("--python-executable", default=sys.executable, help="Python interpreter on the cluster's machines (-pyexec; default: this one, %(default)s)")
    group.add_argument("--flink-home", type=Path, default=None, help="Flink distribution whose bin/flink submits (default: $FLINK_HOME, else the pip package's)")


def flink_home(explicit: Path | None, env: Mapping[str, str]) -> Path:
    """The Flink distribution to submit with: the flag, ``$FLINK_HOME``, else the one inside the pyflink package."""
    if explicit is not None:
        return explicit
    if env.get("FLINK_HOME"):
        return Path(env["FLINK_HOME"])
    import importlib.util

    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        raise SystemExit("pyflink is not installed: install apache-flink or pass --flink-home")
    return Path(spec.origin).parent


def _absolute(value: object) -> object:
    """Paths become absolute: the Flink client may not run in this directory."""
    return value.resolve() if isinstance(value, Path) else value


def job_arguments(args: argparse.Namespace) -> list[str]:
    """The flags of ``args`` that pipelines/main.py defines, as its command line (only the ones given).

    Built from main.py's own parser, so every job flag is forwarded and none is
    invented; the Redis URL and the restore path are left out (see module doc).
    """
    reference = argparse.ArgumentParser(add_help=False)
    add_job_arguments(reference)
    argv: list[str] = []
    for action in reference._actions:
        if action.dest in _NOT_FORWARDED or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._AppendAction):
            for v in value:
                argv += [flag, str(_absolute(v))]
        elif action.nargs in ("+", "*"):
            argv += [flag, *(str(_absolute(v)) for v in value)]
        elif isinstance(value, (list, tuple)):  # a comma-separated flag parsed into a tuple
            argv += [flag, ",".join(map(str, value))]
        elif isinstance(value, bool):
            argv += [flag, "true" if value else "false"]
        else:
            argv += [flag, str(_absolute(value))]
    return argv


def restore_path(args: argparse.Namespace) -> str | None:
    """``--restore``, or the deprecated ``--savepoint`` (with a warning on stderr)."""
    if args.deprecated_savepoint is None:
        return args.restore
    if args.restore is not None and args.restore != args.deprecated_savepoint:
        raise UsageError("--savepoint is the old name of --restore: give the path once, as --restore")
    print("flowrec submit: warning: --savepoint is deprecated, use --restore (as flowrec run does)", file=sys.stderr, flush=True)
    return args.deprecated_savepoint


def flink_command(home: Path, jobmanager: str, job_argv: list[str], python: str, savepoint: str | None,
                  allow_non_restored: bool) -> list[str]:
    """``bin/flink run -d`` of pipelines/main.py with the given job arguments."""
    command = [str(home / "bin" / "flink"), "run", "-m", jobmanager, "-d"]
    if savepoint:
        command += ["-s", savepoint if "://" in savepoint or savepoint.startswith("file:") else str(Path(savepoint).resolve())]
        if allow_non_restored:
            command.append("--allowNonRestoredState")
    command += ["-pyclientexec", sys.executable, "-pyexec", python, "-py", str(MAIN_SCRIPT)]
    return command + job_argv


def client_environment(redis_url: str, cluster_dir: Path, env: Mapping[str, str], rec_id_secret: str | None = None) -> dict[str, str]:
    """The Flink client's environment: the Redis URL (and the rec_id secret) for pipelines/main.py, the local cluster's conf and log dirs."""
    # Flink logs the driver's environment, masking only names with "secret", "password",
    # "token" or "api-key" in them: the URL goes under such a name, the plain ones are dropped.
    child = {k: v for k, v in env.items() if k not in ("REDIS_URL", "FLOWREC_REDIS_URL", "FLOWREC_API_KEYS")}
    child[SECRET_REDIS_URL_ENV] = redis_url
    if rec_id_secret is not None:
        child[REC_ID_SECRET_ENV] = rec_id_secret  # "secret" in the name: masked in Flink's log too
    conf = cluster_dir / "conf"
    if "FLINK_CONF_DIR" not in env and (conf / "config.yaml").is_file():
        child["FLINK_CONF_DIR"] = str(conf)
    if "FLINK_LOG_DIR" not in env:
        (cluster_dir / "log").mkdir(parents=True, exist_ok=True)
        child["FLINK_LOG_DIR"] = str(cluster_dir / "log")
    return child


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not settings.redis_url:
        raise UsageError("flowrec submit needs Redis reachable from the cluster: pass --redis-url or set REDIS_URL")
    savepoint = restore_path(args)
    # Fail fast, before a JVM starts.
    check_input_flags(args, settings)
    # Fail before any JVM starts when the snapshot is unusable (the Flink client reads it again).
    load_bootstrap(args, settings)
    jobmanager = args.jobmanager or default_jobmanager()
    rest = FlinkRest(rest_base_url(jobmanager))
    try:
        # A TaskManager that just started may register before its slots do: wait for both.
        overview = rest.wait_ready(args.timeout, min_slots=settings.parallelism)
    except FlinkRestError as exc:
        print(f"flowrec submit: {exc} (start one with `flowrec cluster start`)", file=sys.stderr)
        return 1
    if overview.get("slots-total", 0) < settings.parallelism:
        print(f"flowrec submit: the cluster has {overview.get('slots-total', 0)} slots, the job needs {settings.parallelism} "
              "(raise FLOWREC_FLINK_SLOTS and restart the cluster)", file=sys.stderr)
        return 1
    if args.skip_if_running:
        try:
            running = [j["jid"] for j in rest.jobs() if j.get("name") == args.job_name and j.get("state") not in TERMINAL_STATES]
        except FlinkRestError as exc:
            print(f"flowrec submit: {exc}", file=sys.stderr)
            return 1
        if running:
            print(f"job '{args.job_name}' is already running as {running[0]}; not submitting", file=sys.stderr)
            print(running[0], flush=True)
            return 0
    home = flink_home(args.flink_home, os.environ)
    command = flink_command(home, jobmanager, job_arguments(args), args.python_executable, savepoint, args.allow_non_restored_state)
    log.info("submitting: %s", " ".join(command))
    try:
        done = subprocess.run(command, env=client_environment(settings.redis_url, run_dir(), os.environ, settings.rec_id_secret),
                              capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"flowrec submit: flink run did not finish within {args.timeout:g}s", file=sys.stderr)
        return 1
    output = done.stdout + done.stderr
    match = _SUBMITTED.search(output)
    if done.returncode != 0 or match is None:
        tail = "\n".join(output.strip().splitlines()[-40:])
        print(f"flowrec submit: flink run failed (exit {done.returncode}):\n{tail}", file=sys.stderr)
        return 1
    job_id = match.group(1)
    print(f"submitted job {job_id} to {rest.base_url} (web UI {rest.base_url}/#/job/running/{job_id}/overview)", file=sys.stderr)
    print(job_id, flush=True)
    if not args.wait:
        return 0
    try:
        state = rest.wait_for_job(job_id, TERMINAL_STATES, args.timeout)
    except FlinkRestError as exc:
        print(f"flowrec submit: {exc}", file=sys.stderr)
        return 1
    print(f"job {job_id} {state}", file=sys.stderr)
    return 0 if state == "FINISHED" else 1
