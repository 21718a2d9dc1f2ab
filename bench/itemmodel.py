"""`flowrec bench itemmodel`: per-window cost of the item-model operator, by state layout.

The item-model operator closes windows: it applies the window's deltas,
refreshes neighbour lists at refresh slots, and writes its state.  This
benchmark replays what the operator receives, outside Flink, on two shops:

* ``dense``: the `flowrec bench stream` shop (``--users/--items/--events``,
  time compressed to ``--event-rate`` events/s of event time), so each 200 ms
  window holds ``rate / 5`` events;
* ``sparse``: a `flowrec generate` shop at its own density (about one event
  per window).

Each window's deltas are computed as the user-state operator computes them
(:func:`transforms.profile.apply_window`, the user-state step, item occurrence
weights summed per window), before any timing.  Then each layout closes the
same windows with the same model maths, timed per phase (CPU time):

* ``rows`` (the layout before the columnar block): every touched item's count
  is a MapState put and every touched co-occurrence row is re-encoded
  (:func:`state.schemas.encode_row`) and put; the meta, with the dirty list,
  is rewritten once per timer pass;
* ``columnar`` (:class:`state.itemstate.ItemModelStore`): per timer pass the
  model's changes are one log entry and the meta one small value; the log is
  compacted into one columnar block when it outgrows it.

``--pass-windows`` windows are closed per timer pass.  State calls are counted
against dict-backed stand-ins for Flink's MapState and ValueState (each real
call crosses from Python to the JVM, so fewer is better, whatever they cost
here); bytes are the encoded sizes written and kept.  Numbers are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np
import orjson

from pipelines.messages import ItemDelta

HELP = "per-window cost of the item model operator's maths and state writes, old row layout vs columnar block + change log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--event-rate", type=float, default=100_000, help="event-time density of the dense shop, events/s (default 100000)")
    parser.add_argument("--sparse-users", type=int, default=1_000)
    parser.add_argument("--sparse-items", type=int, default=500)
    parser.add_argument("--sparse-events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shops", nargs="+", choices=("dense", "sparse"), default=["dense", "sparse"])
    parser.add_argument("--layouts", nargs="+", choices=("rows", "columnar"), default=["rows", "columnar"])
    parser.add_argument("--repeats", type=int, default=3, help="runs per layout, interleaved; medians are reported (default 3)")
    parser.add_argument("--pass-windows", type=int, default=1, help="windows closed per timer pass (the job closes every window up to the watermark in one pass; default 1, the worst case for per-pass writes)")
    parser.add_argument("--json", action="store_true")


# -- stand-ins for Flink state, counting calls ------------------------------------------------


class CountingMap:
    """A dict with MapState's methods; counts every call and the bytes put."""

    def __init__(self, stats: dict) -> None:
        self.data: dict = {}
        self.stats = stats

    def _count(self, name: str) -> None:
        self.stats["calls"] += 1
        self.stats[name] = self.stats.get(name, 0) + 1

    def put(self, key, value) -> None:
        self._count("put")
        self.stats["bytes"] += len(value) if isinstance(value, (bytes, str)) else 8
        self.data[key] = value

    def get(self, key):
        self._count("get")
        return self.data.get(key)

    def contains(self, key) -> bool:
        self._count("contains")
        return key in self.data

    def remove(self, key) -> None:
        self._count("remove")
        self.data.pop(key, None)

    def keys(self):
        self._count("keys")
        return list(self.data.keys())

    def items(self):
        self._count("items")
        return list(self.data.items())

    def values(self):
        self._count("values")
        return list(self.data.values())

    def is_empty(self) -> bool:
        self._count("is_empty")
        return not self.data

    def clear(self) -> None:
        self._count("clear")
        self.data.clear()


class CountingValue:
    """A ValueState stand-in; counts calls and bytes written."""

    def __init__(self, stats: dict) -> None:
        self.data = None
        self.stats = stats

    def value(self):
        self.stats["calls"] += 1
        return self.data

    def update(self, value) -> None:
        self.stats["calls"] += 1
        self.stats["bytes"] += len(value) if isinstance(value, (bytes, str)) else 8
        self.data = value

    def clear(self) -> None:
        self.stats["calls"] += 1
        self.data = None


