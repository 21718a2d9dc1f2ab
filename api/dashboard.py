"""The live dashboard: ``GET /v1/metrics/live`` (per-minute series as JSON) and the ``/dashboard`` page that charts them.

``/v1/metrics/live`` answers, for the last ``minutes`` minutes:

* ``series``: per experiment x variant x context (and per experiment x
  variant summed over contexts, context ``"all"``), one value per minute of
  impressions, clicks, carts, purchases, revenue, live-HR choices and hits,
  and the rates CTR, conversion and hit rate (:mod:`transforms.livemetrics`);
  minutes are of *event time*, read from the job's attribution hashes through
  :func:`state.metrics.read_minute_sums`;
* ``ops``: the job's own numbers: events, late events and dead letters per
  minute of *processing time* (the sink's per-minute counters) and events/s,
  the cumulative counters, dead letters by reason, and freshness (the API
  clock minus the job's newest closed window, and p50/p99 of the newest
  recorded event -> list lags when the job records them).

The minutes end with the one holding the API's clock (``anchor=clock``), or,
for replays and simulations whose event time is not now, with the one holding
the job's newest closed window (``anchor=job``; falls back to the clock when
the job has closed none).  The ops minutes always follow the clock.

Reads need no key, like the other read endpoints.  The page is plain HTML,
CSS and JavaScript served from ``api/static`` (no CDN); its charts are drawn
as SVG by ``dashboard.js``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Query
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from api import models
from api.security import page_headers
from state.metrics import ALL_CONTEXTS, read_minute_sums
from state.store import JobStats, RedisStore
from transforms.livemetrics import MINUTE_MS, OPS_COUNTERS, group_series, minute_starts, per_second, percentile

if TYPE_CHECKING:
    from api.app import ApiContext

LIVE_PATH = "/v1/metrics/live"
DASHBOARD_PATH = "/dashboard"
STATIC_DIR = Path(__file__).resolve().parent / "static"
# A day of minutes at most: a longer chart has more points than pixels.
MAX_MINUTES = 24 * 60
# Freshness percentiles are over this many of the newest recorded lags.
RECENT_LAGS = 1000
DEAD_LETTER_REASON_PREFIX = "dead_letters:"
EXPERIMENT_REGEX = r"^(~|[A-Za-z0-9_\-]{1,32})$"

Anchor = Literal["clock", "job"]


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def ops_numbers(job: JobStats, starts: list[int], now_ms: int) -> dict[str, Any]:
    """The job's numbers for the dashboard (``ops`` of the answer) from what :meth:`RedisStore.read_job_stats` read."""
    per_minute = {name: [job.per_minute.get(minute, {}).get(name, 0) for minute in starts] for name in OPS_COUNTERS}
    last_window = _int_or_none(job.counters.get("last_window_ts"))
    return {
        "minute_starts": starts,
        **per_minute,
        "events_per_s": per_second(per_minute["events"], starts, now_ms),
        "totals": {name: _int_or_none(job.counters.get(name)) or 0 for name in OPS_COUNTERS},
        "dead_letter_reasons": {
            name[len(DEAD_LETTER_REASON_PREFIX):]: count
            for name, text in sorted(job.counters.items())
            if name.startswith(DEAD_LETTER_REASON_PREFIX) and (count := _int_or_none(text)) is not None
        },
        "last_window_ts": last_window,
        "freshness_ms": now_ms - last_window if last_window is not None and last_window > 0 else None,
        "freshness_p50_ms": percentile(job.lags_ms, 50),
        "freshness_p99_ms": percentile(job.lags_ms, 99),
        "freshness_samples": len(job.lags_ms),
    }


def live_metrics(store: RedisStore, now_ms: int, minutes: int, experiment: str | None, anchor: Anchor) -> dict[str, Any]:
    """The body of ``GET /v1/metrics/live`` (blocking Redis reads: run it in a worker thread)."""
    clock_starts = minute_starts(now_ms, minutes)
    job = store.read_job_stats(clock_starts, RECENT_LAGS)
    last_window = _int_or_none(job.counters.get("last_window_ts"))
    # (A window end too early for the minutes asked for is no event time a job wrote: the clock is used.)
    used = "job" if anchor == "job" and last_window is not None and last_window > minutes * MINUTE_MS else "clock"
    # A window [start, end) holds events up to end - 1: that is the newest minute it counted.
    starts = minute_starts(last_window - 1, minutes) if used == "job" else clock_starts
    # Only the rows summed over positions: the per-position rows count the same events again.
    counts = read_minute_sums(store.client, store.namespace, starts[0], starts[-1] + MINUTE_MS)
    series = group_series(counts, starts, experiment, all_contexts=ALL_CONTEXTS)
    return {
        "now_ms": now_ms,
        "minutes": minutes,
        "anchor": used,
        "experiment": experiment,
        "minute_starts": starts,
        "series": [s.to_dict() for s in series],
        "ops": ops_numbers(job, clock_starts, now_ms),
    }


def add_dashboard_routes(app: FastAPI, ctx: "ApiContext") -> None:
    """``GET /v1/metrics/live``, the ``/dashboard`` page and its static files."""

    @app.get(
        LIVE_PATH,
        tags=["ops"],
        response_model=None,
        responses={200: {"model": models.LiveMetricsOut}, **models.problem_responses(422, 503)},
        summary="Per-minute CTR, conversion and live hit rate per experiment, variant and context, and the job's events/s, freshness, late events and dead letters",
    )
    async def metrics_live(
        minutes: Annotated[int, Query(ge=1, le=MAX_MINUTES, description=f"how many minutes, ending with the current one (1-{MAX_MINUTES})")] = 60,
        experiment: Annotated[str | None, Query(pattern=EXPERIMENT_REGEX, max_length=32, description="only this experiment's series ('~' for users in no experiment)")] = None,
        anchor: Annotated[Anchor, Query(description="clock: the minutes end now (API clock); job: they end with the job's newest closed window (replays, simulations)")] = "clock",
    ) -> Response:
        """Rates are null in a minute without their denominator (no impressions: no CTR).  CTR = clicks / impressions,
        conversion = purchases / impressions, hit_rate = hits / choices."""
        body = await run_in_threadpool(live_metrics, ctx.store, ctx.clock_ms(), minutes, experiment, anchor)
        return Response(orjson.dumps(body), media_type="application/json")

    page = (STATIC_DIR / "dashboard.html").read_bytes()
    headers = page_headers(page)

    @app.get(DASHBOARD_PATH, include_in_schema=False)
    async def dashboard() -> Response:
        return HTMLResponse(page, headers=headers)

    app.mount(f"{DASHBOARD_PATH}/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
