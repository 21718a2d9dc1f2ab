"""Cost of learning the blend online (``blend_learning``), per event, in the reference engine.

    python -m bench.blend_cost [--users 300] [--items 200] [--events 20000] [--repeats 3] [--json]

Replays a seeded synthetic shop through :class:`transforms.engine.ReferenceEngine`
scoring every active user at every window close (what the job does), once
with the fixed blend and once with the learned one, interleaved, and prints
the median seconds and events/s of each and their ratio.  The engine runs the
scorer code the job runs (:func:`transforms.blend.score_and_learn`), without
the job's state encodings (a learner and a memo per listed user; see
``flowrec bench stream`` for the job itself).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import orjson

from transforms.config import ModelConfig
from transforms.engine import ReferenceEngine
from transforms.events import EventBatch
from transforms.synthetic import generate_shop


def replay_seconds(events: EventBatch, catalog: list, config: ModelConfig) -> float:
    """CPU seconds of this process for the replay: on a shared machine wall time measures the neighbours."""
    started = time.process_time()
    engine = ReferenceEngine(config, catalog, score_users=True)
    for start in range(0, len(events), 5000):
        engine.process(events.take(slice(start, start + 5000)))
    engine.finish()
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=7)
    events = EventBatch.concat(list(stream)).sorted_by_time()
    configs = {"fixed": ModelConfig(), "learned": ModelConfig(blend_learning=True)}
    runs: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, config in configs.items():
            runs[name].append(replay_seconds(events, catalog, config))
    result = {name: {"seconds": statistics.median(r), "events_per_s": len(events) / statistics.median(r)} for name, r in runs.items()}
    result["learned_over_fixed_time"] = result["learned"]["seconds"] / result["fixed"]["seconds"]
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        for name in configs:
            print(f"{name:8s} {result[name]['seconds']:.1f} CPU s  {result[name]['events_per_s']:.0f} events per CPU s")
        print(f"learned / fixed time: {result['learned_over_fixed_time']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