# -- the windows the operators receive --------------------------------------------------------


def windows_of(events, config) -> list[ItemDelta]:
    """Per window, the item deltas the user-state operator sends (one item shard)."""
    from transforms.config import event_weights
    from transforms.cooccurrence import sum_by_key
    from transforms.events import split_feedback
    from transforms.profile import ItemContribution, apply_window
    from transforms.windows import WindowClock

    clock = WindowClock.of(config)
    events = split_feedback(events)[0].sorted_by_time()
    weights = event_weights(events.etype, events.rating, config)
    windows = clock.window_of(events.ts)
    bounds = np.flatnonzero(np.r_[True, windows[1:] != windows[:-1], True])
    profiles: dict = {}
    out = []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        part = events.take(slice(s, e))
        w = weights[s:e]
        c = ItemContribution()
        for user, profile, _ in apply_window(profiles.get, part.user, part.item, part.etype, part.ts, w, config, c):
            profiles[user] = profile
        counts = sum_by_key(c.items, c.item_weights)
        out.append(ItemDelta(int(windows[s]), 0, e - s, list(counts), list(counts.values()), c.pair_a, c.pair_b, c.pair_weights))
    return out


# -- layouts --------------------------------------------------------------------------------


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def time(self, phase: str, fn: Callable[[], Any]) -> Any:
        started = time.process_time()
        result = fn()
        self.phases[phase] = self.phases.get(phase, 0.0) + time.process_time() - started
        return result


def run_rows(windows: list[ItemDelta], config, pass_windows: int) -> dict:
    """The row layout ItemModelOperator kept before the columnar block: per pass, a put per touched count and row."""
    from state.schemas import encode_row, encode_scored
    from transforms.cooccurrence import ItemModel
    from transforms.windows import WindowClock

    clock = WindowClock.of(config)
    stats = {"calls": 0, "bytes": 0}
    rows, counts, meta_state = CountingMap(stats), CountingMap(stats), CountingValue(stats)
    model = ItemModel(config)
    timer = Timer()
    slot = None
    for start in range(0, len(windows), pass_windows):
        for w in windows[start : start + pass_windows]:
            end = clock.end(w.window)
            timer.time("apply", lambda: model.apply_window(w.items, w.item_weights, w.pair_a, w.pair_b, w.pair_weights))

            def write_rows() -> None:
                for item in set(w.items):
                    counts.put(item, model.count_of(item))
                ids = model.vocab.array()
                for item in set(w.pair_a):
                    codes, weights = model.rows[model.vocab.code[item]]
                    rows.put(item, encode_row(ids[codes].tolist(), weights.tolist()))

            timer.time("state", write_rows)
            if clock.refresh_slot(end) != slot:
                slot = clock.refresh_slot(end)
                changed = timer.time("refresh", model.refresh)
                timer.time("emit", lambda: [encode_scored(ids, sims) for ids, sims in changed.values()])
        timer.time("state", lambda: meta_state.update(orjson.dumps({"v": 1, "slot": slot, "end": end, "dirty": [model.vocab.ids[c] for c in sorted(model.dirty)]})))
    return {"phases": timer.phases, "state_calls": stats["calls"], "state_bytes_written": stats["bytes"], "state_bytes_kept": _kept(rows, counts, meta_state)}


def _kept(*states) -> int:
    total = 0
    for s in states:
        if isinstance(s, CountingMap):
            total += sum(len(str(k)) + (len(v) if isinstance(v, (bytes, str)) else 8) for k, v in s.data.items())
        elif s.data is not None:
            total += len(s.data)
    return total


