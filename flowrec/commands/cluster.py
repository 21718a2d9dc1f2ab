"""`flowrec cluster`: the standalone Flink session cluster and the jobs on it.

``start``/``stop``/``restart``/``status`` run ``deploy/cluster.sh`` (a session cluster from
the pip package's own Flink distribution, see deploy/README.md).  ``jobs``,
``savepoint`` and ``cancel`` talk to the cluster's REST API, which works for
any Flink 2.x cluster, local or remote::

    flowrec cluster start
    JOB=$(flowrec submit --spool-dir spool --redis-url redis://...)
    SAVEPOINT=$(flowrec cluster savepoint "$JOB" --stop)     # stop with a savepoint
    flowrec submit --restore "$SAVEPOINT" ...                 # resume (new code)
    flowrec cluster stop

Machine-readable results (a job id, a savepoint path) go to stdout, one per
line; everything else goes to stderr, so the commands compose in scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

log = logging.getLogger(__name__)

HELP = "start/stop/status of the standalone Flink cluster; list jobs, take savepoints, stop or cancel jobs"

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CLUSTER_SCRIPT = REPO_ROOT / "deploy" / "cluster.sh"
DEFAULT_RUN_DIR = REPO_ROOT / ".flowrec" / "cluster"
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED"})
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_STATE_LINE = re.compile(r"^([A-Z_]+)='([^']*)'$")


class FlinkRestError(RuntimeError):
    """The REST API answered with an error, did not answer, or an operation failed."""


def valid_job_id(job_id: str) -> str:
    """``job_id`` when it is a Flink job id (32 lowercase hex digits); raises ValueError otherwise.

    Checked before an id becomes part of a REST path.
    """
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a Flink job id (32 hex digits): {job_id!r}")
    return job_id


def run_dir(env: Mapping[str, str] | None = None) -> Path:
    """The run directory deploy/cluster.sh uses (``FLOWREC_CLUSTER_DIR`` or ``.flowrec/cluster``)."""
    env = os.environ if env is None else env
    return Path(env["FLOWREC_CLUSTER_DIR"]) if env.get("FLOWREC_CLUSTER_DIR") else DEFAULT_RUN_DIR


def read_cluster_state(directory: Path) -> dict[str, str]:
    """The ``KEY='value'`` settings deploy/cluster.sh saved for the cluster it started (empty if none)."""
    path = directory / "cluster.env"
    if not path.is_file():
        return {}
    state = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _STATE_LINE.match(line.strip())
        if match:
            state[match.group(1)] = match.group(2)
    return state


def default_jobmanager(env: Mapping[str, str] | None = None) -> str:
    """HOST:PORT of the REST API: the local cluster's saved settings, else
    ``localhost:$FLOWREC_FLINK_REST_PORT``, else ``localhost:8081``."""
    env = os.environ if env is None else env
    state = read_cluster_state(run_dir(env))
    if state.get("REST_PORT"):
        return f"{state.get('BIND_HOST') or 'localhost'}:{state['REST_PORT']}"
    return f"localhost:{env.get('FLOWREC_FLINK_REST_PORT') or 8081}"


def rest_base_url(jobmanager: str) -> str:
    """``http://HOST:PORT`` for a ``HOST:PORT`` (or an http(s) URL, returned without a trailing slash)."""
    if jobmanager.startswith(("http://", "https://")):
        return jobmanager.rstrip("/")
    host, sep, port = jobmanager.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"jobmanager must be HOST:PORT, got {jobmanager!r}")
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class FlinkRest:
    """A small client for the Flink REST API (``/overview``, ``/jobs``, savepoints, cancel)."""

    base_url: str
    request_timeout_s: float = 10.0

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise FlinkRestError(f"{method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FlinkRestError(f"{method} {self.base_url}{path}: {exc}") from None
        return json.loads(text)

    def overview(self) -> dict:
        return self.request("GET", "/overview")

    def jobs(self) -> list[dict]:
        return self.request("GET", "/jobs/overview").get("jobs", [])

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{valid_job_id(job_id)}")

    def cancel(self, job_id: str) -> None:
        self.request("PATCH", f"/jobs/{valid_job_id(job_id)}?mode=cancel")

    def trigger_savepoint(self, job_id: str, target_dir: str | None = None, stop: bool = False, drain: bool = False) -> str:
        """Start a savepoint (``stop``: stop-with-savepoint, ``drain``: end event time first); returns the trigger id."""
        job_id = valid_job_id(job_id)
        if stop:
            body: dict = {"drain": drain}
            if target_dir:
                body["targetDirectory"] = target_dir
            answer = self.request("POST", f"/jobs/{job_id}/stop", body)
        else:
            if drain:
                raise ValueError("drain only applies when stopping the job")
            body = {"cancel-job": False}
            if target_dir:
                body["target-directory"] = target_dir
            answer = self.request("POST", f"/jobs/{job_id}/savepoints", body)
        return answer["request-id"]

    def wait_ready(self, timeout_s: float, min_taskmanagers: int = 1, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic, min_slots: int = 0) -> dict:
        """Poll ``/overview`` until at least ``min_taskmanagers`` (and ``min_slots`` slots) have registered; returns the overview."""
        deadline = clock() + timeout_s
        last_error = "no answer"
        while True:
            try:
                overview = self.overview()
                if overview.get("taskmanagers", 0) >= min_taskmanagers and overview.get("slots-total", 0) >= min_slots:
                    return overview
                last_error = f"{overview.get('taskmanagers', 0)} TaskManagers with {overview.get('slots-total', 0)} slots registered"
            except FlinkRestError as exc:
                last_error = str(exc)
            if clock() >= deadline:
                raise FlinkRestError(f"the cluster at {self.base_url} is not ready after {timeout_s:g}s: {last_error}")
            sleep(0.5)

    def wait_for_job(self, job_id: str, states: frozenset[str] = TERMINAL_STATES, timeout_s: float = 300.0,
                     sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
        """Poll the job until its state is one of ``states``; returns that state."""
        deadline = clock() + timeout_s
        while True:
            state = self.job(job_id)["state"]
            if state in states:
                return state
            if state in TERMINAL_STATES:
                raise FlinkRestError(f"job {job_id} ended {state} while waiting for {'/'.join(sorted(states))}")
            if clock() >= deadline:
                raise FlinkRestError(f"job {job_id} is still {state} after {timeout_s:g}s")
            sleep(0.5)

    def wait_for_savepoint(self, job_id: str, trigger_id: str, timeout_s: float = 300.0,
                           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
        """Poll a savepoint trigger until it completes; returns the savepoint's location."""
        job_id = valid_job_id(job_id)
        if not re.fullmatch(r"[0-9a-f]{32}", trigger_id):
            raise ValueError(f"not a trigger id: {trigger_id!r}")
        deadline = clock() + timeout_s
        while True:
            answer = self.request("GET", f"/jobs/{job_id}/savepoints/{trigger_id}")
            if answer.get("status", {}).get("id") == "COMPLETED":
                operation = answer.get("operation", {})
                if "location" in operation:
                    return operation["location"]
                cause = operation.get("failure-cause", {})
                raise FlinkRestError(f"savepoint of job {job_id} failed: {cause.get('stack-trace', cause)}"[:2000])
            if clock() >= deadline:
                raise FlinkRestError(f"savepoint of job {job_id} not done after {timeout_s:g}s")
            sleep(0.5)


def add_jobmanager_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--jobmanager", default=None, metavar="HOST:PORT",
                        help="the cluster's REST address (default: the cluster deploy/cluster.sh started, else localhost:8081)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("start", "start the local session cluster (deploy/cluster.sh start; idempotent)"),
                       ("stop", "stop the local session cluster"),
                       ("restart", "stop and start the local cluster with the same settings (needed after a code upgrade)"),
                       ("status", "show the local cluster's processes and REST overview")):
        actions.add_parser(name, help=text, description=text, formatter_class=parser.formatter_class)
    jobs = actions.add_parser("jobs", help="list the cluster's jobs (id, state, name)", formatter_class=parser.formatter_class)
    add_jobmanager_argument(jobs)
    savepoint = actions.add_parser("savepoint", help="take a savepoint of a running job; print its path", formatter_class=parser.formatter_class)
    savepoint.add_argument("job_id", help="the job id (`flowrec cluster jobs`)")
    savepoint.add_argument("--dir", default=None, help="target directory (default: the cluster's execution.checkpointing.savepoint-dir)")
    savepoint.add_argument("--stop", action="store_true", help="stop the job with this savepoint (for upgrades)")
    savepoint.add_argument("--drain", action="store_true", help="with --stop: advance event time to the end first, closing every window (final stop, not for upgrades)")
    savepoint.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the savepoint")
    add_jobmanager_argument(savepoint)
    cancel = actions.add_parser("cancel", help="cancel a job without a savepoint (retained checkpoints stay)", formatter_class=parser.formatter_class)
    cancel.add_argument("job_id")
    cancel.add_argument("--timeout", type=float, default=60.0, help="seconds to wait until it is CANCELED")
    add_jobmanager_argument(cancel)


def _script(action: str) -> int:
    if not CLUSTER_SCRIPT.is_file():
        print(f"{CLUSTER_SCRIPT} not found: `flowrec cluster {action}` needs a source checkout", file=sys.stderr)
        return 1
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), action]).returncode


