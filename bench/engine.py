"""`flowrec bench engine`: events/s and peak memory of the reference engine, with a same-run baseline.

Data sets: MovieLens 100K (:func:`transforms.datasets.load_movielens_100k`,
as loaded: catalog upserts at the release dates; skipped with a message when
absent) and a synthetic shop (:func:`transforms.synthetic.generate_shop`,
``--events`` events on its own 14-day timeline).  The shop's catalog takes
effect just before the first event (``--shop-catalog start``, a shop loading
its catalog once) or at each item's creation time (``created``): the engine
rebuilds the content index for every window holding catalog upserts, so
5,000 items with distinct creation times cost 5,000 index rebuilds, which
then dominate the run.

Modes, each timed on the whole data set (events already in memory as an
:class:`~transforms.events.EventBatch`; the catalog is part of the work):

``oracle``
    :func:`transforms.engine.replay`: window by window, model refreshed once
    per refresh slot, every user scored in its last active window — what the
    streaming job's final Redis content is checked against.
``training``
    ``ReferenceEngine(config, catalog, score_users=False)``, ``process`` then
    ``finish``: the offline fast path (one window, one refresh at the end).
``training_events``
    The same without the catalog (no content index, no category facts): the
    work the ``per_event`` baseline also does (profiles, co-occurrence,
    neighbours) plus trending, so ``training_events_vs_per_event`` is the
    like-for-like ratio.

Baselines, measured in the same run on the same events:

``per_event``
    The straightforward Python a developer would write for the same state:
    for each event, :func:`transforms.profile.apply_user_events` on that one
    event (same maths, so identical profiles), then the event's co-occurrence
    pairs and occurrence weights added to plain dicts; at the end each item's
    top neighbours by cosine ``c_ab / sqrt(n_a n_b)`` from its dict row.  The
    ratio ``training / per_event`` is what the engine's batching and
    vectorised item model buy over per-event code for the same work.
``parse``
    :func:`transforms.events.parse_json_lines` over the events as JSON lines:
    the cost of merely reading the events, a floor for any engine fed JSON.

Every number is the median over ``--repeats`` runs; ``peak_rss_mb`` is the
largest resident set size of this process seen during a mode's runs (sampled
every 50 ms), ``rss_growth_mb`` its growth over the size just before.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

log = logging.getLogger(__name__)

HELP = "events/s and peak memory of the reference engine (oracle replay and training) on ML-100K and a synthetic shop, with same-run baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", choices=("ml-100k", "shop"), default=["ml-100k", "shop"], help="data sets to run (default both)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events of the synthetic shop (default 1000000)")
    parser.add_argument("--users", type=int, default=20_000, help="shoppers of the synthetic shop (default 20000)")
    parser.add_argument("--items", type=int, default=5_000, help="items of the synthetic shop (default 5000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shop-catalog", choices=("start", "created"), default="start", help="when the shop's catalog takes effect (default start; see the module doc)")
    parser.add_argument("--modes", nargs="+", choices=("oracle", "training", "training_events"), default=["oracle", "training", "training_events"], help="engine modes (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; medians are reported (default 3)")
    parser.add_argument("--datasets-dir", type=Path, default=None, help="folder holding ml-100k/ (default: Settings.datasets_dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


class RssSampler(threading.Thread):
    """Peak resident set size of this process (Linux ``/proc/self/statm``) while running."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start_bytes = self.current()
        self.peak = self.start_bytes
        self._stop_event = threading.Event()

    def current(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self.current())
            self._stop_event.wait(self.interval_s)

    def stop(self) -> tuple[int, int]:
        """``(peak bytes, growth over the start)``."""
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, self.current())
        return self.peak, self.peak - self.start_bytes


def measure(run: Callable[[], Any], events: int, repeats: int) -> dict[str, Any]:
    """Median events/s of ``run()`` over ``repeats`` runs, and the peak memory seen."""
    rates, seconds, peaks, growths = [], [], [], []
    for _ in range(repeats):
        gc.collect()
        sampler = RssSampler()
        sampler.start()
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
        peak, growth = sampler.stop()
        del result
        seconds.append(elapsed)
        rates.append(events / elapsed if elapsed > 0 else float("inf"))
        peaks.append(peak)
        growths.append(growth)
    return {
        "events_per_s": statistics.median(rates),
        "seconds": statistics.median(seconds),
        "peak_rss_mb": max(peaks) / 2**20,
        "rss_growth_mb": max(growths) / 2**20,
        "each_run_s": seconds,
    }


# -- the modes ---------------------------------------------------------------------------------


def run_oracle(events, catalog, config):
    from transforms.engine import replay

    return replay(events, config, catalog)


def run_training(events, catalog, config):
    from transforms.engine import ReferenceEngine

    engine = ReferenceEngine(config, catalog, score_users=False)
    for start in range(0, len(events), 50_000):
        engine.process(events.take(slice(start, start + 50_000)))
    engine.finish()
    return engine


# -- the baselines ------------------------------------------------------------------------------


