"""A/B experiments over HTTP, and each user's variant for the lists the API computes at request time.

``POST /v1/experiments`` checks a declaration with the job's own rules
(:func:`transforms.experiments.parse_experiment`) and hands the job a control
record through the catalog spool, as catalog upserts go; ``DELETE
/v1/experiments/{id}`` hands it a stop.  The job applies them when the window
holding their time closes and writes what it applied to Redis, which is what
``GET /v1/experiments`` and ``GET /v1/experiments/{id}`` read: the declaration,
start and stop times, and per variant the attributed impressions, clicks,
carts, purchases, CTR and conversion with 95% Wilson intervals, the relative
lift and the p-value of the two-proportion z-test against the control, and a
plain verdict (:func:`transforms.experiments.experiment_report`).

:meth:`ExperimentDirectory.variant_of` gives a user's ``(experiment, variant)``
for request-time contexts (item, search, similar, trending, ads): the running
experiment is read from Redis at most once per ``cache_ms``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable

import orjson
from fastapi import Depends, FastAPI, Path as PathParam, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api import models
from api.problems import ApiProblem
from state.experiments import read_experiment_record, read_experiment_records, read_kept_settings, read_variant_counts, running_experiment
from transforms.experiments import KEPT_FIELDS, PRESETS, SCORING_FIELDS, ExperimentError, ExperimentRecord, ExperimentStart, ExperimentStop, assign, experiment_report, parse_experiment, unsupported
from transforms.recid import CONTEXTS, NAME_PATTERN, NO_EXPERIMENT

log = logging.getLogger(__name__)

NONE = (NO_EXPERIMENT, NO_EXPERIMENT)
DEFAULT_CACHE_MS = 1000

ExperimentId = Annotated[str, PathParam(pattern=NAME_PATTERN.pattern, max_length=32, description="experiment id: 1-32 chars of [A-Za-z0-9_-]")]


class ExperimentDirectory:
    """The running experiment as the job applied it, cached for ``cache_ms`` of ``clock_ms``.

    ``read_records`` is a blocking read of every record (run in a worker thread).
    When a refresh fails, the last known state is kept (and the failure logged);
    before any successful read a failure propagates.
    """

    def __init__(self, read_records: Callable[[], dict[str, ExperimentRecord]], clock_ms: Callable[[], int], cache_ms: int = DEFAULT_CACHE_MS) -> None:
        self.read_records = read_records
        self.clock_ms = clock_ms
        self.cache_ms = cache_ms
        self._running: ExperimentRecord | None = None
        self._read_at: int | None = None
        self._lock = asyncio.Lock()

    async def running(self) -> ExperimentRecord | None:
        """The running experiment (None: none)."""
        now = self.clock_ms()
        if self._read_at is not None and now - self._read_at < self.cache_ms:
            return self._running
        async with self._lock:
            if self._read_at is not None and self.clock_ms() - self._read_at < self.cache_ms:
                return self._running  # another request refreshed it meanwhile
            try:
                records = await run_in_threadpool(self.read_records)
            except Exception as exc:  # noqa: BLE001 - any Redis failure: serve the last known state
                if self._read_at is None:
                    raise
                log.warning("cannot refresh the running experiment (keeping %s): %s", self._running.experiment.id if self._running else "none", exc)
                return self._running
            self._running = running_experiment(records)
            self._read_at = now
        return self._running

    async def variant_of(self, user_id: str, context: str | None = None) -> tuple[str, str]:
        """``(experiment, variant)`` of ``user_id`` (for a list of ``context``: only if the experiment covers it);
        ``("~", "~")`` when the user is in no experiment."""
        record = await self.running()
        if record is None or (context is not None and context not in record.experiment.contexts):
            return NONE
        return record.experiment.id, assign(record.experiment, user_id)


# The declaration's shape for the OpenAPI document (the full rules are parse_experiment's).
DECLARATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "variants"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$"},
        "salt": {"type": "string", "minLength": 1, "maxLength": 128},
        "contexts": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(CONTEXTS)}},
        "variants": {
            "type": "object",
            "minProperties": 2,
            "maxProperties": 16,
            "additionalProperties": {
                "type": "object",
                "required": ["share"],
                "additionalProperties": False,
                "properties": {
                    "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "preset": {"type": "string", "enum": sorted(PRESETS)},
                    "config": {
                        "type": "object",
                        "description": "model settings that act at scoring time: "
                        + ", ".join(sorted(SCORING_FIELDS))
                        + "; and "
                        + ", ".join(f"{name} (a value in the job's {kept_in})" for name, kept_in in KEPT_FIELDS.items()),
                    },
                },
            },
        },
    },
}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _summary(record: ExperimentRecord) -> dict[str, Any]:
    experiment = record.experiment
    return {
        "id": experiment.id,
        "status": "running" if record.running else "stopped",
        "started_ms": record.started_ms,
        "updated_ms": record.updated_ms,
        "stopped_ms": record.stopped_ms,
        "control": experiment.control,
        "variants": {v.name: v.to_dict() for v in experiment.variants},
    }


def add_experiment_routes(
    app: FastAPI,
    client: Any,
    namespace: str,
    clock_ms: Callable[[], int],
    require_key: Callable[..., None],
    require_spool: Callable[[], Path],
    spool: Callable[[Path, str, list[bytes], int], Awaitable[None]],
    json_body: Callable[[Request], Awaitable[bytes]],
) -> None:
    """The ``/v1/experiments`` routes; ``client`` is a blocking redis client (reads run in worker threads)."""

    async def records() -> dict[str, ExperimentRecord]:
        return await run_in_threadpool(read_experiment_records, client, namespace)

    async def record_of(experiment_id: str) -> ExperimentRecord:
        record = await run_in_threadpool(read_experiment_record, client, namespace, experiment_id)
        if record is None:
            raise ApiProblem(404, "unknown-experiment", f"the job has not applied an experiment {experiment_id!r} (a start is applied when the job closes the window holding its time)")
        return record

    @app.post(
        "/v1/experiments",
        tags=["experiments"],
        status_code=202,
        responses=models.problem_responses(400, 401, 409, 415, 422, 429, 503),
        dependencies=[Depends(require_key)],
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": DECLARATION_SCHEMA}}}},
        summary="Start an experiment, or change the running one (same id)",
    )
    async def start_experiment(request: Request) -> Response:
        """The declaration `{"id", "salt"?, "contexts"?, "variants": {NAME: {"share", "preset"?, "config"?}}}` is
        checked with the job's rules (422 naming the problem: unknown fields, shares not summing to 1, fewer than
        2 variants, unknown or state-shaping config keys, a half-life or similarity the job keeps no state for) and queued for the job, which starts it at the close of
        the window holding now.  409 while another experiment runs."""
        folder = require_spool()
        body = await json_body(request)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiProblem(400, "bad-json", f"the request body is not valid JSON: {str(exc)[:200]}") from None
        try:
            experiment = parse_experiment(data)
        except ExperimentError as exc:
            raise ApiProblem(422, "bad-experiment", str(exc)) from None
        kept = await run_in_threadpool(read_kept_settings, client, namespace)
        why = unsupported(experiment, kept) if kept is not None else None
        if why is not None:
            raise ApiProblem(422, "experiment-unsupported", why)
        running = running_experiment(await records())
        if running is not None and running.experiment.id != experiment.id:
            raise ApiProblem(409, "experiment-running", f"experiment {running.experiment.id!r} is running: stop it (DELETE /v1/experiments/{running.experiment.id}) before starting {experiment.id!r}")
        now = clock_ms()
        control = ExperimentStart(experiment, now)
        await spool(folder, "catalog", [orjson.dumps(control.to_dict()) + b"\n"], now)
        action = "change" if running is not None else "start"
        return _json({"id": experiment.id, "queued": action, "ts": now, "experiment": experiment.to_dict()}, 202)

    @app.delete(
        "/v1/experiments/{experiment_id}",
        tags=["experiments"],
        status_code=202,
        responses=models.problem_responses(401, 404, 409, 422, 429, 503),
        dependencies=[Depends(require_key)],
        summary="Stop the running experiment",
    )
    async def stop_experiment(experiment_id: ExperimentId) -> Response:
        """Queued for the job, which stops it at the close of the window holding now; lists scored from then on
        use the job's own configuration.  409 when the experiment is not running."""
        folder = require_spool()
        record = await record_of(experiment_id)
        if not record.running:
            raise ApiProblem(409, "experiment-not-running", f"experiment {experiment_id!r} stopped at {record.stopped_ms}")
        now = clock_ms()
        await spool(folder, "catalog", [orjson.dumps(ExperimentStop(experiment_id, now).to_dict()) + b"\n"], now)
        return _json({"id": experiment_id, "queued": "stop", "ts": now}, 202)

    @app.get("/v1/experiments", tags=["experiments"], responses=models.problem_responses(503), summary="Every experiment the job applied, newest first")
    async def list_experiments() -> Response:
        found = sorted((await records()).values(), key=lambda r: (-r.started_ms, r.experiment.id))
        return _json({"experiments": [_summary(r) for r in found]})

    @app.get("/v1/experiments/{experiment_id}", tags=["experiments"], responses=models.problem_responses(404, 422, 503), summary="An experiment's results per variant")
    async def show_experiment(experiment_id: ExperimentId) -> Response:
        """Declaration, start/stop times, and per variant: impressions, clicks, carts, purchases, revenue, CTR and
        conversion (purchases per impression) with 95% Wilson intervals, relative CTR lift and p-value against the
        control (`test` names the test), a verdict per variant and overall (`winner` is null until a difference is
        significant at 95%), and the counts per context."""
        record = await record_of(experiment_id)
        totals, by_context = await run_in_threadpool(read_variant_counts, client, namespace, experiment_id)
        return _json(experiment_report(record, totals, by_context))
