"""`flowrec bench stream`: throughput, freshness, memory and state size of the streaming job.

Everything runs on private redis-servers and local Flink mini-clusters; each
measured job runs in a fresh child process (``python -m bench.stream --child
SPEC``) so the execution mode can differ between runs and the peak memory of
one job is not mixed with another's.

The shop
    :func:`transforms.synthetic.generate_shop` with ``--users/--items/--events``.
    Its timestamps are then *compressed* to ``--event-rate`` events per second of
    event time (event ``k`` gets ``t0 + k * 1000 / rate`` ms, order kept): the
    event-time density of a shop that really sends that many events per second,
    so a window holds what it would hold live.  (The generator spreads events
    over 14 days, where every 200 ms window would hold less than one event.)
    The catalog is loaded once at start-up (its ``ts`` set just before the first
    event), so the replay measures the event path; at each item's creation time
    every new item would be an upsert window of the content operator (about 3 ms
    of CPU each at 5,000 items: :meth:`transforms.content.ContentIndex.upsert`).

Sustained events/s (``events_per_s``)
    A bounded replay of the shop (:class:`pipelines.sources.FileReplaySource`,
    chunks of ``--chunk`` events) through the whole job: parse -> user state ->
    co-occurrence -> scoring -> Redis.  A thread polls the job's counters in
    Redis every 20 ms.  The rate is counted from the *first* Redis write of the
    job (the first user-state counters) to the *last* (the final user lists):
    ``(events - events counted at the first write) / (t_last - t_first)``, so JVM
    start-up, Python worker start-up and reading the input file are excluded,
    and every event has gone through scoring and the Redis sink at ``t_last``.
    ``scorings_per_event`` (user lists written / events) says how much scoring
    work the shop asks for: the job scores each user once per window in which
    the user had events.  Each run's ``cpu_by_thread`` is the CPU seconds of the
    measured span per thread name (:func:`thread_cpu`): in thread mode a Flink
    task thread runs its operator chain's Python too, so this is the profile
    per operator chain (``java:scorer -> redis``, ``java:user-state -> (``...).

With embeddings (``--embeddings EXPORT_ROOT``)
    The replay also runs with the learned-embedding components on
    (``--embedding-weights``), interleaved with the plain runs; the result
    under ``<mode>+embeddings`` gives its rate, ``ratio_to_plain`` and the extra
    CPU per user list.  It runs with the online item vectors (the default) and,
    as ``<mode>+embeddings-static``, without them: ``online_rate_ratio`` and
    ``online_cpu_ratio`` are their cost.  Train the export on the same shop first, e.g.
    ``flowrec generate`` with the same sizes and seed, then ``flowrec train``.

Naive design (``naive_events_per_s``)
    :mod:`bench.naive_job` on the first ``--naive-events`` events of the same
    replay, timed the same way from its own per-event counters.

Freshness (``freshness_ms`` at ``--high-rate``, ``freshness_1k_ms`` at ``--low-rate``)
    The job runs live with :class:`pipelines.sources.SocketSource`; this
    process is the TCP server and sends the shop's events as JSON arrays (one
    line every ``--send-interval-ms``) on an open-loop schedule: event ``k`` of
    the measured phase is due at ``start + k / rate`` and carries that due time
    as ``ts``, so time spent waiting in the sender (batching, or backpressure
    when the job falls behind) counts as lateness.  With
    ``Settings(record_freshness=True)`` the scorer records ``now - ts`` of each
    user's latest event for every list it computes (Redis list
    ``KeyKind.FRESHNESS``); the percentiles are over those lags in the measured
    phase (after a warm-up at a low rate).  The Redis write that follows adds
    the sink's pipeline latency (about a millisecond here), not counted.
    Earlier events of the same user in the same window waited up to one window
    longer than the recorded lag.

Settings (tuned for this machine; each is a flag)
    The hashmap state backend (``--state-backend rocksdb``: state off the JVM
    heap and incremental checkpoints, for shops of many users).
    Parallelism 1 and as many user and item shards as the parallelism: a shard
    is a key of the keyed operators, and at parallelism 1 the default 8 user /
    4 item shards only multiply records (one slice per user shard, one item
    delta per item shard per slice) and window timers — measured here, 8/4
    shards cut the replay rate by about a third and made the job fall behind
    at 1,000 events/s.  Replay: the model's 200 ms window, 1,000-event chunks.
    Live at 1,000 events/s: a 50 ms window (10 and 20 ms fell behind on
    per-window work, 100 ms waited longer), no out-of-orderness allowance
    (one socket delivers events in order), a 10 ms heartbeat and a line every
    5 ms (2 ms lines doubled the records and the job fell behind).  Live at
    100,000 events/s: the 200 ms window (the job cannot keep up at that rate
    whatever the window; a longer one only adds debounce delay).

Sparse history (``sparse``)
    A ``flowrec generate`` shop at its own event-time density (``--sparse-events``
    over 14 days: almost every event in a window of its own, as when a job
    catches up a backlog) through the job, and through the reference engine
    on the same events: ``{"events_per_s", "reference_events_per_s"}``.  Here
    the job's cost is per window and per record, not per event.

Closing the loop (``feedback``)
    The same shop with an impression of 10 items before every click, cart and
    purchase (and a quarter of the views), rec_ids on half the outcomes and a
    two-variant experiment (popularity vs default) on the catalog input
    (:mod:`bench.feedback`), replayed with attribution on, interleaved with the
    plain shop and attribution off: shop events/s both ways and their ratio
    (impression rows are extra input, so rates count the shop's own events),
    freshness at the low live rate both ways, and Redis bytes per user.

Standalone clusters (``events_per_s_by_cluster``)
    The replay submitted with ``flowrec submit --wait`` to a cluster of
    deploy/cluster.sh with N one-slot TaskManagers (thread mode) at parallelism
    N and N user/item shards, for each N of ``--cluster-taskmanagers`` (1 2):
    ``{"1tm": ..., "2tm": ...}``.  In thread mode each TaskManager embeds one
    Python interpreter, so N TaskManagers are N Python cores.  ``clusters``
    adds the TaskManagers' busy cores over the measured span and events/s per
    busy core (the figure that predicts a larger cluster).

Memory and state
    ``peak_rss_mb``: the largest sum of resident set sizes over the child's
    process tree (the Python client, the JVM and, in process mode, the Python
    workers), sampled every 100 ms, over all runs.
    ``state_bytes_per_user``: what the user-state operator keeps per user in
    managed state — the user's entry in a profile block
    (:func:`state.schemas.encode_profile_block`: encoded profile, user id,
    last-seen time, framing) — averaged over the users of the replay, computed
    from the reference engine's profiles after the same events (the job's are
    identical).  Between cleanings the profile log holds up to
    ``ProfileLog.max_ratio`` times that (:mod:`state.profile_log`).
    ``redis_bytes_per_user``: ``MEMORY USAGE`` of a user's keys (home list,
    cart list, profile summary) after the replay, averaged over up to 2,000 users.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from flowrec.config import non_negative_seconds, positive_float, whole_number_at_least

log = logging.getLogger(__name__)

HELP = "events/s, freshness at 100k and 1k events/s, memory and state size of the streaming job, next to a naive per-event design"

STATS_POLL_S = 0.02
RSS_POLL_S = 0.1
THREAD_POLL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shop = parser.add_argument_group("shop")
    shop.add_argument("--users", type=whole_number_at_least(1), default=20_000, help="shoppers in the synthetic shop (default 20000)")
    shop.add_argument("--items", type=whole_number_at_least(1), default=5_000, help="catalog items (default 5000)")
    shop.add_argument("--events", type=whole_number_at_least(1), default=200_000, help="events replayed for the throughput runs (default 200000)")
    shop.add_argument("--seed", type=int, default=7)
    shop.add_argument("--event-rate", type=positive_float, default=100_000, help="event-time density of the replay, events per second of event time (default 100000)")
    job = parser.add_argument_group("job")
    job.add_argument("--modes", nargs="+", choices=("thread", "process"), default=["thread", "process"], help="Python execution modes to compare (default both)")
    job.add_argument("--parallelism", type=whole_number_at_least(1), default=1, help="parallelism of the keyed operators (default 1)")
    job.add_argument("--window-ms", type=whole_number_at_least(1), default=None, help="scoring window of the replay runs (default: the model default)")
    job.add_argument("--user-shards", type=whole_number_at_least(1), default=None, help="Settings.user_shards (default: --parallelism; see the module doc)")
    job.add_argument("--item-shards", type=whole_number_at_least(1), default=None, help="Settings.item_shards (default: --parallelism)")
    job.add_argument("--embeddings", type=Path, default=None, help="an export root (`flowrec train --out`, trained on this shop): the replay also runs with the embedding components on, interleaved with plain runs")
    job.add_argument("--embedding-weights", default="1.0,0.0", help="weight_embedding,weight_sequence of the embedding runs (default 1.0,0.0)")
    job.add_argument("--attribution", choices=("on", "off"), default="on", help="Settings.attribution of the replay and live runs (default on; the feedback part sets its own)")
    job.add_argument("--chunk", type=whole_number_at_least(1), default=1000, help="events per source record in the replay (Settings.batch_size, default 1000)")
    job.add_argument("--state-backend", choices=("hashmap", "rocksdb"), default="hashmap", help="Settings.state_backend of every job run (default hashmap; rocksdb keeps state off the JVM heap, checkpoints incrementally)")
    job.add_argument("--naive-events", type=whole_number_at_least(1), default=5_000, help="events for the naive design (default 5000)")
    sparse = parser.add_argument_group("sparse history (a `flowrec generate` shop at its own event-time density)")
    sparse.add_argument("--sparse-events", type=whole_number_at_least(1), default=20_000, help="events of the sparse shop (default 20000)")
    sparse.add_argument("--sparse-users", type=whole_number_at_least(1), default=1_000, help="shoppers of the sparse shop (default 1000, as flowrec generate)")
    sparse.add_argument("--sparse-items", type=whole_number_at_least(1), default=500, help="items of the sparse shop (default 500, as flowrec generate)")
    live = parser.add_argument_group("freshness (live socket runs)")
    live.add_argument("--high-rate", type=positive_float, default=100_000, help="offered events/s of the first freshness run (default 100000)")
    live.add_argument("--high-seconds", type=positive_float, default=1.0, help="seconds of offered load at --high-rate (default 1)")
    live.add_argument("--high-window-ms", type=whole_number_at_least(1), default=200, help="scoring window at --high-rate (default 200)")
    live.add_argument("--low-rate", type=positive_float, default=1_000, help="offered events/s of the second freshness run (default 1000)")
    live.add_argument("--low-seconds", type=positive_float, default=5.0, help="seconds of offered load at --low-rate (default 5)")
    live.add_argument("--low-window-ms", type=whole_number_at_least(1), default=50, help="scoring window at --low-rate (default 50)")
    live.add_argument("--warmup-seconds", type=non_negative_seconds, default=2.0, help="warm-up before each measured phase, at min(rate, 2000)/s (default 2)")
    live.add_argument("--out-of-orderness-ms", type=whole_number_at_least(0), default=0, help="watermark delay of the live runs (one ordered socket: 0)")
    live.add_argument("--heartbeat-ms", type=whole_number_at_least(1), default=10, help="heartbeat interval of the live source (default 10)")
    live.add_argument("--send-interval-ms", type=positive_float, default=5.0, help="the sender writes one JSON-array line this often (default 5)")
    live.add_argument("--live-mode", choices=("thread", "process"), default="thread", help="execution mode of the live runs (default thread)")
    cluster = parser.add_argument_group("standalone clusters (deploy/cluster.sh: N TaskManagers x 1 slot, thread mode, parallelism N)")
    cluster.add_argument("--cluster-taskmanagers", type=whole_number_at_least(1), nargs="+", default=[1, 2], help="TaskManager counts to compare (default: %(default)s)")
    parser.add_argument("--parts", nargs="+", choices=("replay", "naive", "high", "low", "sparse", "cluster", "feedback"), default=["replay", "naive", "high", "low", "sparse", "cluster", "feedback"], help="measurements to run (default all; the JSON has null for the others)")
    parser.add_argument("--repeats", type=whole_number_at_least(1), default=3, help="runs per measurement; medians are reported (default 3)")
    parser.add_argument("--live-repeats", type=whole_number_at_least(1), default=None, help="runs per freshness measurement (default --repeats)")
    parser.add_argument("--timeout-s", type=positive_float, default=1800, help="give up on one job run after this long (default 1800)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)


# -- measurement helpers (child side) -------------------------------------------------------


def _process_tree(root: int) -> dict[int, list[bytes]]:
    """The ``/proc/<pid>/stat`` fields after the command name of ``root`` and all its descendants (Linux)."""
    parents: dict[int, int] = {}
    stats: dict[int, list[bytes]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])  # ppid (field 4 of stat)
        stats[pid] = fields
    tree = {}
    for pid, fields in stats.items():
        p = pid
        while p > 1 and p != root:
            p = parents.get(p, 0)
        if p == root:
            tree[pid] = fields
    return tree


def process_tree_usage(root: int) -> tuple[int, float]:
    """``(resident bytes, CPU seconds)`` of ``root`` and all its descendants (Linux /proc)."""
    page = os.sysconf("SC_PAGE_SIZE")
    ticks = os.sysconf("SC_CLK_TCK")
    rss, cpu = 0, 0
    for fields in _process_tree(root).values():
        # rss in pages (field 24); utime + stime in clock ticks (fields 14, 15)
        rss += int(fields[21]) * page
        cpu += int(fields[11]) + int(fields[12])
    return rss, cpu / ticks


def thread_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far of every thread of ``root``'s process tree, summed by name (Linux /proc).

    A name is ``"<process>:<thread>"`` as the kernel keeps them (15 characters;
    digits shown as ``#``, so a task's subtask index and a pool's thread number
    do not split it).  A Flink task thread is named after its operator chain
    (``"java:scorer -> redis"``), so in thread mode this is CPU per chain,
    Python included: the profile behind ``cpu_by_thread``.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in _process_tree(root):
        try:
            with open(f"/proc/{pid}/comm") as f:
                process = f.read().strip()
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f"{process}:{''.join('#' if c.isdigit() else c for c in f.read().strip())}"
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_by_thread_between(samples: list[tuple[float, dict[str, float]]], t0: float, t1: float, top: int = 12) -> dict[str, float]:
    """CPU seconds per thread name from the last sample at or before ``t0`` to the first at or after
    ``t1`` (of :func:`thread_cpu` samples, time ascending), the ``top`` largest; {} without both.

    A name's total is its largest in that range: a task thread ends when its
    input does (a bounded replay's user-state before the scorer's last
    windows), and its CPU is then no longer in the later samples."""
    first = max((k for k, (t, _) in enumerate(samples) if t <= t0), default=None)
    last = min((k for k, (t, _) in enumerate(samples) if t >= t1), default=None)
    if first is None or last is None:
        return {}
    start = samples[first][1]
    peak: dict[str, float] = {}
    for _, cpu in samples[first : last + 1]:
        for name, value in cpu.items():
            peak[name] = max(peak.get(name, 0.0), value)
    used = {name: value - start.get(name, 0.0) for name, value in peak.items()}
    return dict(sorted(((n, round(v, 2)) for n, v in used.items() if v > 0), key=lambda kv: -kv[1])[:top])


class TreeSampler(threading.Thread):
    """Samples :func:`process_tree_usage` of this process every 100 ms: ``peak`` RSS and ``(t, cpu)`` samples."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.cpu: list[tuple[float, float]] = []
        # Per thread name, every THREAD_POLL_S (a few ms of /proc reads each: not every RSS poll).
        self.threads: list[tuple[float, dict[str, float]]] = []
        self._stop_event = threading.Event()

    def sample(self) -> None:
        now = time.perf_counter()
        rss, cpu = process_tree_usage(os.getpid())
        self.peak = max(self.peak, rss)
        self.cpu.append((now, cpu))
        if not self.threads or now - self.threads[-1][0] >= THREAD_POLL_S or self._stop_event.is_set():
            self.threads.append((now, thread_cpu(os.getpid())))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(RSS_POLL_S)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak

    def cpu_between(self, t0: float, t1: float) -> float:
        """CPU seconds used by the process tree between two perf_counter times (interpolated samples)."""
        times = [t for t, _ in self.cpu]
        values = [c for _, c in self.cpu]
        return float(np.interp(t1, times, values) - np.interp(t0, times, values))