def main(args: argparse.Namespace) -> int:
    if args.action in ("start", "stop", "restart", "status"):
        return _script(args.action)
    try:
        rest = FlinkRest(rest_base_url(args.jobmanager or default_jobmanager()))
        if args.action != "jobs":
            valid_job_id(args.job_id)
    except ValueError as exc:  # bad usage: a malformed --jobmanager or job id
        print(f"flowrec cluster {args.action}: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.action == "jobs":
            for job in sorted(rest.jobs(), key=lambda j: j.get("start-time", 0)):
                print(f"{job['jid']}  {job['state']:<10}  {job.get('name', '')}")
            return 0
        job_id = valid_job_id(args.job_id)
        if args.action == "savepoint":
            if args.drain and not args.stop:
                print("--drain needs --stop", file=sys.stderr)
                return 2
            target = str(Path(args.dir).resolve()) if args.dir and "://" not in args.dir else args.dir
            trigger = rest.trigger_savepoint(job_id, target, stop=args.stop, drain=args.drain)
            location = rest.wait_for_savepoint(job_id, trigger, args.timeout)
            if args.stop:
                state = rest.wait_for_job(job_id, TERMINAL_STATES, args.timeout)
                print(f"job {job_id} stopped ({state}) with savepoint {location}", file=sys.stderr)
            print(location)
            return 0
        rest.cancel(job_id)
        state = rest.wait_for_job(job_id, TERMINAL_STATES, args.timeout)
        print(f"job {job_id} {state}", file=sys.stderr)
        return 0 if state == "CANCELED" else 1
    except (FlinkRestError, ValueError) as exc:
        print(f"flowrec cluster {args.action}: {exc}", file=sys.stderr)
        return 1
