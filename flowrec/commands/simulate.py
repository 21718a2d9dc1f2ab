"""`flowrec simulate`: an A/B experiment with shoppers who respond, through the real job and the real API.

1. builds a synthetic shop (:func:`transforms.synthetic.build_shop`) whose
   shoppers react to what they are shown (:mod:`transforms.shoppers`);
2. starts a private Redis unless one is configured, the streaming job on a
   local Flink mini-cluster watching a spool directory (as ``flowrec demo``),
   and the API over HTTP on that spool (in this process, on the simulated clock);
3. declares the experiment through ``POST /v1/experiments`` (``--variants
   control=popularity,treatment=default``: presets, equal shares);
4. runs ``--minutes`` of simulated time: shoppers browse by taste, then look
   at their home list (``GET /v1/users/{id}/recommendations``), report it as
   an impression and click, cart and buy by the behaviour model, everything
   through ``POST /v1/events`` with the list's rec_id;
5. prints the experiment's result from the job's counts in Redis, and whether
   they equal an independent recount (:func:`transforms.attribution.recount`)
   of the raw event log the simulator sent.

Simulated time.  Every event carries its simulated ``ts``, and the API's clock
(rec_ids, the experiment's start, the future-time check) is the simulated
clock; the simulated period ends at the wall clock's minute, so nothing is
ever in the future.  The job's wall-clock heartbeat is off (it would push
event time to now and make the simulated events late).  Event time follows
the events; the catalog input, which carries experiment controls and holds
back the job's windows while idle, gets the job's own heartbeat record (a
tick with the simulated time) from the simulator: one a second past the
experiment's start until the job has applied it, then one past the end of
the whole run (nothing else comes on that input, and few files there keep
clear of a race in Flink's file enumeration, which fails a listing when a
file being written is renamed meanwhile).  The job's spool source reads the files waiting for it
newest first (Flink's file source hands out pending splits last-in first-out),
so while the job is busy a few step files can arrive in reverse order: the
simulator allows ``LAG_STEPS + 2`` steps of out-of-order events
(``max_out_of_orderness_ms``), never lets the job fall further behind, and
orders the files that must be read in order (catalog, experiment) by waiting
for the job to apply the experiment before any shopper arrives.  The job's
``late_events`` counter is printed at the end.

Keeping in step with the job.  Without a live heartbeat, the job closes the
windows of one batch of events only once later events have followed it
through its operators (measured: one to two later batches), so before each
step the simulator waits (up to ``CATCH_UP_S``) until the job has closed the
windows of the steps ``LAG_STEPS`` back (``last_window_ts`` in its stats): the
lists shoppers see reflect what happened up to then, as in a live shop that
keeps up, and a shopper's own browsing (a minute before they look at their
list) is in.  After the last step, shoppers go on browsing (organic views,
one a second) until the job has closed every window of the measured period;
only then are its counts read.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import itertools
import logging
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson

from flowrec.config import CommandError, UsageError, add_settings_arguments, load_settings, positive_float, whole_number_at_least

HELP = "run the job, the API and simulated shoppers who respond to their lists; prints the experiment's result"
log = logging.getLogger(__name__)

EXPERIMENT_ID = "simulation"
MINUTE_MS = 60_000
# A shopper looks at their list this long after browsing (the job learns from the browsing meanwhile).
LIST_DELAY_MS = 120_000
# Seconds between spool files that must be read in order (the job's spool source polls every 100 ms).
SPOOL_SETTLE_S = 1.0
VIEW_GAP_MS = 8_000
# The job must close the windows of a step within this long (the first step also waits for it to start).
CATCH_UP_S = 120.0
START_UP_S = 300.0
# Steps the job may be behind when the next step starts (see the module doc).
LAG_STEPS = 3
# Organic views sent after the last step at most, one a second, for the job to close every window.
MAX_FLUSH_VIEWS = 120
# Events per POST /v1/events (its limit is 10,000 records and 1 MiB).
POST_CHUNK = 2_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=positive_float, default=20.0, help="simulated minutes of shopping")
    parser.add_argument("--shoppers", type=whole_number_at_least(1), default=2000, help="shoppers in the synthetic shop")
    parser.add_argument("--items", type=whole_number_at_least(10), default=500, help="items in the synthetic shop")
    parser.add_argument("--variants", default="control=popularity,treatment=default",
                        help="NAME=PRESET,... with presets default or popularity, equal traffic shares; 'control' (else the first) is the control (default: %(default)s)")
    parser.add_argument("--visits", type=positive_float, default=3.0, help="mean visits per shopper over the simulated time")
    parser.add_argument("--list-size", type=whole_number_at_least(1), default=10, help="items in the home list a shopper is shown")
    parser.add_argument("--step-seconds", type=positive_float, default=10.0, help="simulated seconds per step (the job catches up after each)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(".flowrec/simulate"), help="where the spool, checkpoints and the sent event log go")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_settings_arguments(parser, only=("redis-url", "namespace", "execution-mode", "parallelism", "model-config", "rec-id-secret"))


def parse_variants(text: str) -> dict[str, str]:
    """``"control=popularity,treatment=default"`` -> ``{"control": "popularity", "treatment": "default"}``; UsageError if malformed."""
    variants: dict[str, str] = {}
    for part in text.split(","):
        name, sep, preset = part.strip().partition("=")
        if not sep or not name or not preset:
            raise UsageError(f"--variants takes NAME=PRESET pairs separated by commas, not {part.strip()!r}")
        if name in variants:
            raise UsageError(f"--variants names {name!r} twice")
        variants[name] = preset
    if len(variants) < 2:
        raise UsageError("--variants needs at least two variants to compare")
    return variants


def declaration(variants: dict[str, str], seed: int) -> dict[str, Any]:
    """The experiment of ``--variants``: equal shares (summing to exactly 1), presets as given."""
    share = round(1.0 / len(variants), 12)
    shares = [share] * (len(variants) - 1) + [1.0 - share * (len(variants) - 1)]
    return {"id": EXPERIMENT_ID, "salt": f"simulate-{seed}", "variants": {name: {"share": s, "preset": preset} for (name, preset), s in zip(variants.items(), shares)}}


class SimulatedClock:
    """The API's ``clock_ms``: the simulated time the simulator sets (epoch ms)."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a background thread; yields its base URL."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="simulate-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise CommandError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class Simulation:
    """One run: the shop's shoppers, the API client on the simulated clock, and the events sent so far."""

    def __init__(self, http: Any, clock: SimulatedClock, redis_client: Any, namespace: str, shoppers: Any, prices: dict[str, float], spool: Path, list_size: int, settings: Any) -> None:
        self.http = http
        self.clock = clock
        self.redis = redis_client
        self.namespace = namespace
        self.shoppers = shoppers
        self.prices = prices
        self.spool = spool
        self.list_size = list_size
        self.settings = settings
        self.pending: list[tuple[int, int, dict[str, Any]]] = []  # (ts, arrival, event): a heap by time
        self._arrivals = itertools.count()
        self.sent: list[dict[str, Any]] = []
        self.lists_seen = 0
        # Event times of the interactions sent (the events the job scores users on), in order.
        self.interaction_ts: list[int] = []
        # Heartbeats written before each of the latest events POSTs (the oldest: what the job should have closed).
        self.heartbeats: collections.deque[int] = collections.deque([0], maxlen=LAG_STEPS)
        self.heartbeat_ms = 0

    def queue(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            heapq.heappush(self.pending, (event["ts"], next(self._arrivals), event))

    def post(self, path: str, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), POST_CHUNK):
            chunk = records[start : start + POST_CHUNK]
            response = self.http.post(path, content=orjson.dumps(chunk), headers={"Content-Type": "application/json"})
            if response.status_code != 202 or response.json().get("rejected"):
                raise CommandError(f"the API refused simulated records at {path}: {response.status_code} {response.text[:300]}")

    def show_list(self, visit: Any) -> None:
        """The shopper looks at their home list at ``visit.list_ms``: the impression and reactions are queued."""
        from transforms.simulation import list_events

        self.clock.now_ms = visit.list_ms
        response = self.http.get(f"/v1/users/{visit.user}/recommendations", params={"n": self.list_size})
        if response.status_code != 200:
            raise CommandError(f"the API did not serve {visit.user}'s list: {response.status_code} {response.text[:300]}")
        body = response.json()
        self.queue(list_events(self.shoppers, visit, body["rec_id"], [entry["item"] for entry in body["items"]], self.prices))
        self.lists_seen += 1

    def send_until(self, end_ms: int) -> None:
        """POST every queued event before ``end_ms`` in time order."""
        due = []
        while self.pending and self.pending[0][0] < end_ms:
            due.append(heapq.heappop(self.pending)[2])
        self.clock.now_ms = end_ms
        if due:
            self.post("/v1/events", due)
            self.sent += due
            self.interaction_ts += [event["ts"] for event in due if event["event_type"] != "impression"]
            self.heartbeats.append(self.heartbeat_ms)
        self.heartbeat_ms = end_ms

    def catalog_heartbeat(self, ts: int) -> None:
        """The job's heartbeat record of ``ts`` on the catalog input (see the module doc)."""
        from api.spool import write_spool_file
        from pipelines.operators import TICK_PREFIX

        write_spool_file(self.spool, "catalog", [f"{TICK_PREFIX}{ts}\n".encode()], self.clock.now_ms)

    def last_window_ts(self) -> int:
        from state.keys import KeyKind, redis_key

        raw = self.redis.hget(redis_key(KeyKind.STATS, None, self.namespace), "last_window_ts")
        return int(raw) if raw else 0

    def closable_window_end(self, heartbeat_ms: int) -> int | None:
        """End of the latest window with interactions that the heartbeat of ``heartbeat_ms`` lets the job close.

        The job's event time is then the heartbeat's minus the allowed
        out-of-orderness; its scorer records each window it closes with users
        in it (``last_window_ts`` in the job's stats).
        """
        from transforms.windows import WindowClock

        windows = WindowClock.of(self.settings.model)
        watermark = heartbeat_ms - self.settings.max_out_of_orderness_ms - 1
        for ts in reversed(self.interaction_ts):
            end = windows.end(windows.window_of(ts))
            if end - 1 <= watermark:
                return end
        return None

    def wait_for_job(self, timeout_s: float) -> bool:
        """Until the job has closed the windows of the steps ``LAG_STEPS`` back (False: not within ``timeout_s``)."""
        target = self.closable_window_end(self.heartbeats[0])
        deadline = time.monotonic() + timeout_s
        while target is not None and self.last_window_ts() < target:
            if time.monotonic() > deadline:
                log.warning("the job is behind: its last window ends at %d, not yet %d after %.0f s; going on", self.last_window_ts(), target, timeout_s)
                return False
            time.sleep(0.05)
        return True

    def await_experiment(self, start_ms: int, timeout_s: float) -> None:
        """Heartbeats a second past ``start_ms`` on the catalog input until the job has applied the experiment
        (it is up, and every list it scores from then on is labelled with its variant).  The experiment takes
        effect when the window holding its start closes: the heartbeat closes it."""
        from state.keys import KeyKind, redis_key

        key = redis_key(KeyKind.EXPERIMENT, EXPERIMENT_ID, self.namespace)
        deadline = time.monotonic() + timeout_s
        while not self.redis.exists(key):
            if time.monotonic() > deadline:
                raise CommandError(f"the job did not apply the experiment within {timeout_s:.0f} s")
            self.catalog_heartbeat(start_ms + 1000)
            time.sleep(3.0)

    def flush(self, after_ms: int, user: str, item: str) -> int:
        """Organic views after ``after_ms`` until the job has closed the window of every interaction sent; returns the last view's time.

        Each view moves event time on by a fifth of the allowed out-of-orderness, so a few views
        carry the job's event time past the last window.
        """
        from transforms.windows import WindowClock

        windows = WindowClock.of(self.settings.model)
        target = windows.end(windows.window_of(self.interaction_ts[-1])) if self.interaction_ts else None
        stride = max(1000, self.settings.max_out_of_orderness_ms // 5)
        ts = after_ms
        for _ in range(MAX_FLUSH_VIEWS):
            if target is None or self.last_window_ts() >= target:
                return ts
            ts += stride
            self.queue([{"user_id": user, "item_id": item, "event_type": "view", "ts": ts}])
            self.send_until(ts + 1)
            time.sleep(1.0)
        raise CommandError(f"the job did not close the simulated period's windows: its last window ends at {self.last_window_ts()}, not {target}")


def _stable_totals(redis_client: Any, namespace: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The job's experiment totals once two reads a second apart agree (its last windows are written)."""
    from state.metrics import read_all_experiment_totals

    deadline = time.monotonic() + timeout_s
    previous = read_all_experiment_totals(redis_client, namespace)
    while True:
        time.sleep(1.0)
        current = read_all_experiment_totals(redis_client, namespace)
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current


def _await_running(job: Any, timeout_s: float) -> None:
    """Until the job runs, and a little longer for its sources to be reading (files written before would wait
    together, and the spool source reads waiting files newest first)."""
    deadline = time.monotonic() + timeout_s
    while "RUNNING" not in str(job.get_job_status().result()):
        if time.monotonic() > deadline:
            raise CommandError(f"the job did not start within {timeout_s:.0f} s")
        time.sleep(0.5)
    time.sleep(5.0)


def main(args: argparse.Namespace) -> int:
    import httpx
    import redis

    from api.app import create_app
    from flowrec.localredis import LocalRedis
    from pipelines.main import run_job, stop_job_quietly
    from pipelines.sources import DirectorySource
    from state.keys import KeyKind, redis_key
    from state.metrics import read_minutes
    from transforms.attribution import recount
    from transforms.experiments import ExperimentError, parse_experiment
    from transforms.shoppers import Shoppers
    from transforms.simulation import browse_events, same_totals, summary, visit_schedule
    from transforms.synthetic import build_shop

    settings = load_settings(args)
    variants = parse_variants(args.variants)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    try:
        experiment = parse_experiment(declaration(variants, args.seed))
    except ExperimentError as exc:
        raise UsageError(f"--variants: {exc}") from None
    duration_ms = int(round(args.minutes * MINUTE_MS))
    step_ms = int(round(args.step_seconds * 1000))
    if duration_ms <= LIST_DELAY_MS:
        raise UsageError(f"--minutes must be more than {LIST_DELAY_MS // MINUTE_MS} (shoppers look at their list {LIST_DELAY_MS // MINUTE_MS} minutes after browsing)")
    # The simulated period ends at the wall clock's minute: nothing the job sees is in the future.
    end_ms = time.time_ns() // 1_000_000 // MINUTE_MS * MINUTE_MS
    start_ms = end_ms - duration_ms

    out = args.out.resolve()
    spool = out / "spool"
    try:
        for folder in (spool / "events", spool / "catalog", out / "checkpoints"):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the simulation folder {out}: {exc.strerror or exc}") from None
    for old in list((spool / "events").glob("*")) + list((spool / "catalog").glob("*")):
        old.unlink()

    shop = build_shop(users=args.shoppers, items=args.items, seed=args.seed, start_ms=start_ms, days=1.0)
    shoppers = Shoppers(shop, seed=args.seed, available_at=start_ms)
    catalog = [dataclasses.replace(item, ts=start_ms - MINUTE_MS) for item in shop.catalog if item.in_stock and item.created_at <= start_ms]
    prices = {item.item_id: item.price for item in catalog if item.price is not None}
    visits = visit_schedule(list(shop.user_ids), start_ms, end_ms, args.visits, LIST_DELAY_MS, args.seed)
    print(f"simulating {args.minutes:g} min of a shop with {args.shoppers} shoppers and {len(catalog)} items: {len(visits)} visits, "
          f"variants {', '.join(f'{n}={p}' for n, p in variants.items())}", file=sys.stderr, flush=True)

    local = None
    if not settings.redis_url:
        local = LocalRedis().start()
        settings = dataclasses.replace(settings, redis_url=local.url)
    api_key = secrets.token_urlsafe(24)
    settings = dataclasses.replace(settings, spool_dir=spool, heartbeat_ms=0, max_out_of_orderness_ms=(LAG_STEPS + 2) * step_ms,
                                   checkpoint_dir=str(out / "checkpoints"), api_keys=(api_key,))
    clock = SimulatedClock(start_ms - MINUTE_MS)
    redis_client = redis.Redis.from_url(settings.redis_url)
    job = None
    if local is None and redis_client.exists(redis_key(KeyKind.STATS, None, settings.namespace)):
        redis_client.close()
        raise UsageError(f"namespace {settings.namespace!r} at the configured Redis already holds a job's data: its counts would mix with this run's (pick a new --namespace)")
    started = time.monotonic()
    try:
        print("starting the streaming job on a local Flink mini-cluster ...", file=sys.stderr, flush=True)
        job = run_job(settings, DirectorySource(spool, heartbeat_ms=0), job_name="flowrec-simulate", wait=False)
        _await_running(job, START_UP_S)
        with serving(create_app(settings, clock_ms=clock)) as base, httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {api_key}"}) as http:
            sim = Simulation(http, clock, redis_client, settings.namespace, shoppers, prices, spool, args.list_size, settings)
            sim.post("/v1/items", [item.to_dict() for item in catalog])
            time.sleep(SPOOL_SETTLE_S)
            clock.now_ms = start_ms
            response = http.post("/v1/experiments", json=declaration(variants, args.seed))
            if response.status_code != 202:
                raise CommandError(f"the API refused the experiment: {response.status_code} {response.text[:300]}")
            time.sleep(SPOOL_SETTLE_S)
            sim.await_experiment(start_ms, START_UP_S)
            # Past every event of the run (reactions and the flush views included): the catalog never holds the job back.
            sim.catalog_heartbeat(end_ms + 30 * MINUTE_MS)
            for visit in visits:
                sim.queue(browse_events(shoppers, visit, VIEW_GAP_MS))
            upcoming = iter(visits)
            visit = next(upcoming, None)
            report_every = max(1, (duration_ms // step_ms) // 10)
            for step, step_start in enumerate(range(start_ms, end_ms, step_ms)):
                step_end = min(step_start + step_ms, end_ms)
                while visit is not None and visit.list_ms < step_end:
                    sim.show_list(visit)
                    visit = next(upcoming, None)
                sim.send_until(step_end)
                sim.wait_for_job(START_UP_S if step < 2 * LAG_STEPS else CATCH_UP_S)
                if step % report_every == 0:
                    print(f"  simulated {(step_end - start_ms) / MINUTE_MS:5.1f} min: {sim.lists_seen} lists shown, {len(sim.sent)} events sent "
                          f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            # Reactions to the last lists, then organic views until the job has closed every window.
            last_ms = max([ts for ts, _, _ in sim.pending], default=end_ms) + 1
            sim.send_until(last_ms)
            flush_ms = sim.flush(last_ms, visits[0].user if visits else str(shop.user_ids[0]), catalog[0].item_id)
        totals = _stable_totals(redis_client, settings.namespace)
        minutes = read_minutes(redis_client, settings.namespace, start_ms - MINUTE_MS, flush_ms + MINUTE_MS)
        stats = {k.decode(): v.decode() for k, v in redis_client.hgetall(redis_key(KeyKind.STATS, None, settings.namespace)).items()}
        print(f"the job: {stats.get('events', 0)} events, {stats.get('late_events', 0)} late, {stats.get('dead_letters', 0)} dead letters, "
              f"{stats.get('attribution_late', 0)} late feedback", file=sys.stderr, flush=True)
    finally:
        if job is not None:
            stop_job_quietly(job)
        redis_client.close()
        if local is not None:
            local.stop()
    (out / "events.jsonl").write_bytes(b"".join(orjson.dumps(event) + b"\n" for event in sim.sent))
    offline = recount(sim.sent, settings.model, settings.rec_id_secret)
    recount_equal = same_totals(totals, offline.experiments) and same_totals(minutes, offline.minutes)
    result = summary(totals.get(EXPERIMENT_ID, {}), list(variants), experiment.control, recount_equal)
    if args.json:
        print(orjson.dumps(result).decode(), flush=True)
        return 0
    print(f"simulated {args.minutes:g} min, {sim.lists_seen} lists shown, {len(sim.sent)} events sent, in {time.monotonic() - started:.0f} s", flush=True)
    for name, row in result["variants"].items():
        low, high = row["ctr_ci"]
        print(f"  {name} ({variants[name]}): impressions {row['impressions']}, clicks {row['clicks']}, CTR {row['ctr']:.2%} [{low:.2%}, {high:.2%}], "
              f"purchases {row['purchases']}, conversion {row['conversion']:.2%}", flush=True)
    p_value = result["p_value"]
    print(f"  p-value {'n/a' if p_value is None else f'{p_value:.3g}'} (two-sided two-proportion z-test of CTR vs {experiment.control}); "
          f"winner: {result['winner'] or 'none yet (not significant at 95%)'}", flush=True)
    print(f"  recount: the job's counts {'equal' if recount_equal else 'DIFFER FROM'} an offline recount of the {len(sim.sent)} events sent "
          f"(log: {out / 'events.jsonl'})", flush=True)
    return 0