class StatsPoller(threading.Thread):
    """Polls the job's counters hash in Redis; ``samples`` are ``(perf_counter s, {field: int})``."""

    def __init__(self, url: str, namespace: str = "flowrec") -> None:
        super().__init__(daemon=True)
        import redis

        from state.keys import KeyKind, redis_key

        self.client = redis.Redis.from_url(url)
        self.key = redis_key(KeyKind.STATS, None, namespace)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop_event = threading.Event()

    def read(self) -> dict[str, int]:
        # Counters only: gauges such as ``embeddings_version`` are not numbers.
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.key).items() if v.lstrip(b"-").isdigit()}

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.perf_counter()
            values = self.read()
            if not self.samples or values != self.samples[-1][1]:
                self.samples.append((now, values))
            self._stop_event.wait(STATS_POLL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.samples.append((time.perf_counter(), self.read()))

    def first_to_last(self, first_field: str, fields: tuple[str, ...]) -> tuple[float, int, float]:
        """``(t_first, count at t_first, t_last)``: first sample with ``first_field`` > 0, last change of ``fields``."""
        first = next(((t, v.get(first_field, 0)) for t, v in self.samples if v.get(first_field, 0) > 0), None)
        if first is None:
            raise RuntimeError(f"the job wrote no '{first_field}' counter to Redis")
        final = {f: self.samples[-1][1].get(f, 0) for f in fields}
        last = next(t for t, v in self.samples if all(v.get(f, 0) == final[f] for f in fields))
        return first[0], first[1], last


def _settings(spec: dict[str, Any], **changes: Any):
    from flowrec.config import Settings
    from transforms.config import ModelConfig

    model = ModelConfig()
    if spec.get("window_ms"):
        model = model.replace(window_ms=spec["window_ms"])
    shards: dict[str, Any] = {name: spec[name] for name in ("user_shards", "item_shards") if spec.get(name)}
    if spec.get("embeddings"):
        model = model.replace(weight_embedding=spec["weight_embedding"], weight_sequence=spec["weight_sequence"], online_item_vectors=spec.get("online_item_vectors", True))
        shards["embeddings"] = Path(spec["embeddings"])
    return Settings(
        **shards,
        attribution=spec.get("attribution", True),
        **({"rec_id_secret": spec["rec_id_secret"]} if spec.get("rec_id_secret") else {}),
        redis_url=spec["redis_url"],
        parallelism=spec["parallelism"],
        execution_mode=spec["mode"],
        restart_attempts=0,
        checkpoint_dir=str(Path(spec["workdir"]) / "checkpoints"),
        batch_size=spec.get("chunk", 1000),
        state_backend=spec.get("state_backend", "hashmap"),
        checkpoint_interval_ms=spec.get("checkpoint_interval_ms", 10_000),
        model=model,
        **changes,
    )


def child_replay(spec: dict[str, Any]) -> dict[str, Any]:
    """The job over the replay files; rate from the first to the last Redis write."""
    from pipelines.flink_env import create_environment
    from pipelines.job import RedisJobSink, build_job
    from pipelines.sources import FileReplaySource

    settings = _settings(spec)
    env = create_environment(settings)
    source = FileReplaySource([Path(spec["events_path"])], Path(spec["catalog_path"]), chunk_size=settings.batch_size, workdir=Path(spec["workdir"]))
    build_job(env, source, RedisJobSink(settings.redis_url, settings.namespace), settings)
    rss, poller = TreeSampler(), StatsPoller(settings.redis_url)
    rss.start()
    poller.start()
    started = time.perf_counter()
    env.execute("bench-stream-replay")
    wall = time.perf_counter() - started
    poller.stop()
    peak = rss.stop()
    t_first, counted_first, t_last = poller.first_to_last("events", ("events", "user_lists"))
    final = poller.samples[-1][1]
    events = final.get("events", 0)
    cpu = rss.cpu_between(t_first, t_last)
    return {
        "events": events,
        "user_lists": final.get("user_lists", 0),
        "events_per_s": (events - counted_first) / (t_last - t_first) if t_last > t_first else None,
        "cpu_us_per_event": cpu / max(events - counted_first, 1) * 1e6,
        "cpu_cores_used": cpu / (t_last - t_first) if t_last > t_first else None,
        "measured_s": t_last - t_first,
        "job_wall_s": wall,
        "peak_rss_bytes": peak,
        "cpu_by_thread": cpu_by_thread_between(rss.threads, t_first, t_last),
    }


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """The naive design over the naive replay file; rate from its first to its last Redis write."""
    from bench.naive_job import build_naive_job
    from pipelines.flink_env import create_environment

    settings = _settings(spec)
    env = create_environment(settings)
    build_naive_job(env, Path(spec["events_path"]), settings.redis_url, settings.model)
    rss, poller = TreeSampler(), StatsPoller(settings.redis_url)
    rss.start()
    poller.start()
    started = time.perf_counter()
    env.execute("bench-stream-naive")
    wall = time.perf_counter() - started
    poller.stop()
    peak = rss.stop()
    t_first, counted_first, t_last = poller.first_to_last("naive_events", ("naive_events", "naive_item_records"))
    events = poller.samples[-1][1].get("naive_events", 0)
    cpu = rss.cpu_between(t_first, t_last)
    return {
        "events": events,
        "events_per_s": (events - counted_first) / (t_last - t_first) if t_last > t_first else None,
        "cpu_us_per_event": cpu / max(events - counted_first, 1) * 1e6,
        "cpu_cores_used": cpu / (t_last - t_first) if t_last > t_first else None,
        "measured_s": t_last - t_first,
        "job_wall_s": wall,
        "peak_rss_bytes": peak,
        "cpu_by_thread": cpu_by_thread_between(rss.threads, t_first, t_last),
    }


def event_prefixes(path: Path) -> list[str]:
    """Each event of a JSON-lines file as JSON text without ``ts``, ending in ``,"ts":`` (the sender appends it)."""
    out = []
    with open(path, "rb") as f:
        for line in f:
            record = orjson.loads(line)
            record.pop("ts", None)
            out.append(orjson.dumps(record).decode()[:-1] + ',"ts":')
    return out


class Sender:
    """Sends events over a socket as JSON-array lines on an open-loop schedule (see the module doc)."""

    def __init__(self, conn: socket.socket, prefixes: list[str], interval_s: float, max_per_line: int = 2000) -> None:
        self.conn = conn
        self.prefixes = prefixes
        self.interval_s = interval_s
        self.max_per_line = max_per_line
        self.next_event = 0
        self.sent_total = 0
        self.last_ts = 0

    def run(self, rate: float, seconds: float) -> dict[str, float]:
        """Offer ``rate * seconds`` events; returns counts and the achieved send rate."""
        total = max(1, int(rate * seconds))
        start = time.time()
        sent = 0
        n_prefixes = len(self.prefixes)
        while sent < total:
            due = min(total, int((time.time() - start) * rate) + 1)
            while sent < due:
                n = min(due - sent, self.max_per_line)
                parts = []
                for j in range(sent, sent + n):
                    ts = int((start + j / rate) * 1000)
                    parts.append(self.prefixes[(self.next_event + j) % n_prefixes] + str(ts) + "}")
                self.conn.sendall(("[" + ",".join(parts) + "]\n").encode())
                self.last_ts = ts
                sent += n
            if sent < total:
                wake = max(start + sent / rate, time.time() + self.interval_s)
                time.sleep(max(0.0, wake - time.time()))
        elapsed = time.time() - start
        self.next_event += sent
        self.sent_total += sent
        return {"offered": total, "send_s": elapsed, "achieved_rate": sent / elapsed if elapsed > 0 else float("inf")}

    def probe(self) -> int:
        """Send one event of a dedicated user stamped now; returns its ``ts``."""
        ts = time.time_ns() // 1_000_000
        self.conn.sendall(b'[{"user_id":"bench-probe","item_id":"bench-probe-item","event_type":"view","ts":%d}]\n' % ts)
        self.sent_total += 1
        return ts


def _wait_drained(read_stats, sent: int, sender: "Sender", timeout_s: float, job_running) -> bool:
    """Until every sent event has passed user state and every list those events changed is written.

    First the events counter reaches ``sent``; then one probe event is sent
    and its window must be scored.  Windows are scored in order, and events
    that user state processed after the heartbeat had moved event time past
    their window are late and folded into the open window (the job's
    documented rule), so the probe's window is at or after every window those
    events went to.  ``job_running()`` is checked every second so a failed
    job ends the wait.
    """
    deadline = time.monotonic() + timeout_s
    next_check = time.monotonic() + 1.0

    def alive() -> bool:
        nonlocal next_check
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 1.0
            if not job_running():
                raise RuntimeError("the job stopped before the events were processed")
        return time.monotonic() < deadline

    while read_stats().get("events", 0) < sent:
        if not alive():
            return False
        time.sleep(0.01)
    probe_ts = sender.probe()
    while read_stats().get("last_window_ts", 0) <= probe_ts:
        if not alive():
            return False
        time.sleep(0.01)
    return True


def child_live(spec: dict[str, Any]) -> dict[str, Any]:
    """The job live on a socket fed by this process; freshness lags from the scorer's records."""
    import redis

    from pipelines.flink_env import create_environment
    from pipelines.job import RedisJobSink, build_job
    from pipelines.sources import SocketSource
    from state.keys import KeyKind, redis_key

    settings = _settings(spec, record_freshness=True, max_out_of_orderness_ms=spec["out_of_orderness_ms"])
    prefixes = event_prefixes(Path(spec["events_path"]))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    env = create_environment(settings)
    build_job(env, SocketSource("127.0.0.1", port, heartbeat_ms=spec["heartbeat_ms"]), RedisJobSink(settings.redis_url, settings.namespace), settings)
    rss = TreeSampler()
    rss.start()
    stats = StatsPoller(settings.redis_url)  # used for reads only
    client = env.execute_async("bench-stream-live")
    server.settimeout(300)
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    r = redis.Redis.from_url(settings.redis_url)
    freshness_key = redis_key(KeyKind.FRESHNESS)
    sender = Sender(conn, prefixes, spec["send_interval_ms"] / 1000)

    def job_running() -> bool:
        return str(client.get_job_status().result()).endswith("RUNNING")

    say = lambda *a: print(*a, flush=True)  # noqa: E731 - the child's log
    try:
        rate = spec["rate"]
        say(f"connected; warm-up at {min(rate, 2000.0):.0f}/s")
        sender.run(min(rate, 2000.0), spec["warmup_seconds"])
        warm = _wait_drained(stats.read, sender.sent_total, sender, spec["timeout_s"] / 3, job_running)
        say(f"warm-up drained: {stats.read()}")
        if not warm:
            raise RuntimeError("the job did not finish the warm-up events")
        r.delete(freshness_key)
        at_start = stats.read()
        before = at_start.get("events", 0)
        t0 = time.perf_counter()
        sent = sender.run(rate, spec["seconds"])
        say(f"sent {sent}; draining")
        drained = _wait_drained(stats.read, sender.sent_total, sender, spec["timeout_s"] / 3, job_running)
        say(f"drained={drained}: {stats.read()}")
        processing_s = time.perf_counter() - t0
        at_end = stats.read()
        t_end = time.perf_counter()
        processed = at_end.get("events", 0) - before
        in_order = [int(x) for x in r.lrange(freshness_key, 0, -1)]
        lags = sorted(in_order)
    finally:
        conn.close()
        server.close()
        try:
            client.cancel().result()
        except Exception as exc:  # the job may already have failed; its error is the interesting one
            log.warning("cancel failed: %s", exc)
        peak = rss.stop()
        r.close()
    if not lags:
        raise RuntimeError("the scorer recorded no freshness lags")
    return {
        "rate": rate,
        "events": sent["offered"],
        "achieved_send_rate": sent["achieved_rate"],
        "processed_per_s": processed / processing_s,
        # Below 1 while the job is behind, other programs on the machine took the CPU.
        "cpu_cores_used": rss.cpu_between(t0, t_end) / (t_end - t0),
        "drained": drained,
        "late_events": at_end.get("late_events", 0) - at_start.get("late_events", 0),
        "warmup_late_events": at_start.get("late_events", 0),
        "lists": len(lags),
        "freshness_ms": {name: float(np.percentile(lags, q)) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))},
        "max_ms": lags[-1],
        # 40 lags evenly spaced in the order lists were computed: shows queueing build-up or stalls.
        "lag_series_ms": [in_order[i] for i in np.linspace(0, len(in_order) - 1, min(40, len(in_order))).astype(int).tolist()],
        "peak_rss_bytes": peak,
    }