def run_columnar(windows: list[ItemDelta], config, pass_windows: int) -> dict:
    """The columnar layout (:class:`state.itemstate.ItemModelStore`): per pass one log entry (or block) and the meta."""
    from state.itemstate import ItemModelStore
    from state.schemas import encode_scored
    from transforms.windows import WindowClock

    clock = WindowClock.of(config)
    stats = {"calls": 0, "bytes": 0}
    states = [CountingValue(stats), CountingMap(stats), CountingValue(stats)]
    store = ItemModelStore(config, *states)
    model, meta = store.load(owns=lambda item: True)
    timer = Timer()
    for start in range(0, len(windows), pass_windows):
        for w in windows[start : start + pass_windows]:
            end = clock.end(w.window)
            timer.time("apply", lambda: model.apply_window(w.items, w.item_weights, w.pair_a, w.pair_b, w.pair_weights))
            meta["end"] = end
            if clock.refresh_slot(end) != meta["slot"]:
                meta["slot"] = clock.refresh_slot(end)
                changed = timer.time("refresh", model.refresh)
                timer.time("emit", lambda: [encode_scored(ids, sims) for ids, sims in changed.values()])
        timer.time("state", lambda: store.save(model, meta))
    return {"phases": timer.phases, "state_calls": stats["calls"], "state_bytes_written": stats["bytes"], "state_bytes_kept": _kept(*states)}


LAYOUTS = {"rows": run_rows, "columnar": run_columnar}


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else 0.0


def measure(name: str, windows: list[ItemDelta], config, layouts: list[str], repeats: int, pass_windows: int = 1) -> dict:
    events = sum(w.events for w in windows)
    runs: dict[str, list[dict]] = {layout: [] for layout in layouts}
    for _ in range(repeats):
        for layout in layouts:  # interleaved
            runs[layout].append(LAYOUTS[layout](windows, config, pass_windows))
    out: dict[str, Any] = {"events": events, "windows": len(windows)}
    for layout, results in runs.items():
        phases = sorted({p for r in results for p in r["phases"]})
        med = {p: _median([r["phases"].get(p, 0.0) for r in results]) for p in phases}
        total = _median([sum(r["phases"].values()) for r in results])
        out[layout] = {
            "cpu_s": total,
            "us_per_event": 1e6 * total / max(events, 1),
            "us_per_window": 1e6 * total / max(len(windows), 1),
            "phase_us_per_window": {p: 1e6 * v / max(len(windows), 1) for p, v in med.items()},
            "state_calls_per_window": results[0]["state_calls"] / max(len(windows), 1),
            "state_bytes_written": results[0]["state_bytes_written"],
            "state_bytes_kept": results[0]["state_bytes_kept"],
        }
    if "rows" in out and "columnar" in out and out["columnar"]["cpu_s"]:
        out["speedup"] = out["rows"]["cpu_s"] / out["columnar"]["cpu_s"]
    return out


def main(args: argparse.Namespace) -> int:
    from bench.stream import compress_time
    from transforms.config import ModelConfig
    from transforms.events import EventBatch
    from transforms.synthetic import generate_shop

    config = ModelConfig()
    result: dict[str, Any] = {}
    if "dense" in args.shops:
        _, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=args.seed)
        events = compress_time(EventBatch.concat(list(stream)), args.event_rate)
        result["dense"] = measure("dense", windows_of(events, config), config, args.layouts, args.repeats, args.pass_windows)
    if "sparse" in args.shops:
        _, stream = generate_shop(users=args.sparse_users, items=args.sparse_items, events=args.sparse_events, seed=args.seed)
        result["sparse"] = measure("sparse", windows_of(EventBatch.concat(list(stream)), config), config, args.layouts, args.repeats, args.pass_windows)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    for shop, r in result.items():
        print(f"{shop}: {r['events']:,} events in {r['windows']:,} windows")
        for layout in args.layouts:
            m = r[layout]
            phases = ", ".join(f"{p} {v:,.0f}" for p, v in m["phase_us_per_window"].items())
            print(
                f"  {layout:9s} {m['us_per_event']:8.2f} us/event {m['us_per_window']:10,.0f} us/window  ({phases} us/window); "
                f"{m['state_calls_per_window']:,.1f} state calls/window, {m['state_bytes_written'] / 1e6:,.1f} MB written, {m['state_bytes_kept'] / 1e6:,.2f} MB kept"
            )
        if "speedup" in r:
            print(f"  rows / columnar CPU: {r['speedup']:.2f}x")
    return 0
