"""Cost of running an A/B experiment in the job's maths: a replay of a synthetic shop through the
reference engine without an experiment and with one of two variants, interleaved.

    python -m bench.experiment_cost [--users 2000] [--items 500] [--events 50000] [--runs 3] [--json]

The experiment (control: the job's configuration, treatment: another content
weight, 50/50) runs from the first event on, so every list is scored in two
batches per window instead of one (:func:`transforms.experiments.score_by_variant`).
Prints the medians of the replay's CPU time (process time: steadier than
wall time on a shared machine) and their ratio; the scorer is most of the
replay's time, so the ratio bounds the scorer's extra cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import orjson

from transforms.config import ModelConfig
from transforms.engine import replay
from transforms.events import EventBatch
from transforms.experiments import ExperimentStart, parse_experiment
from transforms.synthetic import generate_shop

EXPERIMENT = {"id": "bench", "variants": {"control": {"share": 0.5}, "treatment": {"share": 0.5, "config": {"weight_content": 0.6}}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiment_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    catalog, stream = generate_shop(users=args.users, items=args.items, events=args.events, seed=3)
    events = EventBatch.concat(list(stream))
    config = ModelConfig()
    controls = [ExperimentStart(parse_experiment(EXPERIMENT), int(events.ts.min()) - 1)]
    plain: list[float] = []
    with_experiment: list[float] = []
    for _ in range(args.runs):
        for times, given in ((plain, ()), (with_experiment, controls)):
            started = time.process_time()
            replay(events, config, catalog, experiments=given)
            times.append(time.process_time() - started)
    result = {
        "events": len(events),
        "replay_cpu_s_without": round(statistics.median(plain), 6),
        "replay_cpu_s_with_two_variants": round(statistics.median(with_experiment), 6),
        "ratio": round(statistics.median(with_experiment) / statistics.median(plain), 3),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        print(f"{result['events']} events: replay CPU {result['replay_cpu_s_without']} s without an experiment, "
              f"{result['replay_cpu_s_with_two_variants']} s with two variants (x{result['ratio']}, medians of {args.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