def child_main(spec_path: Path) -> int:
    spec = orjson.loads(spec_path.read_bytes())
    logging.basicConfig(level=logging.WARNING)
    kind = spec["kind"]
    result = {"replay": child_replay, "naive": child_naive, "live": child_live}[kind](spec)
    Path(spec["result_path"]).write_bytes(orjson.dumps(result))
    return 0


# -- orchestration (parent side) -------------------------------------------------------------


def compress_time(events, rate: float, t0: int | None = None):
    """The same events (in time order) with ``ts`` rewritten to ``rate`` events per second of event time."""
    from transforms.events import EventBatch

    events: EventBatch = events.sorted_by_time()
    start = int(events.ts[0]) if t0 is None else t0
    ts = start + (np.arange(len(events), dtype=np.float64) * 1000.0 / rate).astype(np.int64)
    return dataclasses.replace(events, ts=ts)


@dataclasses.dataclass
class Shop:
    events: Any  # EventBatch, time-compressed
    catalog: list
    workdir: Path
    events_path: Path
    catalog_path: Path
    naive_path: Path


def prepare_shop(args: argparse.Namespace, workdir: Path) -> Shop:
    """Generate the shop, compress its time, write the replay files."""
    from transforms.events import EventBatch
    from transforms.synthetic import events_to_jsonl, generate_shop

    catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=args.seed)
    events = compress_time(EventBatch.concat(list(stream)), args.event_rate)
    catalog = [dataclasses.replace(item, ts=int(events.ts[0]) - 1) for item in catalog]
    events_path, catalog_path, naive_path = workdir / "events.jsonl", workdir / "catalog.jsonl", workdir / "naive.jsonl"
    events_path.write_bytes(events_to_jsonl(events))
    catalog_path.write_bytes(b"".join(item.to_json() + b"\n" for item in catalog))
    naive_path.write_bytes(events_to_jsonl(events.take(slice(0, args.naive_events))))
    return Shop(events, catalog, workdir, events_path, catalog_path, naive_path)


