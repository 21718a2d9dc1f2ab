"""`flowrec experiment`: start, change, stop and read A/B experiments of a running job.

Examples::

    flowrec experiment start ranker.json --spool-dir spool/
    flowrec experiment start ranker.json --api http://localhost:8000 --api-key-file key.txt
    flowrec experiment stop ranker-1 --spool-dir spool/
    flowrec experiment list --redis-url redis://localhost:6379
    flowrec experiment show ranker-1 --api http://localhost:8000 --json

``start FILE`` reads a declaration (see :mod:`transforms.experiments`), checks
it with the job's rules and hands the job a control record: as a new file in
the spool's ``catalog/`` folder (``--spool-dir``, like ``flowrec train
--publish``) or through ``POST /v1/experiments`` of the API (``--api``).  The
job applies it when the window holding now closes, without a restart; the
same id as the running experiment changes it.  ``stop ID`` likewise.  A
start the job refuses is dead-lettered by the job: another experiment runs
(through the API: 409 at once), or a variant asks for a ``half_life_ms`` or
``similarity`` the job keeps no state for (through the API: 422 at once, once
the job has recorded what it keeps; see ``variant_half_lives_ms`` and
``variant_similarities`` in :mod:`transforms.config`).  ``list`` and ``show`` read
what the job applied, from the API or straight from Redis (``--redis-url``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from flowrec.config import CommandError, UsageError, add_settings_arguments, load_settings

HELP = "start, change, stop and read A/B experiments of the running job"

API_KEY_ENV = "FLOWREC_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start an experiment (or change the running one) from a JSON declaration file")
    start.add_argument("file", type=Path, metavar="FILE", help="the declaration: {id, salt?, contexts?, variants: {NAME: {share, preset?, config?}}}")
    stop = actions.add_parser("stop", help="stop the running experiment")
    stop.add_argument("experiment_id", metavar="ID", help="the experiment's id")
    listing = actions.add_parser("list", help="every experiment the job applied")
    show = actions.add_parser("show", help="an experiment's results per variant (CTR with 95%% intervals, lift, p-value, verdict)")
    show.add_argument("experiment_id", metavar="ID", help="the experiment's id")
    for action, flags in ((start, ("spool-dir",)), (stop, ("spool-dir",)), (listing, ("redis-url", "namespace")), (show, ("redis-url", "namespace"))):
        action.add_argument("--api", metavar="URL", default=None, help="use the flowrec API at URL instead")
        if action in (start, stop):
            key = action.add_mutually_exclusive_group()
            key.add_argument("--api-key", default=None, help=f"the API's write key (env {API_KEY_ENV}; visible in `ps`, prefer --api-key-file)")
            key.add_argument("--api-key-file", type=Path, default=None, metavar="FILE", help="read the API's write key from FILE")
        action.add_argument("--json", action="store_true", help="print JSON")
        add_settings_arguments(action, only=flags)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.action == "start":
        out = _start(args, settings)
    elif args.action == "stop":
        out = _stop(args, settings)
    elif args.action == "list":
        out = _read(args, settings, "/v1/experiments")
    else:
        out = _read(args, settings, f"/v1/experiments/{_checked_id(args.experiment_id)}")
    if args.json:
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        print(_text(args.action, out))
    return 0


def _checked_id(value: str) -> str:
    from transforms.recid import NAME_PATTERN

    if not NAME_PATTERN.fullmatch(value):
        raise UsageError(f"experiment id must be 1-32 characters of [A-Za-z0-9_-], got {value!r}")
    return value


def _declaration(path: Path) -> Any:
    from transforms.experiments import ExperimentError, parse_experiment

    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    try:
        return parse_experiment(data)
    except ExperimentError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _api_key(args: argparse.Namespace) -> str:
    if args.api_key_file is not None:
        try:
            key = args.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read {args.api_key_file}: {exc.strerror or exc}") from None
    else:
        key = args.api_key or os.environ.get(API_KEY_ENV, "")
    if not key:
        raise UsageError(f"--api needs a write key: --api-key-file, --api-key or {API_KEY_ENV}")
    return key


def _request(method: str, base: str, path: str, key: str | None = None, body: Any = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(method, base.rstrip("/") + path, headers=headers, json=body, timeout=10)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach the API at {base}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text[:200]
        raise CommandError(f"the API answered {response.status_code}: {detail}")
    return response.json()


def _spool(settings, control) -> dict[str, Any]:
    from api.spool import write_spool_file

    if settings.spool_dir is None:
        raise UsageError("give the job's spool directory (--spool-dir or FLOWREC_SPOOL_DIR) or --api URL")
    try:
        path = write_spool_file(Path(settings.spool_dir), "catalog", [orjson.dumps(control.to_dict()) + b"\n"], control.ts)
    except OSError as exc:
        raise CommandError(f"cannot write to the spool directory {settings.spool_dir}: {exc.strerror or exc}") from None
    return {**control.to_dict(), "spool_file": str(path)}


def _start(args: argparse.Namespace, settings) -> dict[str, Any]:
    from transforms.experiments import ExperimentStart

    experiment = _declaration(args.file)
    if args.api:
        return _request("POST", args.api, "/v1/experiments", _api_key(args), experiment.to_dict())
    return _spool(settings, ExperimentStart(experiment, int(time.time() * 1000)))


def _stop(args: argparse.Namespace, settings) -> dict[str, Any]:
    from transforms.experiments import ExperimentStop

    experiment_id = _checked_id(args.experiment_id)
    if args.api:
        return _request("DELETE", args.api, f"/v1/experiments/{experiment_id}", _api_key(args))
    return _spool(settings, ExperimentStop(experiment_id, int(time.time() * 1000)))


def _read(args: argparse.Namespace, settings, path: str) -> dict[str, Any]:
    if args.api:
        return _request("GET", args.api, path)
    if not settings.redis_url:
        raise UsageError("give the job's Redis (--redis-url or REDIS_URL) or --api URL")
    import redis

    from state.experiments import read_experiment_record, read_experiment_records, read_variant_counts
    from transforms.experiments import experiment_report

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        if args.action == "list":
            records = sorted(read_experiment_records(client, settings.namespace).values(), key=lambda r: (-r.started_ms, r.experiment.id))
            return {"experiments": [{"id": r.experiment.id, "status": "running" if r.running else "stopped", "started_ms": r.started_ms, "updated_ms": r.updated_ms, "stopped_ms": r.stopped_ms, "control": r.experiment.control, "variants": {v.name: v.to_dict() for v in r.experiment.variants}} for r in records]}
        record = read_experiment_record(client, settings.namespace, args.experiment_id)
        if record is None:
            raise CommandError(f"the job has not applied an experiment {args.experiment_id!r}")
        totals, by_context = read_variant_counts(client, settings.namespace, args.experiment_id)
        return experiment_report(record, totals, by_context)
    except redis.RedisError as exc:
        raise CommandError(f"cannot read Redis: {exc}") from None
    finally:
        client.close()


def _interval(bounds: list[float]) -> str:
    return f"[{bounds[0]:.2%}, {bounds[1]:.2%}]"


def _text(action: str, out: dict[str, Any]) -> str:
    if action in ("start", "stop"):
        what = f"{'stop of' if action == 'stop' else 'start of'} experiment {out.get('id') or out.get('experiment', {}).get('id') or out.get('experiment_stop')}"
        where = f" (spool file {out['spool_file']})" if "spool_file" in out else ""
        return f"queued {what} at {out['ts']}{where}; the job applies it when the window holding that time closes"
    if action == "list":
        if not out["experiments"]:
            return "no experiments"
        return "\n".join(f"{e['id']}\t{e['status']}\tstarted {e['started_ms']}\tvariants {', '.join(e['variants'])}" for e in out["experiments"])
    lines = [f"experiment {out['id']} ({out['status']}, started {out['started_ms']}); control: {out['control']}"]
    for name, v in out["variants"].items():
        lift = "" if v["lift"] is None else f", lift {v['lift']:+.1%}"
        p = "" if v["p_value"] is None else f", p = {v['p_value']:.3g}"
        lines.append(
            f"  {name} (share {v['share']:.0%}): {v['impressions']} impressions, {v['clicks']} clicks, CTR {v['ctr']:.2%} {_interval(v['ctr_ci'])}, "
            f"{v['purchases']} purchases, conversion {v['conversion']:.2%} {_interval(v['conversion_ci'])}{lift}{p}: {v['verdict']}"
        )
    lines.append(f"test: {out['test']}; intervals: {out['interval']}")
    lines.append(f"verdict: {out['verdict']}")
    return "\n".join(lines)