def per_event_baseline(events, config) -> dict[str, list[tuple[str, float]]]:
    """Straightforward per-event Python: profiles, dict co-occurrence, cosine top neighbours (see the module doc)."""
    from transforms.config import event_weights
    from transforms.profile import ItemContribution, apply_user_events

    events = events.sorted_by_time()
    weights = event_weights(events.etype, events.rating, config).tolist()
    profiles: dict = {}
    counts: dict[str, float] = {}
    rows: dict[str, dict[str, float]] = {}
    for user, item, code, ts, w in zip(events.user.tolist(), events.item.tolist(), events.etype.tolist(), events.ts.tolist(), weights):
        out = ItemContribution()
        profile = apply_user_events(profiles.get(user), [item], [code], [ts], [w], config, out)
        if profile is None:
            profiles.pop(user, None)
        else:
            profiles[user] = profile
        for i, iw in zip(out.items, out.item_weights):
            counts[i] = counts.get(i, 0.0) + iw
        for a, b, pw in zip(out.pair_a, out.pair_b, out.pair_weights):
            row = rows.setdefault(a, {})
            row[b] = row.get(b, 0.0) + pw
    neighbours = {}
    for a, row in rows.items():
        scored = [(b, c / (counts[a] * counts[b]) ** 0.5) for b, c in row.items() if c >= config.min_cooccurrence and counts.get(b, 0) > 0]
        scored.sort(key=lambda kv: (-kv[1], kv[0]))
        neighbours[a] = scored[: config.neighbours]
    return neighbours


def parse_baseline(lines: list[bytes]):
    from transforms.events import parse_json_lines

    return parse_json_lines(lines)


# -- data -----------------------------------------------------------------------------------------


def load_datasets(args: argparse.Namespace, say: Callable[..., None]) -> dict[str, tuple[Any, list]]:
    from transforms.datasets import DatasetMissing, dataset_path, load_movielens_100k
    from transforms.events import EventBatch
    from transforms.synthetic import generate_shop

    out: dict[str, tuple[Any, list]] = {}
    if "ml-100k" in args.datasets:
        if args.datasets_dir is not None:
            base = args.datasets_dir
        else:
            from flowrec.config import Settings

            base = Settings().datasets_dir
        try:
            out["ml-100k"] = load_movielens_100k(dataset_path(base, "ml-100k"))
        except DatasetMissing as exc:
            say(f"skipping ml-100k: {exc}")
    if "shop" in args.datasets:
        catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=args.seed)
        events = EventBatch.concat(list(stream))
        if args.shop_catalog == "start" and len(events):
            first = int(events.ts.min())
            catalog = [dataclasses.replace(item, ts=first - 1) for item in catalog]
        out["shop"] = (events, catalog)
    return out


def bench_dataset(name: str, events, catalog, args: argparse.Namespace, say: Callable[..., None]) -> dict[str, Any]:
    from transforms.config import ModelConfig
    from transforms.synthetic import events_to_jsonl

    config = ModelConfig()
    n = len(events)
    repeats = max(1, args.repeats)
    result: dict[str, Any] = {"events": n, "users": int(len(np.unique(events.user))), "items": len(catalog)}
    modes = {}
    for mode in args.modes:
        run = {"oracle": run_oracle, "training": run_training, "training_events": run_training}[mode]
        mode_catalog = [] if mode == "training_events" else catalog
        modes[mode] = measure(lambda: run(events, mode_catalog, config), n, repeats)
        say(f"  {name} {mode:15s} {modes[mode]['events_per_s']:12,.0f} events/s  ({modes[mode]['seconds']:.1f} s, peak RSS {modes[mode]['peak_rss_mb']:,.0f} MB)")
    result["modes"] = modes
    baselines = {"per_event": measure(lambda: per_event_baseline(events, config), n, repeats)}
    say(f"  {name} baseline per-event {baselines['per_event']['events_per_s']:12,.0f} events/s")
    lines = events_to_jsonl(events).splitlines()
    baselines["parse"] = measure(lambda: parse_baseline(lines), n, repeats)
    del lines
    say(f"  {name} baseline parse     {baselines['parse']['events_per_s']:12,.0f} events/s")
    result["baselines"] = baselines
    result["ratios"] = {
        f"{mode}_vs_{base}": modes[mode]["events_per_s"] / baselines[base]["events_per_s"] for mode in modes for base in baselines
    }
    return result


def main(args: argparse.Namespace) -> int:
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    datasets = load_datasets(args, say)
    results = {}
    for name, (events, catalog) in datasets.items():
        say(f"{name}: {len(events):,} events, {len(catalog):,} catalog items")
        results[name] = bench_dataset(name, events, catalog, args, say)
    out = {"cpus": os.cpu_count(), "repeats": max(1, args.repeats), "datasets": results}
    if args.json:
        print(orjson.dumps(out).decode())
        return 0
    print(f"reference engine, medians of {out['repeats']} run(s) on {out['cpus']} CPUs")
    for name, r in results.items():
        print(f"{name} ({r['events']:,} events, {r['users']:,} users, {r['items']:,} items)")
        for mode, m in r["modes"].items():
            print(f"  {mode:16s} {m['events_per_s']:12,.0f} events/s   {m['seconds']:8.2f} s   peak RSS {m['peak_rss_mb']:7,.0f} MB (+{m['rss_growth_mb']:,.0f})")
        for base, m in r["baselines"].items():
            print(f"  {base:16s} {m['events_per_s']:12,.0f} events/s   {m['seconds']:8.2f} s   (baseline)")
        for ratio, value in r["ratios"].items():
            print(f"  {ratio:34s} {value:8.2f}x")
    if not results:
        print("no data set available")
    return 0