def run_child(spec: dict[str, Any], workdir: Path, timeout_s: float) -> dict[str, Any]:
    """One measured job in a fresh Python process; returns its result dict."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{spec['kind']}-", dir=workdir))
    spec = {**spec, "workdir": str(run_dir), "result_path": str(run_dir / "result.json"), "timeout_s": timeout_s}
    spec_path = run_dir / "spec.json"
    spec_path.write_bytes(orjson.dumps(spec))
    log_path = run_dir / "child.log"
    with open(log_path, "wb") as out:
        code = subprocess.run([sys.executable, "-m", "bench.stream", "--child", str(spec_path)], stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
    if code != 0 or not Path(spec["result_path"]).exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{spec['kind']} run failed (exit {code}):\n{tail}")
    return orjson.loads(Path(spec["result_path"]).read_bytes())


def state_bytes_per_user(events, catalog, config) -> dict[str, float]:
    """Mean bytes the user-state operator keeps per user, from the reference engine's profiles after ``events``."""
    from state.schemas import encode_profile, encode_profile_block
    from transforms.engine import ReferenceEngine

    engine = ReferenceEngine(config, catalog, score_users=False)
    engine.process(events)
    encoded = {user: encode_profile(p) for user, p in engine.profiles.items()}
    if not encoded:
        return {"state_bytes_per_user": 0.0, "profile_bytes_per_user": 0.0, "users": 0}
    block = encode_profile_block((user, engine.profiles[user].last_ts, raw) for user, raw in encoded.items())
    sizes = [len(raw) for raw in encoded.values()]
    return {"state_bytes_per_user": len(block) / len(sizes), "profile_bytes_per_user": float(np.mean(sizes)), "users": len(sizes)}


def measure_sparse(args: argparse.Namespace, workdir: Path, base: dict[str, Any], mode: str, redis_url: str, repeats: int, say) -> dict[str, Any]:
    """A `flowrec generate` shop at its own density (14 days; most windows hold one event or none)
    through the job and through the reference engine (:func:`transforms.engine.replay`, in this
    process) on the same events and catalog.  The job's rate is counted first to last Redis write
    (JVM start-up excluded), the engine's over the replay call alone."""
    from transforms.config import ModelConfig
    from transforms.engine import replay
    from transforms.events import EventBatch
    from transforms.synthetic import events_to_jsonl, generate_shop

    catalog, stream = generate_shop(users=args.sparse_users, items=args.sparse_items, events=args.sparse_events, seed=args.seed)
    events = EventBatch.concat(list(stream))
    folder = workdir / "sparse"
    folder.mkdir(exist_ok=True)
    events_path, catalog_path = folder / "events.jsonl", folder / "catalog.jsonl"
    events_path.write_bytes(events_to_jsonl(events))
    catalog_path.write_bytes(b"".join(item.to_json() + b"\n" for item in catalog))
    config = ModelConfig()
    windows = len(np.unique(events.ts // config.window_ms))
    reference, runs = [], []
    for r in range(repeats):
        started = time.perf_counter()
        replay(events, config, catalog)
        reference.append(len(events) / (time.perf_counter() - started))
        _flush(redis_url)
        run = run_child({**base, "window_ms": config.window_ms, "kind": "replay", "mode": mode, "redis_url": redis_url, "events_path": str(events_path), "catalog_path": str(catalog_path)}, workdir, args.timeout_s)
        runs.append(run)
        say(f"  sparse #{r + 1}: job {run['events_per_s'] or 0:,.0f} events/s ({run['measured_s']:.1f} s measured, {run['job_wall_s']:.1f} s job), reference engine {reference[-1]:,.0f} events/s; {len(events)} events in {windows:,} windows")
    job_rate = _median([run["events_per_s"] for run in runs])
    reference_rate = _median(reference)
    return {
        "events_per_s": job_rate,
        "reference_events_per_s": reference_rate,
        "ratio_to_reference": job_rate / reference_rate if job_rate and reference_rate else None,
        "windows": windows,
        "events": len(events),
        "runs": runs,
    }


def measure_clusters(args: argparse.Namespace, workdir: Path, shop: "Shop", redis_url: str, repeats: int, say) -> dict[str, Any]:
    """The replay submitted (`flowrec submit --wait`) to standalone clusters of N one-slot
    TaskManagers at parallelism N (N user and item shards), thread mode.  Rate from the first to
    the last Redis write as in the replay; CPU is the TaskManagers' (their /proc times)."""
    from flowrec.localredis import free_port

    repo = Path(__file__).resolve().parent.parent
    out: dict[str, Any] = {}
    for tms in args.cluster_taskmanagers:
        run_dir = workdir / f"cluster-{tms}tm"
        rest_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWREC_", "FLINK_")) and k != "REDIS_URL"}
        env |= {
            "FLOWREC_CLUSTER_DIR": str(run_dir), "FLOWREC_FLINK_REST_PORT": str(rest_port), "FLOWREC_FLINK_RPC_PORT": str(free_port()),
            "FLOWREC_FLINK_SLOTS": "1", "FLOWREC_FLINK_TASKMANAGERS": str(tms), "FLOWREC_PYTHON": sys.executable,
        }
        script = lambda action: subprocess.run(["bash", str(repo / "deploy" / "cluster.sh"), action], env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
        started = script("start")
        if started.returncode != 0:
            raise RuntimeError(f"cluster with {tms} TaskManager(s) did not start: {started.stderr[-2000:]}")
        try:
            pids = [int(p) for p in (run_dir / "pid" / "flink-flowrec-taskexecutor.pid").read_text().split()]
            runs = []
            for r in range(repeats):
                _flush(redis_url)
                poller = StatsPoller(redis_url)
                cpu_before = sum(process_tree_usage(pid)[1] for pid in pids)
                poller.start()
                done = subprocess.run(
                    [sys.executable, "-m", "flowrec.cli", "submit", "--events", str(shop.events_path), "--catalog", str(shop.catalog_path),
                     "--redis-url", redis_url, "--parallelism", str(tms), "--user-shards", str(tms), "--item-shards", str(tms),
                     "--batch-size", str(args.chunk), "--state-backend", args.state_backend, "--restart-attempts", "0", "--jobmanager", f"localhost:{rest_port}", "--wait", "--timeout", str(int(args.timeout_s))],
                    env=env, cwd=repo, capture_output=True, text=True, timeout=args.timeout_s,
                )
                poller.stop()
                cpu = sum(process_tree_usage(pid)[1] for pid in pids) - cpu_before
                if done.returncode != 0:
                    raise RuntimeError(f"submit to the {tms}-TaskManager cluster failed: {done.stderr[-2000:]}")
                t_first, counted_first, t_last = poller.first_to_last("events", ("events", "user_lists"))
                events = poller.samples[-1][1].get("events", 0)
                rate = (events - counted_first) / (t_last - t_first) if t_last > t_first else None
                # The TaskManagers' CPU over the whole job (start-up included) against the measured span: an upper bound of busy cores.
                runs.append({"events_per_s": rate, "events": events, "measured_s": t_last - t_first, "taskmanager_cpu_s": cpu, "job_id": done.stdout.strip()})
                say(f"  cluster {tms} TM x 1 slot, parallelism {tms} #{r + 1}: {rate or 0:,.0f} events/s ({t_last - t_first:.1f} s measured, TaskManagers used {cpu:.1f} CPU s)")
        finally:
            script("stop")
        rate = _median([x["events_per_s"] for x in runs])
        busy = _median([x["taskmanager_cpu_s"] / x["measured_s"] for x in runs if x["measured_s"] > 0])
        out[f"{tms}tm"] = {"events_per_s": rate, "taskmanager_cores_busy": busy, "events_per_s_per_busy_core": rate / busy if rate and busy else None, "runs": runs}
    return out


def measure_feedback(args: argparse.Namespace, workdir: Path, shop: "Shop", base: dict[str, Any], mode: str, redis_url: str, repeats: int, say) -> dict[str, Any]:
    """The loop closed against the plain job: the shop with impressions (bench.feedback), a two-variant
    experiment and attribution on, against the plain shop with attribution off (interleaved replays);
    freshness at the low live rate both ways; Redis bytes per user (lists and profile) and of the metrics hashes."""
    import redis

    from bench.feedback import feedback_shop
    from state.keys import KeyKind, redis_key

    secret = "bench-rec-id-secret-0123"
    fed = feedback_shop(shop.events, [item.item_id for item in shop.catalog], secret, seed=args.seed)
    events_path, catalog_path = workdir / "feedback-events.jsonl", workdir / "feedback-catalog.jsonl"
    events_path.write_bytes(fed.events.to_jsonl())
    catalog_path.write_bytes(fed.control_line + shop.catalog_path.read_bytes())
    variants = {
        "off": {"attribution": False, "events_path": str(shop.events_path), "catalog_path": str(shop.catalog_path)},
        "on": {"attribution": True, "events_path": str(events_path), "catalog_path": str(catalog_path), "rec_id_secret": secret},
    }
    runs: dict[str, list] = {name: [] for name in variants}
    redis_bytes: dict[str, dict[str, float]] = {}
    for r in range(repeats):
        for name, extra in variants.items():
            _flush(redis_url)
            run = run_child({**base, **extra, "kind": "replay", "mode": mode, "redis_url": redis_url}, workdir, args.timeout_s)
            run["interactions_per_s"] = fed.interactions / run["measured_s"] if run["measured_s"] else None
            runs[name].append(run)
            say(f"  feedback {name} #{r + 1}: {run['interactions_per_s'] or 0:,.0f} shop events/s ({run['events']} rows incl. impressions), {run['cpu_us_per_event']:,.0f} CPU us/row")
            if name not in redis_bytes:
                client = redis.Redis.from_url(redis_url)
                metrics = sum(client.memory_usage(k) or 0 for k in client.scan_iter(match=redis_key(KeyKind.METRICS_MINUTE, "0")[:-1] + "*"))
                metrics += sum(client.memory_usage(k) or 0 for k in client.scan_iter(match=redis_key(KeyKind.METRICS_EXPERIMENT, "x")[:-1] + "*"))
                users = len(np.unique(shop.events.user))
                redis_bytes[name] = {"lists_and_profile_per_user": redis_bytes_per_user(redis_url), "metrics_hashes_bytes": metrics, "metrics_bytes_per_user": metrics / max(users, 1)}
                client.close()
    live: dict[str, Any] = {}
    for name, extra in variants.items():
        if "low" not in args.parts:
            break
        freshness = []
        for r in range(max(1, args.live_repeats or repeats)):
            _flush(redis_url)
            spec = {
                **base, **extra, "kind": "live", "mode": args.live_mode, "redis_url": redis_url, "window_ms": args.low_window_ms, "rate": args.low_rate,
                "seconds": args.low_seconds, "warmup_seconds": args.warmup_seconds, "out_of_orderness_ms": args.out_of_orderness_ms,
                "heartbeat_ms": args.heartbeat_ms, "send_interval_ms": args.send_interval_ms,
            }
            run = run_child(spec, workdir, args.timeout_s)
            freshness.append(run)
            f = run["freshness_ms"]
            say(f"  feedback {name} live {args.low_rate:,.0f}/s #{r + 1}: freshness p50 {f['p50']:.0f} p99 {f['p99']:.0f} ms")
        live[name] = {q: _median([x["freshness_ms"][q] for x in freshness]) for q in ("p50", "p95", "p99")}
    summary = {name: {"interactions_per_s": _median([x["interactions_per_s"] for x in rs]), "rows_per_s": _median([x["events_per_s"] for x in rs]), "cpu_us_per_row": _median([x["cpu_us_per_event"] for x in rs]), "freshness_1k_ms": live.get(name), "redis": redis_bytes.get(name)} for name, rs in runs.items()}
    off, on = summary["off"]["interactions_per_s"], summary["on"]["interactions_per_s"]
    return {
        **summary,
        "ratio_on_to_off": on / off if on and off else None,
        "impression_records": fed.impressions,
        "rows_per_interaction": len(fed.events) / max(fed.interactions, 1),
        "runs": runs,
    }


def redis_bytes_per_user(url: str, sample: int = 2000) -> float:
    """Mean ``MEMORY USAGE`` of a user's home list, cart list and profile keys over up to ``sample`` users."""
    import redis

    from state.keys import KeyKind, redis_key

    client = redis.Redis.from_url(url)
    try:
        prefix = redis_key(KeyKind.USER_RECS, "x")[:-1]
        users = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            users.append(key.decode()[len(prefix):])
            if len(users) >= sample:
                break
        if not users:
            return 0.0
        pipe = client.pipeline(transaction=False)
        for user in users:
            for kind in (KeyKind.USER_RECS, KeyKind.COMPLEMENTS, KeyKind.PROFILE):
                pipe.memory_usage(redis_key(kind, user))
        usage = pipe.execute()
        return sum(u or 0 for u in usage) / len(users)
    finally:
        client.close()


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    client.close()


def main(args: argparse.Namespace) -> int:
    if args.child is not None:
        return child_main(args.child)
    workdir = Path(tempfile.mkdtemp(prefix="flowrec-bench-stream-"))
    try:
        return _measure(args, workdir)
    finally:
        # The shop's files and every run's checkpoints: 140 MB for the default shop, GBs for a large one.
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(args: argparse.Namespace, workdir: Path) -> int:
    """Every part of the bench that ``args`` asks for, with its files in ``workdir``; prints the results."""
    from flowrec.localredis import LocalRedis
    from transforms.config import ModelConfig

    logging.getLogger("bench").setLevel(logging.INFO)
    repeats = max(1, args.repeats)
    live_repeats = max(1, args.live_repeats or repeats)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    shop = prepare_shop(args, workdir)
    config = ModelConfig() if args.window_ms is None else ModelConfig(window_ms=args.window_ms)
    say(f"shop: {len(shop.events)} events, {args.users} users, {args.items} items, event time compressed to {args.event_rate:,.0f} events/s")
    user_shards = args.user_shards or args.parallelism
    item_shards = args.item_shards or args.parallelism
    base = {"parallelism": args.parallelism, "chunk": args.chunk, "window_ms": config.window_ms, "user_shards": user_shards, "item_shards": item_shards, "attribution": args.attribution == "on", "state_backend": args.state_backend}
    result: dict[str, Any] = {"cpus": os.cpu_count(), "repeats": repeats, "live_repeats": live_repeats}
    peaks: list[int] = []
    with LocalRedis() as server:
        by_mode: dict[str, Any] = {}
        redis_per_user = None
        variants: list[tuple[str, dict[str, Any]]] = [("", {})]
        if args.embeddings is not None:
            w_embedding, w_sequence = (float(w) for w in args.embedding_weights.split(","))
            embedded = {"embeddings": str(args.embeddings.resolve()), "weight_embedding": w_embedding, "weight_sequence": w_sequence}
            # With the online item vectors (the default) and without them: their cost is the ratio of the two.
            variants.append(("+embeddings", {**embedded, "online_item_vectors": True}))
            variants.append(("+embeddings-static", {**embedded, "online_item_vectors": False}))
        for mode in args.modes if "replay" in args.parts else ():
            runs: dict[str, list] = {suffix: [] for suffix, _ in variants}
            for r in range(repeats):
                for suffix, extra in variants:  # interleaved, so load drifts hit both alike
                    _flush(server.url)
                    run = run_child({**base, **extra, "kind": "replay", "mode": mode, "redis_url": server.url, "events_path": str(shop.events_path), "catalog_path": str(shop.catalog_path)}, workdir, args.timeout_s)
                    say(f"  replay {mode}{suffix} #{r + 1}: {run['events_per_s']:,.0f} events/s, {run['cpu_us_per_event']:,.0f} CPU us/event ({run['events']} events, {run['user_lists']} lists, {run['measured_s']:.1f} s measured, {run['job_wall_s']:.1f} s job)")
                    if run.get("cpu_by_thread"):
                        say("    CPU s by thread: " + ", ".join(f"{name} {cpu:.1f}" for name, cpu in list(run["cpu_by_thread"].items())[:6]))
                    runs[suffix].append(run)
                    peaks.append(run["peak_rss_bytes"])
                    if redis_per_user is None:
                        redis_per_user = redis_bytes_per_user(server.url)
            for suffix, variant_runs in runs.items():
                by_mode[mode + suffix] = {
                    "events_per_s": _median([x["events_per_s"] for x in variant_runs]),
                    "cpu_us_per_event": _median([x["cpu_us_per_event"] for x in variant_runs]),
                    "peak_rss_mb": max(x["peak_rss_bytes"] for x in variant_runs) / 2**20,
                    "scorings_per_event": variant_runs[0]["user_lists"] / max(variant_runs[0]["events"], 1),
                    "runs": variant_runs,
                }
            if args.embeddings is not None:
                plain, embedded = by_mode[mode], by_mode[mode + "+embeddings"]
                embedded["ratio_to_plain"] = embedded["events_per_s"] / plain["events_per_s"] if plain["events_per_s"] and embedded["events_per_s"] else None
                embedded["extra_cpu_us_per_list"] = (embedded["cpu_us_per_event"] - plain["cpu_us_per_event"]) / max(embedded["scorings_per_event"], 1e-9)
                static = by_mode[mode + "+embeddings-static"]
                embedded["online_rate_ratio"] = embedded["events_per_s"] / static["events_per_s"] if static["events_per_s"] and embedded["events_per_s"] else None
                embedded["online_cpu_ratio"] = embedded["cpu_us_per_event"] / static["cpu_us_per_event"] if static["cpu_us_per_event"] else None
        main_mode = args.modes[0]
        naive_runs = []
        for r in range(repeats if "naive" in args.parts else 0):
            _flush(server.url)
            run = run_child({**base, "kind": "naive", "mode": main_mode, "redis_url": server.url, "events_path": str(shop.naive_path)}, workdir, args.timeout_s)
            say(f"  naive {main_mode} #{r + 1}: {run['events_per_s']:,.0f} events/s, {run['cpu_us_per_event']:,.0f} CPU us/event ({run['events']} events, {run['measured_s']:.1f} s measured)")
            naive_runs.append(run)
            peaks.append(run["peak_rss_bytes"])
        sparse = None
        if "sparse" in args.parts:
            sparse = measure_sparse(args, workdir, base, main_mode, server.url, repeats, say)
            peaks += [run["peak_rss_bytes"] for run in sparse["runs"]]
        feedback = None
        if "feedback" in args.parts:
            feedback = measure_feedback(args, workdir, shop, base, main_mode, server.url, repeats, say)
        clusters = None
        if "cluster" in args.parts:
            clusters = measure_clusters(args, workdir, shop, server.url, repeats, say)
        live: dict[str, Any] = {}
        for name, rate, seconds, window in (("high", args.high_rate, args.high_seconds, args.high_window_ms), ("low", args.low_rate, args.low_seconds, args.low_window_ms)):
            if name not in args.parts:
                live[name] = {"rate": rate, "window_ms": window, "freshness_ms": None, "processed_per_s": None, "runs": []}
                continue
            runs = []
            for r in range(live_repeats):
                _flush(server.url)
                spec = {
                    **base, "kind": "live", "mode": args.live_mode, "redis_url": server.url, "events_path": str(shop.events_path),
                    "window_ms": window, "rate": rate, "seconds": seconds, "warmup_seconds": args.warmup_seconds,
                    "out_of_orderness_ms": args.out_of_orderness_ms, "heartbeat_ms": args.heartbeat_ms, "send_interval_ms": args.send_interval_ms,
                }
                run = run_child(spec, workdir, args.timeout_s)
                f = run["freshness_ms"]
                say(f"  live {rate:,.0f}/s #{r + 1}: freshness p50 {f['p50']:.0f} p95 {f['p95']:.0f} p99 {f['p99']:.0f} ms over {run['lists']} lists; sent at {run['achieved_send_rate']:,.0f}/s, processed {run['processed_per_s']:,.0f}/s{'' if run['drained'] else ' (NOT drained)'}")
                runs.append(run)
                peaks.append(run["peak_rss_bytes"])
            live[name] = {
                "rate": rate,
                "window_ms": window,
                "freshness_ms": {q: _median([x["freshness_ms"][q] for x in runs]) for q in ("p50", "p95", "p99")},
                "processed_per_s": _median([x["processed_per_s"] for x in runs]),
                "achieved_send_rate": _median([x["achieved_send_rate"] for x in runs]),
                "runs": runs,
            }
    state = state_bytes_per_user(shop.events, shop.catalog, config)
    naive = _median([x["events_per_s"] for x in naive_runs])
    naive_cpu = _median([x["cpu_us_per_event"] for x in naive_runs])
    events_per_s = by_mode[main_mode]["events_per_s"] if main_mode in by_mode else None
    job_cpu = by_mode[main_mode]["cpu_us_per_event"] if main_mode in by_mode else None
    result.update(
        {
            "events_per_s": events_per_s,
            "mode": main_mode,
            "events_per_s_by_mode": {m: v["events_per_s"] for m, v in by_mode.items()},
            "naive_events_per_s": naive,
            "ratio_to_naive": events_per_s / naive if events_per_s and naive else None,
            # CPU time per event (whole process tree) is what other load on a shared machine disturbs least.
            "cpu_us_per_event": job_cpu,
            "naive_cpu_us_per_event": naive_cpu,
            "cpu_ratio_to_naive": naive_cpu / job_cpu if naive_cpu and job_cpu else None,
            "freshness_ms": live["high"]["freshness_ms"],
            "freshness_1k_ms": live["low"]["freshness_ms"],
            "peak_rss_mb": max(peaks) / 2**20 if peaks else None,
            "state_bytes_per_user": state["state_bytes_per_user"],
            "profile_bytes_per_user": state["profile_bytes_per_user"],
            "redis_bytes_per_user": redis_per_user,
            "scorings_per_event": by_mode[main_mode]["scorings_per_event"] if main_mode in by_mode else None,
            "shop": {"users": args.users, "items": args.items, "events": args.events, "seed": args.seed, "event_rate": args.event_rate, "users_in_state": state["users"]},
            "settings": {
                "parallelism": args.parallelism, "chunk": args.chunk, "user_shards": user_shards, "item_shards": item_shards, "window_ms": config.window_ms, "naive_events": args.naive_events,
                "state_backend": args.state_backend,
                "high": {"rate": args.high_rate, "seconds": args.high_seconds, "window_ms": args.high_window_ms},
                "low": {"rate": args.low_rate, "seconds": args.low_seconds, "window_ms": args.low_window_ms},
                "out_of_orderness_ms": args.out_of_orderness_ms, "heartbeat_ms": args.heartbeat_ms, "send_interval_ms": args.send_interval_ms, "live_mode": args.live_mode,
            },
            "sparse": None if sparse is None else {k: sparse[k] for k in ("events_per_s", "reference_events_per_s", "ratio_to_reference", "windows", "events")},
            "sparse_runs": [] if sparse is None else sparse["runs"],
            "feedback": None if feedback is None else {k: v for k, v in feedback.items() if k != "runs"},
            "feedback_runs": [] if feedback is None else feedback["runs"],
            "events_per_s_by_cluster": None if clusters is None else {name: v["events_per_s"] for name, v in clusters.items()},
            "clusters": clusters,
            "by_mode": by_mode,
            "naive_runs": naive_runs,
            "live": live,
        }
    )
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    print(f"flowrec stream benchmark, medians of {repeats} run(s) ({live_repeats} for freshness) on {os.cpu_count()} CPUs")
    for mode, v in by_mode.items():
        print(f"  whole job ({mode:7s})   {v['events_per_s']:12,.0f} events/s   {v['cpu_us_per_event']:8,.0f} CPU us/event   ({v['scorings_per_event']:.3f} user lists per event)")
        if "ratio_to_plain" in v:
            print(f"      with embeddings: {v['ratio_to_plain']:.2f}x the plain rate, {v['extra_cpu_us_per_list']:,.0f} CPU us more per user list")
            if v.get("online_rate_ratio"):
                print(f"      online item vectors on vs off: {v['online_rate_ratio']:.2f}x the rate, {v['online_cpu_ratio']:.2f}x the CPU per event")
    if naive is not None:
        ratio = f"ratio {result['ratio_to_naive']:.1f}x (CPU {result['cpu_ratio_to_naive']:.1f}x)" if result["ratio_to_naive"] else ""
        print(f"  naive design           {naive:12,.0f} events/s   {naive_cpu:8,.0f} CPU us/event   {ratio}")
    for name in ("high", "low"):
        v = live[name]
        f = v["freshness_ms"]
        if f is None:
            continue
        print(f"  freshness @ {v['rate']:>9,.0f}/s   p50 {f['p50']:8.0f}  p95 {f['p95']:8.0f}  p99 {f['p99']:8.0f} ms   (window {v['window_ms']} ms, processed {v['processed_per_s']:,.0f}/s)")
    if feedback:
        for name in ("off", "on"):
            v = feedback[name]
            f = v["freshness_1k_ms"]
            fresh = f"   freshness @1k p50 {f['p50']:.0f} p99 {f['p99']:.0f} ms" if f else ""
            print(f"  attribution {name:3s}        {v['interactions_per_s'] or 0:12,.0f} shop events/s   {v['cpu_us_per_row']:8,.0f} CPU us/row{fresh}")
        print(f"      on / off: {feedback['ratio_on_to_off'] or 0:.2f}x ({feedback['rows_per_interaction']:.1f} rows per shop event with impressions)")
    if clusters:
        for name, v in clusters.items():
            per_core = f"{v['events_per_s_per_busy_core']:,.0f} events/s per busy core" if v["events_per_s_per_busy_core"] else ""
            print(f"  cluster {name:4s}           {v['events_per_s'] or 0:12,.0f} events/s   {v['taskmanager_cores_busy'] or 0:.2f} TaskManager cores busy   {per_core}")
        rates = [v["events_per_s"] for v in clusters.values()]
        if len(rates) >= 2 and rates[0] and rates[-1]:
            print(f"      {list(clusters)[-1]} / {list(clusters)[0]}: {rates[-1] / rates[0]:.2f}x")
    if sparse is not None:
        print(f"  sparse history         {sparse['events_per_s'] or 0:12,.0f} events/s   reference engine {sparse['reference_events_per_s']:,.0f} events/s on the same events (ratio {sparse['ratio_to_reference'] or 0:.2f}, {sparse['windows']:,} windows)")
    if result["peak_rss_mb"] is not None:
        print(f"  peak RSS               {result['peak_rss_mb']:12,.0f} MB")
    print(f"  state per user         {state['state_bytes_per_user']:12,.0f} bytes   (encoded profile {state['profile_bytes_per_user']:,.0f})")
    print(f"  Redis per user         {redis_per_user or 0:12,.0f} bytes")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
